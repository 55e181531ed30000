"""``trade-agent exp compare``: experiments ranked by the grade of the models they produced."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from trade_agent import paths
from trade_agent.cli.sweep import collect
from trade_agent.cli.tables import make_console

exp_app = typer.Typer(no_args_is_help=True, help="DVC experiments run by this project (`dvc exp show` has the rest).")
console = make_console()


def compare(
    model_type: Annotated[str | None, typer.Option(help="Only this model type (cnn_lstm, ppo, ...).")] = None,
    root: Annotated[Path, typer.Option("--registry", help="Registry root.")] = paths.REGISTRY_ROOT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Rank every experiment-produced model (CLI runs and queued sweeps) by composite score."""
    from trade_agent.registry import ModelRegistry

    rows: list[dict[str, Any]] = []
    for model in ModelRegistry(root).list_models(model_type):
        tags = dict(tag.split(":", 1) for tag in model.tags if ":" in tag)
        if "experiment" not in tags:
            continue
        split = "test"
        key = next((k for k in ("sharpe", "accuracy", "roi_pct") if f"{split}/{k}" in model.metrics), None)
        rows.append(
            {
                "experiment": tags["experiment"],
                "baseline": tags.get("baseline", "")[:7],
                "model_id": model.model_id,
                "model_type": model.model_type,
                "grade": model.performance_grade,
                "score": model.composite_score,
                "key_metric": key,
                "value": model.metrics.get(f"{split}/{key}") if key else None,
            }
        )
    rows.sort(key=lambda r: -(r["score"] if r["score"] is not None else -1.0))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} experiment models, best first")
    for column in ("rank", "experiment", "baseline", "model", "grade", "score", "test metric"):
        table.add_column(column)
    for rank, r in enumerate(rows, 1):
        metric = f"{r['key_metric']} {r['value']:.3f}" if r["key_metric"] else "-"
        score = f"{r['score']:.3f}" if r["score"] is not None else "-"
        table.add_row(str(rank), r["experiment"], r["baseline"], r["model_id"], r["grade"], score, metric)
    console.print(table)


exp_app.command("compare")(compare)
exp_app.command("collect")(collect)
