"""Logging to the console (rich, stderr) and to ``logs/training.log``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

LOG_FILE = Path("logs/training.log")


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test runners and notebooks swap it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass  # always the current sys.stderr


def setup_logging(level: int = logging.INFO, log_file: Path | None = LOG_FILE) -> None:
    """Configure the ``trade_agent`` logger once per process (idempotent)."""
    logger = logging.getLogger("trade_agent")
    if getattr(logger, "_trade_agent_configured", False):
        return
    logger.setLevel(logging.DEBUG)  # the file gets debug details, the console `level`
    console: logging.Handler
    if sys.stderr.isatty():
        console = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        console.setFormatter(logging.Formatter("%(message)s"))
    else:  # CI logs and pipes: plain lines, no wrapping at 80 columns
        console = _CurrentStderrHandler()
        console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    console.setLevel(level)
    logger.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    logger.propagate = False
    logger._trade_agent_configured = True  # type: ignore[attr-defined]
