"""The registry's authoritative store: an index plus content-addressed file objects.

Where it lives: beside the default DVC cache, in the **main** repository's
``.dvc/trade-agent-registry`` (git-ignored). DVC's experiment workspaces
(``dvc exp run --temp`` / ``--queue``) run under ``<main>/.dvc/tmp/exps/`` and share the
main repository's cache, so every workspace of a repository registers into the same store
- and two repositories sharing one custom cache directory still get stores of their own.
Outside a DVC repository the store is ``<registry_root>/.store``.

Layout::

    index.json            {"format", "entries": {model_id: entry}, "issued": {type: [versions]}}
    registry.lock         file lock serialising every read-modify-write
    objects/ab/abcdef...  file contents by sha256
    records/entries/<model_id>.json   each entry again, written when it changes
    records/issued.json               {"issued", "deleted"}: versions never to reuse

``index.json`` is replaced atomically under the lock, so readers always see a complete
file and concurrent writers never lose each other's entries. The records make the index
rebuildable (:meth:`Store.read_records`): an entry is one small file written once per
change, so losing or truncating ``index.json`` loses nothing - including the models that
``dvc repro`` registered, which the git-tracked export does not list until
``trade-agent models export`` runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from trade_agent.errors import IntegrityError, TradeAgentError
from trade_agent.io import atomic_path, is_safe_name, is_safe_relative_path, path_inside, sha256_file

INDEX_FILE = "index.json"
RECORDS_DIR = "records"
FORMAT = 1
log = logging.getLogger(__name__)
STORE_DIR_NAME = "trade-agent-registry"


class RegistryBusyError(TradeAgentError):
    """Another process holds the registry lock for too long."""


class RegistryCorruptError(TradeAgentError):
    """The index or the git-tracked export cannot be read; it is reported, never overwritten."""


_MODEL_TYPE = re.compile(r"[a-z][a-z0-9_]*")
_VERSION = re.compile(r"\d{1,9}\.\d{1,9}\.\d{1,9}")
_HEX = {64: re.compile(r"[0-9a-f]{64}"), 32: re.compile(r"[0-9a-f]{32}")}


def _is_hex(value: object, length: int) -> bool:
    return isinstance(value, str) and _HEX[length].fullmatch(value) is not None


def check_entry(entry: object, where: str) -> dict[str, Any]:
    """An entry read from an index, an export or a record, checked before anything uses it.

    Every name that becomes part of a path (the id, the type, file names, the sha256 an
    object is stored under) must be a plain name that cannot leave its folder.

    Raises:
        RegistryCorruptError: one line naming the entry, the key and the value.
    """
    label = repr(entry.get("model_id")) if isinstance(entry, dict) else "?"

    def refuse(key: str, value: object, expected: str) -> RegistryCorruptError:
        return RegistryCorruptError(
            f"{where}: entry {label}: {key} {value!r} is not {expected}; refused (remove the entry or restore the file)"
        )

    if not isinstance(entry, dict):
        raise refuse("entry", type(entry).__name__, "an object")
    if not is_safe_name(entry.get("model_id")):
        raise refuse("model_id", entry.get("model_id"), "a plain name (letters, digits, _ . + = @ , -; no '..')")
    if not isinstance(entry.get("model_type"), str) or not _MODEL_TYPE.fullmatch(entry["model_type"]):
        raise refuse("model_type", entry.get("model_type"), "a model type such as cnn_lstm")
    if not isinstance(entry.get("version"), str) or not _VERSION.fullmatch(entry["version"]):
        raise refuse("version", entry.get("version"), "MAJOR.MINOR.PATCH")
    if not isinstance(entry.get("created_at"), str):
        raise refuse("created_at", entry.get("created_at"), "an ISO timestamp")
    if not _is_hex(entry.get("checksum"), 64):
        raise refuse("checksum", entry.get("checksum"), "a sha256")
    files = entry.get("files")
    if not isinstance(files, dict):
        raise refuse("files", files, "an object")
    for rel, info in files.items():
        if not is_safe_relative_path(rel):
            raise refuse("file name", rel, "a relative path of plain names")
        if not isinstance(info, dict) or not _is_hex(info.get("sha256"), 64) or not _is_hex(info.get("md5"), 32):
            raise refuse(f"files[{rel!r}]", info, "{sha256, md5, size} of hex digests")
        if "content_sha256" in info and not _is_hex(info["content_sha256"], 64):
            raise refuse(f"files[{rel!r}].content_sha256", info["content_sha256"], "a sha256")
        if not isinstance(info.get("size"), int) or info["size"] < 0:
            raise refuse(f"files[{rel!r}].size", info.get("size"), "a byte count")
    dependencies = entry.get("dependencies")
    if not isinstance(dependencies, list) or not all(is_safe_name(d) for d in dependencies):
        raise refuse("dependencies", dependencies, "a list of model ids")
    if not isinstance(entry.get("metrics"), dict):
        raise refuse("metrics", entry.get("metrics"), "an object")
    return entry


def check_index(index: object, where: str) -> dict[str, Any]:
    """The whole index (or a recovered one): shape, then every entry.

    Raises:
        RegistryCorruptError: see :func:`check_entry`.
    """
    if not isinstance(index, dict) or not isinstance(index.get("entries"), dict):
        raise RegistryCorruptError(f"{where} lacks 'entries'; fix it or restore it")
    if not isinstance(index.get("issued"), dict):
        raise RegistryCorruptError(f"{where} lacks 'issued'; fix it or restore it")
    for key, entry in index["entries"].items():
        check_entry(entry, where)
        if key != entry["model_id"]:
            raise RegistryCorruptError(f"{where}: entry key {key!r} differs from its model_id {entry['model_id']!r}")
    for model_type, versions in index["issued"].items():
        if not _MODEL_TYPE.fullmatch(str(model_type)) or not isinstance(versions, list):
            raise RegistryCorruptError(f"{where}: issued[{model_type!r}] is not a list of versions")
        if not all(isinstance(v, str) and _VERSION.fullmatch(v) for v in versions):
            raise RegistryCorruptError(f"{where}: issued[{model_type!r}] holds a value that is not MAJOR.MINOR.PATCH")
    if not all(_is_hex(c, 64) for c in index.get("deleted", [])):
        raise RegistryCorruptError(f"{where}: 'deleted' holds a value that is not a sha256")
    return index


def _dvc_root(start: str) -> Path | None:
    """The nearest folder holding ``.dvc`` at or above ``start``, as ``dvc.repo.Repo.find_root``."""
    root = Path(start)
    while not (root / ".dvc").is_dir():
        if os.path.ismount(root) or root.parent == root:
            return None
        root = root.parent
    return root


@cache
def _dvc_paths(start: str) -> tuple[str, str] | None:
    """(main repository root, DVC cache dir) for ``start``; None outside a DVC repository.

    The root is found as ``dvc.repo.Repo.find_root`` finds it (the nearest ``.dvc`` folder
    upwards, not past a mount point) and the cache from DVC's own config reader: opening a
    ``Repo`` would cost every registry command (``train list``) a third of a second.
    """
    root = _dvc_root(start)
    if root is None:
        return None
    try:
        from dvc.config import Config
    except ImportError:
        return None
    dvc_dir = root / ".dvc"
    configured = Config(dvc_dir=str(dvc_dir))["cache"].get("dir")
    cache_dir = Path(configured) if configured else dvc_dir / "cache"
    main_root = str(root).split(f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}")[0]  # experiment workspaces
    return main_root, str(cache_dir if cache_dir.is_absolute() else (dvc_dir / cache_dir).resolve())


def dvc_cache_dir(path: Path) -> Path | None:
    """The DVC cache directory of the repository containing ``path``."""
    found = _dvc_paths(str(path.resolve()))
    return Path(found[1]) if found else None


def fetch_from_dvc_remote(path: Path, md5s: list[str]) -> int:
    """Pull these objects from the default DVC remote of the repository containing ``path``
    into its cache (``dvc pull`` for single files); returns how many arrived (0 without a remote)."""
    try:
        from dvc.config import NoRemoteError
        from dvc.exceptions import NotDvcRepoError
        from dvc.repo import Repo
        from dvc_data.hashfile.hash_info import HashInfo
    except ImportError:  # DVC is a dependency; guard only for stripped-down installs
        return 0
    from dvc.exceptions import DvcException

    try:
        with Repo(str(path.resolve()), uninitialized=False) as repo:
            result = repo.cloud.pull([HashInfo("md5", md5) for md5 in md5s])
    except (NoRemoteError, NotDvcRepoError):
        return 0
    except (DvcException, OSError) as exc:  # unreachable remote, credentials...: report the files missing
        log.warning("registry: could not pull from the DVC remote: %s", exc)
        return 0
    return len(result.transferred)


@cache
def _default_remote(start: str) -> str | None:
    root = _dvc_root(start)
    if root is None:
        return None
    try:
        from dvc.config import Config
    except ImportError:
        return None
    remote = Config(dvc_dir=str(root / ".dvc")).get("core", {}).get("remote")
    return str(remote) if remote else None


def default_dvc_remote(path: Path) -> str | None:
    """The default DVC remote of the repository containing ``path`` (None: no remote, or no repository)."""
    return _default_remote(str(path.resolve()))


def locate_store(registry_root: Path) -> Path:
    """The store directory for a registry rooted at ``registry_root`` (see module docstring)."""
    override = os.environ.get("TRADE_AGENT_REGISTRY_STORE")
    if override:
        return Path(override)
    start = registry_root if registry_root.exists() else registry_root.parent
    found = _dvc_paths(str(start.resolve()))
    if found is None:
        return registry_root / ".store"
    return Path(found[0]) / ".dvc" / STORE_DIR_NAME


class Store:
    """Index + objects, with a lock. All methods are safe across processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.index_path = root / INDEX_FILE
        self.records = root / RECORDS_DIR
        root.mkdir(parents=True, exist_ok=True)
        ignore = root / ".gitignore"
        if not ignore.is_file():  # the store is never committed: registry.json is its export
            ignore.write_text("*\n")
        self._lock = FileLock(str(root / "registry.lock"), timeout=120)

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Hold the lock; yield the index; write it back atomically on success."""
        try:
            self._lock.acquire()
        except Timeout:
            raise RegistryBusyError(
                f"{self.root}/registry.lock is held by another process for over 2 minutes; "
                "wait for it to finish or remove the lock file if that process is gone"
            ) from None
        try:
            index = self.read()
            before = json.dumps(index, sort_keys=True)
            yield index
            if json.dumps(index, sort_keys=True) != before:
                self._write(index, json.loads(before))
            elif index["entries"] and not self.records.is_dir():  # a store older than its records
                self._write_records(index, {"entries": {}})
        finally:
            self._lock.release()

    def read(self) -> dict[str, Any]:
        """The current index (empty when the store is new).

        Raises:
            RegistryCorruptError: the index is not valid JSON of the expected shape.
        """
        if not self.index_path.is_file():
            return {"format": FORMAT, "entries": {}, "issued": {}}
        try:
            index: dict[str, Any] = json.loads(self.index_path.read_text())
        except ValueError as exc:
            raise RegistryCorruptError(
                f"{self.index_path} is not valid JSON ({exc}); restore it from models/registry.json "
                "with `trade-agent models export --import`, or fix it by hand"
            ) from None
        return check_index(index, str(self.index_path))

    def _write(self, index: dict[str, Any], previous: dict[str, Any]) -> None:
        check_index(index, f"{self.index_path} (about to be written)")  # never store what reading refuses
        with atomic_path(self.index_path) as tmp:
            tmp.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
        self._write_records(index, previous)

    def _write_records(self, index: dict[str, Any], previous: dict[str, Any]) -> None:
        """Bring ``records/`` in line with ``index``: changed or unrecorded entries are
        (re)written, removed ones deleted (a store older than the records gets them all)."""
        entries_dir = self.records / "entries"
        entries_dir.mkdir(parents=True, exist_ok=True)
        for model_id, entry in index["entries"].items():
            record = path_inside(entries_dir, f"{model_id}.json")
            if previous["entries"].get(model_id) != entry or not record.is_file():
                with atomic_path(record) as tmp:
                    tmp.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
        for model_id in previous["entries"].keys() - index["entries"].keys():
            path_inside(entries_dir, f"{model_id}.json").unlink(missing_ok=True)
        versions = {"issued": index["issued"], "deleted": index.get("deleted", [])}
        with atomic_path(self.records / "issued.json") as tmp:
            tmp.write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")

    def read_records(self) -> tuple[dict[str, Any], list[str]]:
        """The index as the records describe it, and one line per record that was refused.

        Records are untrusted like the index: each is checked by :func:`check_entry` and
        must be named after its own id; a bad one is skipped and reported, not fatal.
        """
        entries: dict[str, Any] = {}
        refused: list[str] = []
        for path in sorted((self.records / "entries").glob("*.json")):
            try:
                entry = check_entry(json.loads(path.read_text()), str(path))
                if path.stem != entry["model_id"]:
                    raise RegistryCorruptError(f"{path}: holds entry {entry['model_id']!r}, not {path.stem!r}")
            except (OSError, ValueError, RegistryCorruptError) as exc:
                refused.append(str(exc))
                continue
            entries[entry["model_id"]] = entry
        issued: dict[str, Any] = {}
        deleted: list[str] = []
        versions_file = self.records / "issued.json"
        if versions_file.is_file():
            try:
                versions = json.loads(versions_file.read_text())
                checked = check_index({"entries": {}, **versions}, str(versions_file))
                issued, deleted = checked["issued"], list(checked.get("deleted", []))
            except (OSError, ValueError, RegistryCorruptError) as exc:
                refused.append(str(exc))
        for entry in entries.values():  # an entry's own version is issued, whatever the file says
            listed = issued.setdefault(entry["model_type"], [])
            if entry["version"] not in listed:
                listed.append(entry["version"])
        return {"format": FORMAT, "entries": entries, "issued": issued, "deleted": deleted}, refused

    # -- objects --------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        if not _is_hex(sha256, 64):  # entries are checked on read; this guards every other caller
            raise IntegrityError(f"{sha256!r} is not a sha256; refused as a store object name")
        return self.objects / sha256[:2] / sha256

    def add_object(self, source: Path, sha256: str) -> Path:
        """Store a copy of ``source`` under its sha256 (idempotent).

        A copy, not a hard link: an in-place edit of the workspace file must not alter
        the registered version.
        """
        target = self.object_path(sha256)
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        if sha256_file(target) != sha256:
            target.unlink()
            raise IntegrityError(f"{source} changed while it was being registered; register it again")
        return target

    def verify_object(self, sha256: str, label: str) -> Path:
        """Path of a stored object after checking its content.

        Raises:
            IntegrityError: missing, or its bytes no longer hash to ``sha256``.
        """
        path = self.object_path(sha256)
        if not path.is_file():
            raise IntegrityError(f"{label}: stored object {path} is missing")
        actual = sha256_file(path)
        if actual != sha256:
            raise IntegrityError(
                f"{label}: stored object {path} is corrupted (sha256 {actual[:12]}... != {sha256[:12]}...)"
            )
        return path
