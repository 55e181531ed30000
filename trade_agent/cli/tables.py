"""Rich tables shared by the CLI commands."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from trade_agent.registry import ModelMetadata


def make_console() -> Console:
    """Console for tables: terminal width on a TTY, wide (ids unbroken) in pipes and logs."""
    return Console(width=None if sys.stdout.isatty() else 200)


KEY_METRICS = ("accuracy", "loss", "sharpe", "roi_pct", "ic")


def key_metrics(model: ModelMetadata, limit: int = 3) -> str:
    shown = []
    for name in KEY_METRICS:
        value = model.metrics.get(f"test/{name}", model.metrics.get(name))
        if value is not None:
            shown.append(f"{name}: {value:.3f}")
    return ", ".join(shown[:limit])


AVAILABILITY_STYLE = {"here": "green", "remote": "yellow", "missing": "red"}


def model_table(
    models: list[ModelMetadata],
    title: str = "Models",
    percentiles: dict[str, float] | None = None,
    availability: dict[str, str] | None = None,
) -> Table:
    """Index, id, version, grade, created, key metrics (the seed's listing), and where the
    files are: here, fetchable from the DVC remote, or missing."""
    table = Table(title=title)
    table.add_column("Index", justify="right")
    table.add_column("Model ID", overflow="fold", min_width=20)  # ids are never cut off
    for column in ("Version", "Grade", "Created", "Key Metrics"):
        table.add_column(column)
    if percentiles is not None:
        table.add_column("Percentile", justify="right")
    if availability is not None:
        table.add_column("Files")
    for i, model in enumerate(models, 1):
        row = [
            str(i),
            model.model_id,
            f"v{model.version}",
            model.performance_grade,
            model.created_at[:10],
            key_metrics(model),
        ]
        if percentiles is not None:
            row.append(f"{percentiles[model.model_id]:.0f}")
        if availability is not None:
            where = availability[model.model_id]
            row.append(f"[{AVAILABILITY_STYLE[where]}]{where}[/]")
        table.add_row(*row)
    return table
