"""Fault injection for the recovery paths, driven by one environment variable.

``TRADE_AGENT_FAULTS`` holds comma-separated ``key=value`` rules (read once per process,
so launched ranks inherit them):

- ``oom_above=N``: every forward pass on more than N samples raises an out-of-memory error,
  as on a device with room for N samples. Drives ``batch_size: auto`` and OOM back-off.
- ``oom_at_step=K``: the first forward pass of optimizer step K (1-based, counted over the
  whole run) raises an out-of-memory error once.
- ``kill_after_epoch=E``: the process SIGKILLs itself once epoch E's checkpoint is complete
  (a crash no handler can intercept).
- ``kill_in_paper_bar=K``: ``trade-agent paper run`` SIGKILLs itself inside the transaction
  of the K-th bar it writes (1-based), after the bar's rows and before the commit.
- ``rank=R``: the training rules above apply to rank R only (default: every rank).

Example: ``TRADE_AGENT_FAULTS=rank=1,kill_after_epoch=2 trade-agent train cnn-lstm-enhanced
sample --distributed`` kills rank 1 after epoch 2; the launcher's retry resumes at epoch 3.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from functools import cache

import torch

from trade_agent.errors import ConfigError

log = logging.getLogger(__name__)

FAULTS_ENV = "TRADE_AGENT_FAULTS"
_KEYS = ("oom_above", "oom_at_step", "kill_after_epoch", "kill_in_paper_bar", "rank")


@dataclass(frozen=True)
class Faults:
    """The parsed rules (all ``None``: no faults)."""

    oom_above: int | None = None
    oom_at_step: int | None = None
    kill_after_epoch: int | None = None
    kill_in_paper_bar: int | None = None
    rank: int | None = None

    @classmethod
    def parse(cls, text: str) -> Faults:
        """Raises: ConfigError for an unknown key or a non-integer value."""
        values: dict[str, int] = {}
        for rule in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = rule.partition("=")
            if key not in _KEYS or not value.strip().lstrip("-").isdigit():
                raise ConfigError(
                    f"{FAULTS_ENV}: bad rule '{rule}'; use comma-separated key=integer with keys {', '.join(_KEYS)}"
                )
            values[key] = int(value)
        return cls(**values)

    def applies(self, rank: int) -> bool:
        return self.rank is None or self.rank == rank


@cache
def active_faults() -> Faults:
    return Faults.parse(os.environ.get(FAULTS_ENV, ""))


_fired_steps: set[int] = set()


def before_forward(rows: int, step: int, rank: int = 0) -> None:
    """Called before each training forward pass; raises the injected out-of-memory error."""
    faults = active_faults()
    if not faults.applies(rank):
        return
    if faults.oom_above is not None and rows > faults.oom_above:
        raise torch.OutOfMemoryError(
            f"out of memory (injected by {FAULTS_ENV}: forward on {rows} > {faults.oom_above} samples)"
        )
    if faults.oom_at_step == step and step not in _fired_steps:
        _fired_steps.add(step)
        raise torch.OutOfMemoryError(f"out of memory (injected by {FAULTS_ENV} at step {step})")


def after_checkpoint(epoch: int, rank: int = 0) -> None:
    """Called once epoch ``epoch``'s checkpoint is complete; SIGKILLs this process if asked."""
    faults = active_faults()
    if faults.applies(rank) and faults.kill_after_epoch == epoch:
        log.warning("%s: killing rank %d after epoch %d", FAULTS_ENV, rank, epoch)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def before_paper_commit(bar: int) -> None:
    """Called inside the transaction of the ``bar``-th bar (1-based) a paper run writes."""
    if active_faults().kill_in_paper_bar == bar:
        log.warning("%s: killing the paper run inside bar %d's transaction", FAULTS_ENV, bar)
        os.kill(os.getpid(), signal.SIGKILL)


def reload() -> None:
    """Re-read ``TRADE_AGENT_FAULTS`` (after changing it in a long-lived process)."""
    active_faults.cache_clear()
    _fired_steps.clear()
