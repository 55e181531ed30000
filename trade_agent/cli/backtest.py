"""``trade-agent backtest`` and ``trade-agent train benchmark``: registered models on market data."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from trade_agent.cli.tables import make_console
from trade_agent.errors import InputError

if TYPE_CHECKING:
    from trade_agent.data.frequency import BarFrequency

console = make_console()

DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="CSV/Parquet file, dataset dir, 'sample' or a prepared market.parquet "
        "(default: the pipeline's data/prepared/market.parquet, else 'sample').",
    ),
]
SplitOption = Annotated[str, typer.Option(help="train, val or test (chronological, with embargo).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]
ParamsOption = Annotated[
    Path | None, typer.Option("--params", help="params file (default: ./params.yaml, else built-in defaults).")
]
WorkDirOption = Annotated[Path, typer.Option(help="Restored models and derived data are cached here.")]

COLUMNS = ("sharpe", "sharpe_ci_low", "sharpe_ci_high", "total_return", "cagr", "max_drawdown", "sortino", "turnover")


def evaluate_ids(
    model_ids: list[str], data: str | None, split: str, params_file: Path | None, work_dir: Path
) -> tuple[list[dict[str, Any]], "BarFrequency"]:
    """Metrics of each model (and the baselines) on the same data and split, and the data's bar frequency."""
    from trade_agent.config import load_params_or_defaults
    from trade_agent.registry import ModelRegistry

    params = load_params_or_defaults(params_file)
    registry = ModelRegistry("models", grading=params.grading)
    for model in model_ids:
        registry.resolve_id(model)  # a bad id fails before any data work, and before torch loads
    from trade_agent.data.ingest import prepared_market
    from trade_agent.evaluation.inference import evaluate_registered

    market = prepared_market(data, params, work_dir)
    return evaluate_registered(registry, params, market, work_dir, model_ids, split)


def print_rows(rows: list[dict[str, Any]], title: str, as_json: bool, frequency: "BarFrequency") -> None:
    """The ranked table and, under it, how the metrics are annualised (``--json``: the rows,
    each with its ``periods_per_year``)."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=title)
    table.add_column("rank", justify="right")
    table.add_column("model")
    table.add_column("type")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for rank, row in enumerate(rows, 1):
        table.add_row(str(rank), row["model"], row["type"], *(f"{row.get(c, float('nan')):.3f}" for c in COLUMNS))
    console.print(table)
    console.print(f"Sharpe, Sortino, volatility and CAGR are {frequency.note()}.")


def backtest(
    model: Annotated[str, typer.Option("--model", help="Registered model id (prefix, @latest/@best accepted).")],
    data: DataOption = None,
    split: SplitOption = "test",
    params_file: ParamsOption = None,
    work_dir: WorkDirOption = Path("models/runs/backtest"),
    as_json: JsonOption = False,
) -> None:
    """Backtest one registered model (any type) on market data with its own saved preprocessor:
    t+1 fills, costs and slippage, the metrics suite beside buy-and-hold and equal weight."""
    from trade_agent.log import setup_logging

    setup_logging()
    rows, frequency = evaluate_ids([model], data, split, params_file, work_dir)
    title = f"backtest on the {split} split (after costs; Sharpe 95% block-bootstrap interval)"
    print_rows(rows, title, as_json, frequency)


def benchmark(
    data: Annotated[str, typer.Argument(help="CSV/Parquet file, dataset dir, 'sample' or a market.parquet.")],
    models: Annotated[str, typer.Option("--models", help="Comma-separated registered model ids.")],
    split: SplitOption = "test",
    params_file: ParamsOption = None,
    work_dir: WorkDirOption = Path("models/runs/benchmark"),
    as_json: JsonOption = False,
) -> None:
    """Evaluate several registered models on the same data and print them ranked by Sharpe."""
    from trade_agent.log import setup_logging

    setup_logging()
    ids = [m.strip() for m in models.split(",") if m.strip()]
    if not ids:
        raise InputError("--models: give at least one model id, comma-separated")
    rows, frequency = evaluate_ids(ids, data, split, params_file, work_dir)
    print_rows(rows, f"{len(ids)} models on the {split} split, ranked by Sharpe after costs", as_json, frequency)
