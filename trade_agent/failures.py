"""One place that turns an error into one red line and an exit code.

``TradeAgentError`` subclasses carry their exit code (2 for bad input, 1 otherwise); any
other exception is a bug or an environment problem and exits 1. With ``--traceback`` (or
``TRADE_AGENT_TRACEBACK=1``) the stack is printed too, and the exit code stays the same.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import yaml
from rich.console import Console
from rich.markup import escape

from trade_agent.errors import TradeAgentError, TrainingInterrupted

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def one_line(message: str) -> str:
    """Collapse whitespace so third-party messages (YAML, pandas) stay on one line."""
    return " ".join(message.split())


def previous_outputs_hint(stage: str, lock_file: Path = Path("dvc.lock")) -> str | None:
    """The fix for a stage that failed under ``dvc repro``.

    DVC deletes a stage's outputs before it runs the command, so a failure leaves the user
    without them; when ``dvc.lock`` records outputs of ``stage``, they are still in the
    cache. (Checking them out from inside the stage would fight ``dvc repro`` for the
    repository lock, so the user is told instead.)
    """
    try:
        lock = yaml.safe_load(lock_file.read_text())
    except (OSError, yaml.YAMLError):
        return None
    stages = lock.get("stages") if isinstance(lock, dict) else None
    entry = stages.get(stage) if isinstance(stages, dict) else None
    if not isinstance(entry, dict) or not entry.get("outs"):
        return None
    return f"previous outputs are in the DVC cache: `dvc checkout {stage}`"


def report_error(error: BaseException) -> int:
    """Print ``error`` as one red line on stderr; return its exit code.

    Under ``dvc repro`` (``DVC_STAGE`` set) the line ends with how to get the stage's
    previous outputs back.
    """
    if isinstance(error, TradeAgentError):
        text, code = str(error), error.exit_code
    else:
        text, code = f"unexpected {type(error).__name__}: {error} (rerun with --traceback for details)", 1
    stage = os.environ.get("DVC_STAGE")
    hint = previous_outputs_hint(stage) if stage else None
    if hint:
        text = f"{text.rstrip('. ')}; {hint}"
    _stderr.print(f"[bold red]error:[/] [red]{escape(one_line(text))}[/]")
    return code


def traceback_requested() -> bool:
    return os.environ.get("TRADE_AGENT_TRACEBACK", "") not in ("", "0")


def exit_with(error: BaseException) -> NoReturn:
    """Report ``error`` (with the stack if requested) and exit with its code."""
    if traceback_requested():
        traceback.print_exception(error, file=sys.stderr)
    sys.exit(report_error(error))


def is_cli_control_flow(error: BaseException) -> bool:
    """Click/Typer exceptions (usage errors, --help, Exit) are handled by Typer itself."""
    return type(error).__module__.split(".")[0] in ("click", "typer")


def run_guarded(main: Callable[[], object]) -> None:
    """Run a stage script's ``main`` with the same error handling as the CLI."""
    if "--traceback" in sys.argv:
        sys.argv.remove("--traceback")
        os.environ["TRADE_AGENT_TRACEBACK"] = "1"
    try:
        main()
    except Exception as error:
        exit_with(error)
    except KeyboardInterrupt:
        exit_with(TrainingInterrupted("interrupted"))
