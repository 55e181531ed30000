"""One place that turns a :class:`TradeAgentError` into one red line and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from trade_agent.errors import TradeAgentError

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def report_error(error: TradeAgentError) -> int:
    """Print ``error`` as one red line on stderr; return its exit code."""
    _stderr.print(f"[bold red]error:[/] [red]{escape(str(error))}[/]")
    return error.exit_code


def traceback_requested() -> bool:
    return os.environ.get("TRADE_AGENT_TRACEBACK", "") not in ("", "0")


def run_guarded(main: Callable[[], object]) -> None:
    """Run a stage script's ``main``; exit with one-line errors (stack with --traceback)."""
    if "--traceback" in sys.argv:
        sys.argv.remove("--traceback")
        os.environ["TRADE_AGENT_TRACEBACK"] = "1"
    try:
        main()
    except TradeAgentError as error:
        if traceback_requested():
            raise
        sys.exit(report_error(error))
