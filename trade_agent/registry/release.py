"""Git-tagged releases in GTO's format.

``cnn_lstm@v1.2.0`` (annotated) marks the commit whose ``dvc.lock`` holds exactly that
model's files; ``cnn_lstm#prod#N`` assigns a stage. ``gto show`` lists both and
``dvc artifacts get`` fetches the files (``dvc.yaml`` declares the artifacts).
Assigning ``prod`` is gated by the walk-forward statistics of the released commit
(:mod:`trade_agent.walkforward.gates`); ``force`` overrides and the tag message says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from trade_agent.config.walkforward import ReleaseConfig
from trade_agent.errors import DataSourceError, InputError, TradeAgentError
from trade_agent.registry.registry import RUN_SPECIFIC, ModelRegistry
from trade_agent.registry.store import dvc_cache_dir
from trade_agent.walkforward.gates import GateFigures, gate_figures

GATED_STAGE = "prod"
WALKFORWARD_METRICS = "metrics/walkforward.json"


class ReleaseError(InputError):
    """No commit holds the model, or the tag exists already."""


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TradeAgentError(f"git {' '.join(args)} failed: {' '.join(result.stderr.split())}")
    return result.stdout


def artifact_path(repo: Path, model_type: str) -> str:
    """The path ``dvc.yaml`` declares for ``model_type`` under ``artifacts:``."""
    declared = (yaml.safe_load((repo / "dvc.yaml").read_text()) or {}).get("artifacts", {})
    if model_type not in declared:
        raise ReleaseError(f"dvc.yaml declares no artifact '{model_type}'; add it under 'artifacts:'")
    return str(declared[model_type]["path"])


def _dir_manifest(cache_dir: Path, md5: str) -> dict[str, str]:
    manifest = cache_dir / "files" / "md5" / md5[:2] / md5[2:]
    if not manifest.is_file():
        return {}
    return {item["relpath"]: item["md5"] for item in json.loads(manifest.read_text())}


def _exports(repo: Path, commit: str, registry: ModelRegistry, checksum: str) -> bool:
    """Does the commit's ``registry.json`` list the model (so the tag carries its entry)?"""
    try:
        relative = registry.export_path.resolve().relative_to(repo.resolve()).as_posix()
        document = json.loads(_git(repo, "show", f"{commit}:{relative}"))
    except (TradeAgentError, ValueError):
        return False
    return any(m.get("checksum") == checksum for m in document.get("models", []))


def dir_md5(files: dict[str, dict[str, Any]]) -> str:
    """The md5 DVC records in dvc.lock for a directory holding exactly ``files`` (its
    ``.dir`` manifest: ``[{"md5", "relpath"}]`` sorted by path, as JSON), so a commit can be
    matched without the manifest in a local cache (a fresh clone has none)."""
    manifest = sorted(({"md5": info["md5"], "relpath": rel} for rel, info in files.items()), key=lambda d: d["relpath"])
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode(), usedforsecurity=False).hexdigest() + ".dir"


def find_commit(repo: Path, registry: ModelRegistry, entry: dict[str, Any]) -> str | None:
    """Newest commit whose ``dvc.lock`` output for the artifact has exactly the model's files
    and whose ``registry.json`` lists the model."""
    path = artifact_path(repo, entry["model_type"])
    wanted = {rel: info["md5"] for rel, info in entry["files"].items() if rel not in RUN_SPECIFIC}
    exact = dir_md5(entry["files"])
    cache_dir = dvc_cache_dir(repo) or repo / ".dvc" / "cache"
    for commit in _git(repo, "log", "--format=%H", "--", "dvc.lock").split():
        try:
            lock = yaml.safe_load(_git(repo, "show", f"{commit}:dvc.lock")) or {}
        except TradeAgentError:
            continue
        for stage in lock.get("stages", {}).values():
            for out in stage.get("outs", []):
                if out.get("path") != path:
                    continue
                md5 = str(out.get("md5", ""))
                files = _dir_manifest(cache_dir, md5) if md5.endswith(".dir") else {Path(path).name: md5}
                # The exact directory hash needs no cache; the manifest also matches a folder whose
                # run-specific files (metadata.json, model.zip) differ.
                same = md5 == exact or {k: v for k, v in files.items() if k not in RUN_SPECIFIC} == wanted
                if same and _exports(repo, commit, registry, entry["checksum"]):
                    return commit
    return None


def walkforward_gate(repo: Path, registry: ModelRegistry, entry: dict[str, Any], commit: str) -> GateFigures:
    """The model's walk-forward figures in ``metrics/walkforward.json`` at ``commit``.

    Raises:
        ReleaseError: the commit has no walk-forward metrics, or none for this model.
    """
    source = f"{commit[:10]}:{WALKFORWARD_METRICS}"
    try:
        document = json.loads(_git(repo, "show", source))
    except (TradeAgentError, ValueError):
        raise ReleaseError(
            f"{entry['model_id']}: commit {commit[:10]} has no {WALKFORWARD_METRICS} to gate --stage {GATED_STAGE}; "
            "run `dvc repro walkforward`, commit its metrics and release again (or pass --force)"
        ) from None
    entries = json.loads(registry.export_path.read_text()).get("models", []) if registry.export_path.is_file() else []
    try:
        return gate_figures(document, entry, [e for e in entries if isinstance(e, dict)], source)
    except DataSourceError as exc:
        raise ReleaseError(f"{exc} (or pass --force)") from None


def release(
    repo: Path,
    registry: ModelRegistry,
    model_id: str,
    stage: str | None = None,
    *,
    force: bool = False,
    gates: ReleaseConfig | None = None,
) -> list[str]:
    """Create the version tag (and a stage tag); returns the tag names.

    ``stage="prod"`` requires the walk-forward gates (``gates``, default ``release``
    params defaults) unless ``force``; version tags are never gated.

    Raises:
        ReleaseError: no commit's dvc.lock holds the model, the version is released, or a
            prod gate fails (one line with every figure and its threshold).
    """
    if stage and not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9-_]*[a-zA-Z0-9])?", stage):
        raise ReleaseError(f"stage '{stage}' must be letters, digits, '-' or '_'")
    entry = registry.export_model_info(model_id)
    name, version = entry["model_type"], f"v{entry['version']}"
    tag = f"{name}@{version}"
    existing = set(_git(repo, "tag", "--list").split())
    commit = find_commit(repo, registry, entry)
    if commit is None:
        raise ReleaseError(
            f"no commit has both a dvc.lock holding {entry['model_id']} and a models/registry.json listing it; "
            "run `trade-agent models export`, commit dvc.lock and models/registry.json, then release again"
        )
    forced = ""
    if stage == GATED_STAGE:
        figures = walkforward_gate(repo, registry, entry, commit)
        failed = figures.failures(gates or ReleaseConfig())
        if failed and not force:
            raise ReleaseError(
                f"{entry['model_id']} is not promoted to {GATED_STAGE}: {'; '.join(failed)} ({figures.summary()}); "
                "pass --force to override (recorded in the tag message)"
            )
        if failed:
            forced = f" (forced past the walk-forward gates: {'; '.join(failed)})"
    tags = []
    if tag not in existing:
        _git(repo, "tag", "-a", tag, "-m", f"Registering artifact {name} version {version}", commit)
        tags.append(tag)
    elif _git(repo, "rev-list", "-n", "1", tag).strip() != commit:
        raise ReleaseError(f"{tag} already tags another commit; versions are never re-released")
    if stage:
        counter = 1 + sum(1 for t in existing if t.startswith(f"{name}#"))
        stage_tag = f"{name}#{stage}#{counter}"
        _git(
            repo,
            "tag",
            "-a",
            stage_tag,
            "-m",
            f"Assigning stage {stage} to artifact {name} version {version}{forced}",
            commit,
        )
        tags.append(stage_tag)
    return tags
