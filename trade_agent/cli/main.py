"""Entry point of the ``trade-agent`` command."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from trade_agent import __version__
from trade_agent.cli.acting import paper_app, predict, serve
from trade_agent.cli.backtest import backtest
from trade_agent.cli.data import data_app
from trade_agent.cli.exp import exp_app
from trade_agent.cli.models import models_app, release
from trade_agent.cli.sweep import sweep
from trade_agent.cli.train import train_app
from trade_agent.errors import TrainingInterrupted
from trade_agent.failures import exit_with, is_cli_control_flow


class _GuardedGroup(TyperGroup):
    """Root group: every error becomes one red line and its exit code (see failures.py)."""

    def invoke(self, ctx: Any) -> Any:  # typer vendors click: its Context type is private
        try:
            return super().invoke(ctx)
        except Exception as error:
            if is_cli_control_flow(error):
                raise
            exit_with(error)
        except KeyboardInterrupt:  # Ctrl-C outside a training loop (those say what resumes)
            exit_with(TrainingInterrupted("interrupted"))


app = typer.Typer(
    cls=_GuardedGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Reproducible, incremental training of hierarchical trading models.",
)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(models_app, name="models")
app.add_typer(exp_app, name="exp")
app.command("release")(release)
app.command("backtest")(backtest)
app.command("predict")(predict)
app.add_typer(paper_app, name="paper")
app.command("serve")(serve)
app.command("sweep")(sweep)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trade-agent {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    traceback: Annotated[bool, typer.Option("--traceback", help="Show the full stack on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """trade-agent: data -> CNN-LSTM -> RL agents -> hybrids -> ensembles, built by DVC."""
    if traceback:
        os.environ["TRADE_AGENT_TRACEBACK"] = "1"


def main() -> None:
    """Console-script entry; ``--traceback`` is accepted anywhere on the command line."""
    if "--traceback" in sys.argv[1:]:
        sys.argv.remove("--traceback")
        os.environ["TRADE_AGENT_TRACEBACK"] = "1"
    app(prog_name="trade-agent")
