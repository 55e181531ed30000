"""``trade-agent train list|info``, ``trade-agent models ...`` and ``trade-agent release``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.tree import Tree

from trade_agent import paths
from trade_agent.cli.data import ParamsOption
from trade_agent.cli.tables import AVAILABILITY_STYLE, make_console, model_table
from trade_agent.errors import IntegrityError, TradeAgentError

if TYPE_CHECKING:
    from trade_agent.registry import ModelRegistry

models_app = typer.Typer(no_args_is_help=True, help="Manage registered models.")
console = make_console()

RootOption = Annotated[Path, typer.Option("--registry", help="Registry root (models/registry.json lives here).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


AVAILABILITY_HINT = {
    "remote": " (not in this clone; a restore pulls them from the DVC remote)",
    "missing": " (not in this clone and no DVC remote: `make run` reproduces the committed models)",
}


WALKFORWARD_METRICS = Path("metrics/walkforward.json")


def _entries(root: Path) -> list[dict[str, Any]]:
    """The registry index's entries (for counting the configurations tried on a dataset)."""
    index = root / "registry.json"
    document = json.loads(index.read_text()) if index.is_file() else {}
    models = document.get("models", []) if isinstance(document, dict) else []
    return [m for m in models if isinstance(m, dict)]


@models_app.command("card")
def card(
    model_id: Annotated[str, typer.Argument(help="Model id or alias.")],
    params_file: ParamsOption = None,
    root: RootOption = paths.REGISTRY_ROOT,
) -> None:
    """Write the model's card (data, period, frequency, costs, walk-forward figures, DSR/PBO, lineage, limits)."""
    from trade_agent.registry.card import write_card
    from trade_agent.walkforward.gates import workspace_figures

    details = _registry(root).export_model_info(model_id)
    document, figures = workspace_figures(WALKFORWARD_METRICS, details, _entries(root))
    from trade_agent.config import load_params_or_defaults

    path = write_card(root, details, document, figures, load_params_or_defaults(params_file).release)
    console.print(f"wrote {path}")


def _registry(root: Path) -> ModelRegistry:
    from trade_agent.registry import ModelRegistry

    return ModelRegistry(root)


def _lineage_tree(node: dict[str, Any], tree: Tree | None = None) -> Tree:
    label = node["model_id"] + (" [red](missing)[/]" if node.get("missing") else "")
    branch = Tree(label) if tree is None else tree.add(label)
    for child in node.get("dependencies", []):
        _lineage_tree(child, branch)
    return branch


def list_models(
    model_type: Annotated[str | None, typer.Option(help="Only this model type.")] = None,
    grade: Annotated[str | None, typer.Option(help="Only models graded G or better (e.g. B+).")] = None,
    relative: Annotated[bool, typer.Option(help="Also show each model's percentile within its type.")] = False,
    archived: Annotated[bool, typer.Option(help="Include archived models.")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many rows.")] = None,
    root: RootOption = paths.REGISTRY_ROOT,
    as_json: JsonOption = False,
) -> None:
    """List registered models, newest version first."""
    from trade_agent.registry.registry import absent_summary

    registry = _registry(root)
    models = registry.list_models(model_type, grade, limit, include_archived=archived)
    availability = registry.availabilities([m.model_id for m in models])
    if as_json:
        rows = [m.__dict__ | {"availability": availability[m.model_id]} for m in models]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not models:
        console.print("no registered models match")
        return
    percentiles = {m.model_id: registry.percentile(m.model_id) for m in models} if relative else None
    table = model_table(models, f"{len(models)} registered models", percentiles, availability)
    console.print(table)
    absent = [m for m in models if availability[m.model_id] != "here"]
    if absent:
        files = sum(len(m.files) for m in absent)
        console.print(f"[yellow]{absent_summary(files, len(absent))}[/]")


def info(
    model_id: Annotated[str, typer.Argument(help="Id, unique prefix, or type@vX.Y.Z / @latest / @best.")],
    root: RootOption = paths.REGISTRY_ROOT,
    as_json: JsonOption = False,
) -> None:
    """All metadata of a model, its lineage tree and its integrity status."""
    from trade_agent.walkforward.gates import workspace_figures

    details = _registry(root).export_model_info(model_id)
    if as_json:
        _, figures = workspace_figures(WALKFORWARD_METRICS, details, _entries(root))
        shown = details | ({"walkforward": dataclasses.asdict(figures)} if figures is not None else {})
        typer.echo(json.dumps(shown, indent=2, default=str))
        return
    score = details["composite_score"]
    console.print(
        f"[bold]{details['model_id']}[/]  v{details['version']}  grade {details['performance_grade']} "
        f"(composite score {'n/a' if score is None else f'{score:.3f}'} of 1, "
        f"rank {details['rank'][0]} of {details['rank'][1]} {details['model_type']} models)"
    )
    where = details["availability"]
    console.print(f"  files: [{AVAILABILITY_STYLE[where]}]{where}[/]" + AVAILABILITY_HINT.get(where, ""))
    for key in ("created_at", "git_commit", "checksum", "model_size_mb", "training_duration", "source", "notes"):
        console.print(f"  {key}: {details.get(key)}")
    console.print("  metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(details["metrics"].items())))
    console.print(_lineage_tree(details["lineage"]))
    _, figures = workspace_figures(WALKFORWARD_METRICS, details, _entries(root))
    if figures is not None:
        console.print(f"  {figures.summary()}")
    integrity = details["integrity"]
    if integrity["ok"]:
        console.print("  integrity: [green]ok[/] (every file matches its sha256)")
    else:
        for problem in integrity["problems"]:
            console.print(f"  integrity: [red]{problem}[/]")
        raise typer.Exit(1)


@models_app.command("get")
def get(
    model_id: Annotated[str, typer.Argument(help="Model id or alias.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to restore the files into.")],
    root: RootOption = paths.REGISTRY_ROOT,
) -> None:
    """Restore a model's exact files (checksums verified), even after newer runs replaced them."""
    registry = _registry(root)
    model = registry.get_model(model_id)
    registry.restore(model.model_id, output)
    console.print(f"restored {model.model_id} ({len(model.files)} files) -> {output}")


@models_app.command("validate")
def validate(
    model_id: Annotated[str | None, typer.Argument(help="Model id (default: every model).")] = None,
    root: RootOption = paths.REGISTRY_ROOT,
) -> None:
    """Re-hash stored files against their checksums; exit 1 if any model is damaged."""
    registry = _registry(root)
    ids = (
        [registry.resolve_id(model_id)]
        if model_id
        else [m.model_id for m in registry.list_models(include_archived=True)]
    )
    bad = 0
    for current in ids:
        report = registry.validate_model_integrity(current)
        if report:
            console.print(f"[green]ok[/] {current}")
        else:
            bad += 1
            for problem in report.problems:
                console.print(f"[red]damaged[/] {problem}")
    if bad:
        raise IntegrityError(f"{bad} of {len(ids)} models failed validation; restore the files or re-register them")


@models_app.command("archive")
def archive(model_id: Annotated[str, typer.Argument()], root: RootOption = paths.REGISTRY_ROOT) -> None:
    """Move a model out of the active view (its files stay until `models gc`)."""
    console.print(f"archived {_registry(root).archive_model(model_id)}")


@models_app.command("delete")
def delete(
    model_id: Annotated[str, typer.Argument()],
    force: Annotated[bool, typer.Option(help="Delete even if other models depend on it.")] = False,
    root: RootOption = paths.REGISTRY_ROOT,
) -> None:
    """Delete a model (its version number is never reused)."""
    console.print(f"deleted {_registry(root).delete_model(model_id, force=force)}")


@models_app.command("lineage")
def lineage(
    model_id: Annotated[str, typer.Argument()], root: RootOption = paths.REGISTRY_ROOT, as_json: JsonOption = False
) -> None:
    """The model's upstream models, as a tree."""
    tree = _registry(root).get_model_dependencies(model_id)
    if as_json:
        typer.echo(json.dumps(tree, indent=2))
    else:
        console.print(_lineage_tree(tree))


@models_app.command("export")
def export(
    import_: Annotated[Path | None, typer.Option("--import", help="Merge another clone's registry.json first.")] = None,
    root: RootOption = paths.REGISTRY_ROOT,
) -> None:
    """Rewrite models/registry.json and the human-readable view from the store."""
    registry = _registry(root)
    if import_ is not None:
        for note in registry.import_export(import_):
            console.print(f"[yellow]{note}[/]")
    console.print(f"exported {len(registry.list_models(include_archived=True))} models -> {registry.export()}")


@models_app.command("recover")
def recover(root: RootOption = paths.REGISTRY_ROOT) -> None:
    """Rebuild the store's index from its records and models/registry.json (after a lost index.json)."""
    registry = _registry(root)
    report = registry.recovery or registry.recover()  # opening a store without an index recovers it
    for line in report.refused:
        console.print(f"[yellow]refused: {line}[/]")
    console.print(report.summary())


@models_app.command("gc")
def gc(root: RootOption = paths.REGISTRY_ROOT) -> None:
    """Free space: drop archived models' stored files, then `dvc gc --workspace --all-tags`.

    Every registered, non-archived version keeps its files (the registry holds its own
    copies, so DVC's garbage collection cannot remove them).
    """
    from trade_agent.registry.store import dvc_cache_dir

    freed = _registry(root).drop_archived_files()
    console.print(f"registry: freed {freed / 2**20:.2f} MiB of archived models' files")
    if dvc_cache_dir(Path.cwd()) is None:
        console.print("not inside a DVC repository: no DVC cache to collect")
        return
    # --all-tags keeps every released version fetchable with `dvc artifacts get`.
    result = subprocess.run(
        ["dvc", "gc", "--workspace", "--all-tags", "--force"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise TradeAgentError(f"dvc gc failed: {' '.join(result.stderr.split())}")
    console.print(" ".join(result.stdout.split()))


def release(
    model_id: Annotated[str, typer.Argument(help="Model id or alias to release.")],
    stage: Annotated[str | None, typer.Option(help="Also assign this stage (e.g. prod).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Assign prod despite failing walk-forward gates (recorded in the tag).")
    ] = False,
    params_file: ParamsOption = None,
    root: RootOption = paths.REGISTRY_ROOT,
) -> None:
    """Tag a model version in GTO's format on the commit whose dvc.lock holds it; --stage prod is gated
    by the walk-forward DSR, the paired difference against buy-and-hold and the PBO."""
    from trade_agent.config import load_params_or_defaults
    from trade_agent.registry.release import release as make_release

    registry = _registry(root)
    gates = load_params_or_defaults(params_file).release
    tags = make_release(Path.cwd(), registry, model_id, stage, force=force, gates=gates)
    registry.export()
    console.print(
        f"created {', '.join(tags) if tags else 'no new tags (already released)'}; push them with `git push --tags`"
    )
