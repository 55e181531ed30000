"""Progress of long work, for a person at a terminal and for logs.

One :class:`Progress` per task (CNN-LSTM batches over all epochs, RL timesteps, Optuna
trials, ensemble members). On a terminal it draws a rich progress bar; otherwise (CI, pipes,
``dvc repro``/``dvc exp run``, which stream a stage's output) it logs a plain line at most
every ``interval`` seconds and one when the task ends, so ``logs/training.log`` records
them too. A callback (``TrainingConfig.progress`` in the Python API) receives every update
as a :class:`ProgressEvent`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any

log = logging.getLogger("trade_agent.progress")

DEFAULT_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ProgressEvent:
    """One update: ``done`` of ``total`` ``unit`` of ``task``; ``detail`` e.g. "epoch 3/20"."""

    task: str
    done: int
    total: int
    unit: str
    detail: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def line(self) -> str:
        detail = f", {self.detail}" if self.detail else ""
        return f"{self.task}: {100 * self.fraction:.0f}% ({self.done}/{self.total} {self.unit}{detail})"


ProgressCallback = Callable[[ProgressEvent], None]
_callback: ContextVar[ProgressCallback | None] = ContextVar("trade_agent_progress_callback", default=None)


@contextlib.contextmanager
def reporting_to(callback: ProgressCallback | None) -> Iterator[None]:
    """Send every progress update made inside the block to ``callback`` too."""
    token = _callback.set(callback)
    try:
        yield
    finally:
        _callback.reset(token)


def _on_terminal() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


class Progress:
    """Progress of one task (use as a context manager; see the module docstring)."""

    def __init__(self, task: str, total: int, unit: str, done: int = 0, interval: float | None = None) -> None:
        self.task, self.total, self.unit = task, max(int(total), 0), unit
        self.done, self.detail = int(done), ""
        self.interval = (
            float(os.environ.get("TRADE_AGENT_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)) if interval is None else interval
        )
        self._callback = _callback.get()
        self._last_line = time.monotonic()
        self._bar: Any = None
        self._bar_task: Any = None
        if _on_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
                transient=True,
            )
            self._bar.start()
            self._bar_task = self._bar.add_task(task, total=self.total, completed=self.done, detail="")

    def event(self) -> ProgressEvent:
        return ProgressEvent(self.task, self.done, self.total, self.unit, self.detail)

    def update(self, done: int, detail: str | None = None) -> None:
        """``done`` units so far (absolute, not an increment)."""
        self.done = min(int(done), self.total) if self.total else int(done)
        if detail is not None:
            self.detail = detail
        if self._callback is not None:
            self._callback(self.event())
        if self._bar is not None:
            self._bar.update(self._bar_task, completed=self.done, detail=self.detail)
        elif time.monotonic() - self._last_line >= self.interval:
            self._last_line = time.monotonic()
            log.info("%s", self.event().line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        log.info("%s", self.event().line())  # the file log always gets the final state

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
