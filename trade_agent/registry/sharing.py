"""Models shared between clones: push a model's files to the DVC remote, publish its entries,
import another clone's entries. CLI-only (``trade-agent sweep``, ``exp collect``): no stage
imports it, so changing it retrains nothing.

A model travels as its registry entries (its own and its dependencies', plain JSON, checked
by :func:`~trade_agent.registry.store.check_entry` on arrival like every entry read from
elsewhere) plus its files in the shared DVC remote, addressed by md5 as ``dvc push`` stores
them. The receiving clone lists it at once and restores it on demand
(:meth:`ModelRegistry.restore` pulls what its store and cache lack, and checks every sha256).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from trade_agent.errors import IntegrityError, TradeAgentError
from trade_agent.io import atomic_path, sha256_file
from trade_agent.registry.naming import resolve
from trade_agent.registry.registry import EXPORT_KEYS, ModelRegistry, _merge
from trade_agent.registry.store import RegistryCorruptError, check_entry, dvc_cache_dir

log = logging.getLogger(__name__)


def repository_root(path: Path) -> Path | None:
    """The DVC repository holding ``path`` (which need not exist yet): the nearest folder with ``.dvc``."""
    for candidate in (path.resolve(), *path.resolve().parents):
        if (candidate / ".dvc").is_dir():
            return candidate
    return None


def lineage_entries(registry: ModelRegistry, model_id: str) -> list[dict[str, Any]]:
    """The model's index entry and its dependencies', transitively (dependencies first)."""
    entries = {e["model_id"]: e for e in registry._entries()}
    chain: list[dict[str, Any]] = []

    def visit(entry: dict[str, Any]) -> None:
        for dependency in entry["dependencies"]:
            if dependency in entries and entries[dependency] not in chain:
                visit(entries[dependency])
        if entry not in chain:
            chain.append(entry)

    visit(resolve(model_id, list(entries.values()), registry._rank))
    return [dict(e) for e in chain]


def push_to_dvc_remote(path: Path, objects: dict[str, Path]) -> int:
    """Push files (md5 -> a local copy) to the default DVC remote of the repository containing
    ``path`` through its cache, as ``dvc push`` of single files: copied into the cache where
    missing, then transferred. Returns how many the remote received (already there: not counted).

    Raises:
        TradeAgentError: no DVC repository or remote, or the transfer failed.
    """
    from dvc.config import NoRemoteError
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo

    cache = dvc_cache_dir(path)
    if cache is None:
        raise TradeAgentError(f"{path} is not inside a DVC repository; run from the project's clone")
    for md5, source in objects.items():
        cached = cache / "files" / "md5" / md5[:2] / md5[2:]
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as tmp:
                shutil.copyfile(source, tmp)
    root = repository_root(path)
    assert root is not None  # it has a DVC cache
    try:
        with Repo(str(root), uninitialized=False) as repo:
            result = repo.cloud.push([HashInfo("md5", md5) for md5 in objects])
    except (NoRemoteError, NotDvcRepoError) as exc:
        raise TradeAgentError(f"no DVC remote to push to ({exc}); add one: dvc remote add -d shared <url>") from None
    except (DvcException, OSError) as exc:
        raise TradeAgentError(f"push to the DVC remote failed: {exc}") from None
    return len(result.transferred)


def push_model(registry: ModelRegistry, model_id: str) -> int:
    """Push the files of the model and its dependencies to the default DVC remote; returns how
    many files the remote received.

    Raises:
        TradeAgentError: no remote, or the push failed. IntegrityError: a file is not here intact.
    """
    objects: dict[str, Path] = {}
    for entry in lineage_entries(registry, model_id):
        for rel, info in entry["files"].items():
            try:
                objects[info["md5"]] = registry.store.verify_object(info["sha256"], f"{entry['model_id']}/{rel}")
            except IntegrityError:
                cached = registry._dvc_cache_object(info["md5"])
                if not (cached and cached.is_file() and sha256_file(cached) == info["sha256"]):
                    raise
                objects[info["md5"]] = cached
    return push_to_dvc_remote(registry.root if registry.root.exists() else registry.root.parent, objects)


def import_entries(registry: ModelRegistry, entries: list[Any], where: str) -> dict[tuple[str, str], str]:
    """Merge entries read from elsewhere into ``registry`` by content hash, as
    :meth:`ModelRegistry.import_export` does (a version taken here is renumbered); returns
    (model type, checksum) -> id here for each entry this registry now holds. (Not keyed by
    the incoming id: two clones' different first models can both be ``..._v1.0.0_..._acc_0.45``.)

    Raises:
        RegistryCorruptError: an entry fails the checks (one line naming ``where``, the entry and the key).
    """
    checked = [check_entry(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]
    for i, entry in enumerate(checked):
        missing = [k for k in EXPORT_KEYS if k not in entry]
        if missing:
            raise RegistryCorruptError(f"{where}[{i}]: entry lacks {', '.join(missing)}; refused")
    with registry.store.locked() as index:
        for note in _merge(index, {"models": checked}):
            log.warning("registry import: %s", note)
        by_content = {(e["model_type"], e["checksum"]): e["model_id"] for e in index["entries"].values()}
        if registry.export_enabled:
            registry._export(index)
    keys = {(e["model_type"], e["checksum"]) for e in checked}
    return {key: by_content[key] for key in keys if key in by_content}  # deleted here: not brought back


def push_run_cache(path: Path) -> int:
    """``dvc push --run-cache`` of the repository containing ``path``: the stage runs this clone
    made with ``dvc repro`` (and their outputs), for the other clones' ``dvc pull --run-cache``.

    Raises:
        TradeAgentError: no DVC repository or remote, or the push failed.
    """
    from dvc.config import NoRemoteError
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    root = repository_root(path)
    if root is None:
        raise TradeAgentError(f"{path} is not inside a DVC repository; run from the project's clone")
    try:
        with Repo(str(root), uninitialized=False) as repo:
            return int(repo.push(run_cache=True))
    except (NoRemoteError, NotDvcRepoError) as exc:
        raise TradeAgentError(
            f"no DVC remote to push the run-cache to ({exc}); add one: dvc remote add -d shared <url>"
        ) from None
    except (DvcException, OSError) as exc:
        raise TradeAgentError(f"run-cache push to the DVC remote failed: {exc}") from None
