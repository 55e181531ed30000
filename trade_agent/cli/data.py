"""``trade-agent data ...``: prepare and validate market data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trade_agent.config import load_params_or_defaults
from trade_agent.errors import InputError
from trade_agent.log import setup_logging

data_app = typer.Typer(no_args_is_help=True, help="Prepare and validate market data.")
console = Console()

ParamsOption = Annotated[
    Path | None, typer.Option("--params", "-p", help="params file (default: ./params.yaml, else built-in defaults).")
]


@data_app.command("pipeline")
def pipeline(
    run: Annotated[
        bool,
        typer.Option(
            "--run", "-r", help="Ingest + features into data/, and export the prepared dataset to data/dataset_<name>/."
        ),
    ] = False,
    validate: Annotated[
        Path | None,
        typer.Option("--validate", help="Validate FILE against the configured pipeline and print a summary."),
    ] = None,
    params_file: ParamsOption = None,
    name: Annotated[str, typer.Option(help="Dataset name (default: the data source).")] = "",
    fmt: Annotated[str, typer.Option("--format", help="Export format: csv or parquet.")] = "csv",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Run the data pipeline (-r) or validate a data file (--validate FILE)."""
    if run == (validate is not None):
        raise InputError("give exactly one of --run/-r or --validate FILE")
    if fmt not in ("csv", "parquet"):
        raise InputError(f"--format {fmt!r} is not supported; use csv or parquet")
    from trade_agent.data.ingest import load_file, select_and_align
    from trade_agent.features.build import check_enough_bars, minimum_bars

    params = load_params_or_defaults(params_file)
    if validate is not None:
        frame, report = select_and_align(*load_file(validate, params.data), params.data, params.splits.train)
        check_enough_bars(frame, params, str(validate))
        frequency = report.frequency
        summary = {
            "file": str(validate),
            "rows": report.validation.rows,
            "symbols": report.validation.symbols,
            "start": report.validation.start,
            "end": report.validation.end,
            "repaired_values": report.validation.repaired_values,
            "adjusted_with_adj_close": report.validation.adjusted_with_adj_close,
            "timestamps": report.validation.timestamp_layout,
            "bar_interval": frequency["bar_interval"],
            "calendar": frequency["calendar"],
            "periods_per_year": round(frequency["periods_per_year"], 1),
            "periods_per_year_source": frequency["periods_per_year_source"],
            "session_breaks": frequency["session_breaks"],
            "missing_bars": frequency["missing_bars"],
            "minimum_bars_per_symbol": minimum_bars(params),
        }
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        table = Table(title=f"{validate}: valid", show_header=False)
        for key, value in summary.items():
            table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
        console.print(table)
        return
    from trade_agent.training.data_pipeline import run_data_pipeline  # loads the API only when it runs

    setup_logging()
    exported = run_data_pipeline(params, custom_params=params_file is not None, name=name, fmt=fmt)
    validation = exported.provenance["validation"]
    if as_json:
        typer.echo(json.dumps({"dataset": str(exported.path), "rows": exported.rows}))
    else:
        console.print(
            f"prepared {exported.rows} rows of {', '.join(validation['symbols'])} "
            f"({validation['start'][:10]}..{validation['end'][:10]}, "
            f"{sum(validation['repaired_values'].values())} values repaired) -> {exported.path}"
        )
