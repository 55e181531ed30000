"""``trade-agent backtest`` and ``trade-agent train benchmark``: registered models on market data."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from trade_agent.cli.tables import make_console
from trade_agent.errors import InputError

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


def prepared_market(data: str | None, params: Any, work_dir: Path) -> Path:
    """A prepared ``market.parquet`` for DATA (validated and aligned like the prepare stage)."""
    from trade_agent.data.ingest import prepare
    from trade_agent.training.unified_manager import resolve_data

    if data is None:
        default = Path("data/prepared/market.parquet")
        if default.is_file():
            return default
        data = "sample"
    if data.endswith("market.parquet") and Path(data).is_file():
        return Path(data)
    source = resolve_data(data)
    out = work_dir / "prepared"
    prepare(replace(params.data, source=source.source, path=source.path), out, params.base.seed)
    return out / "market.parquet"


def evaluate_ids(
    model_ids: list[str], data: str | None, split: str, params_file: Path | None, work_dir: Path
) -> list[dict[str, Any]]:
    """Metrics of each model (and the baselines) on the same data and split."""
    from trade_agent.config import load_params_or_defaults
    from trade_agent.evaluation.inference import Inference, Positions
    from trade_agent.io import read_json
    from trade_agent.market.backtest import buy_and_hold_weights, equal_weight_weights
    from trade_agent.market.bootstrap import sharpe_interval
    from trade_agent.registry import ModelRegistry

    if split not in ("train", "val", "test"):
        raise InputError(f"--split {split}: use train, val or test")
    params = load_params_or_defaults(params_file)
    registry = ModelRegistry("models", grading=params.grading)
    ids = [registry.resolve_id(m) for m in model_ids]  # fail fast on a bad id, before any work
    inference = Inference(registry, params, prepared_market(data, params, work_dir), work_dir)
    rows: list[dict[str, Any]] = []

    def add(name: str, kind: str, positions: Positions) -> None:
        result = inference.backtest(positions)
        low, high = sharpe_interval(
            result.returns, samples=params.evaluate.bootstrap_samples, block_length=params.evaluate.block_length
        )
        costs = {
            f"sharpe_at_{c:g}bps": inference.backtest(positions, c).metrics["sharpe"]
            for c in params.evaluate.cost_sensitivity_bps
        }
        rows.append(
            {"model": name, "type": kind, **result.metrics, "sharpe_ci_low": low, "sharpe_ci_high": high, **costs}
        )

    positions = [inference.positions(m, split) for m in ids]
    for p in positions:
        add(p.model_id, p.model_type, p)
        if p.model_type == "ensemble":  # its best single member (by validation Sharpe) as a baseline
            members = read_json(inference.restore(p.model_id) / "ensemble.json")["members"]
            best = max(members, key=lambda m: m["val_sharpe"])["model_id"]
            add(f"best member of {p.model_id}: {best}", "baseline", inference.positions(best, split))
    first = positions[0]
    k = len(first.weights)
    add("buy_and_hold", "baseline", _with(first, buy_and_hold_weights(first.open, 0, k)))
    add("equal_weight", "baseline", _with(first, equal_weight_weights(first.open.shape[1], k)))
    return sorted(rows, key=lambda r: -r["sharpe"])


def _with(positions: Any, weights: Any) -> Any:
    return replace(positions, weights=weights)


def print_rows(rows: list[dict[str, Any]], title: str, as_json: bool) -> None:
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
    rows = evaluate_ids([model], data, split, params_file, work_dir)
    print_rows(rows, f"backtest on the {split} split (after costs; Sharpe 95% block-bootstrap interval)", as_json)


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
    rows = evaluate_ids(ids, data, split, params_file, work_dir)
    print_rows(rows, f"{len(ids)} models on the {split} split, ranked by Sharpe after costs", as_json)
