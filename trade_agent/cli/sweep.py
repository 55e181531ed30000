"""``trade-agent sweep`` and ``trade-agent exp collect``: sweeps across clones and machines sharing
one Optuna study and one DVC remote (docs/scale-out.md). Parse and call :mod:`trade_agent.tuning.sweep`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from trade_agent import paths
from trade_agent.cli.tables import make_console

console = make_console()

StorageOption = Annotated[
    str,
    typer.Option("--storage", help="The shared study's storage: postgresql://user@host/db or journal:///nfs/x.log."),
]
StudyOption = Annotated[str, typer.Option("--study", help="Study name: the same on every worker.")]
ParamsOption = Annotated[
    Path | None, typer.Option("--params", help="params file (default: ./params.yaml, else built-in defaults).")
]
RegistryOption = Annotated[Path, typer.Option("--registry", help="Registry root.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _table(title: str, rows: list[dict], score: str) -> Table:
    table = Table(title=title)
    for column in ("rank", "trial", score, "model", "available"):
        table.add_column(column)
    for rank, row in enumerate(rows, 1):
        table.add_row(str(rank), str(row["trial"]), f"{row['value']:.4f}", row["model_id"], row["availability"])
    return table


def sweep(
    model_type: Annotated[str, typer.Argument(help="cnn_lstm, ppo, sac or td3.")],
    data: Annotated[str, typer.Argument(help="CSV/Parquet file, dataset dir, 'sample' or 'synthetic'.")],
    storage: StorageOption,
    study: StudyOption,
    n_trials: Annotated[int, typer.Option(min=1, help="Trials the study should hold, whoever runs them.")],
    cnn_lstm_model: Annotated[
        str, typer.Option(help="Agents: the upstream CNN-LSTM id, or 'new' (one per trial, deduplicated).")
    ] = "new",
    push: Annotated[bool, typer.Option("--push/--no-push", help="Push models and run-cache to the DVC remote.")] = True,
    params_file: ParamsOption = None,
    registry: RegistryOption = paths.REGISTRY_ROOT,
    as_json: JsonOption = False,
) -> None:
    """One worker of a sweep: claim trials from the shared study (never one another worker
    holds), train and register a model per trial, push it to the DVC remote."""
    from trade_agent.config import load_params_or_defaults
    from trade_agent.log import setup_logging
    from trade_agent.tuning.sweep import SweepSpec, run_sweep, score_key

    setup_logging()
    params = load_params_or_defaults(params_file)
    spec = SweepSpec(model_type, data, storage, study, n_trials, cnn_lstm_model, push)
    rows = [asdict(m) for m in run_sweep(spec, params, registry)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    console.print(_table(f"this worker's {len(rows)} trial(s) of study {study}", rows, score_key(model_type)))


def collect(
    storage: StorageOption,
    study: StudyOption,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Restore each model (pulling it) and check every sha256.")
    ] = True,
    params_file: ParamsOption = None,
    registry: RegistryOption = paths.REGISTRY_ROOT,
    as_json: JsonOption = False,
) -> None:
    """Every sweep model of the study into this clone's registry, ranked by the study's value."""
    from trade_agent.config import load_params_or_defaults
    from trade_agent.log import setup_logging
    from trade_agent.tuning.sweep import collect as collect_sweep

    setup_logging()
    rows = [asdict(m) for m in collect_sweep(storage, study, load_params_or_defaults(params_file), registry, verify)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    models = len({row["model_id"] for row in rows})
    console.print(_table(f"study {study}: {len(rows)} trial(s), {models} model(s), best first", rows, "value"))
