"""The model registry: content-addressed versions, grades, lineage, integrity.

``ModelRegistry(registry_root="models")`` keeps its authoritative store beside the DVC
cache (:mod:`trade_agent.registry.store`) and a git-tracked export in
``<registry_root>/registry.json``. Registering content that is already registered returns
the existing id, so a deterministic retrain or a ``dvc repro`` restored from cache adds
nothing. A human-readable view (``models/<type>/<id>.pth``, ``config_vX.Y.Z.json``, ...)
is materialised from the store in the main workspace and kept out of git.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import shutil
import subprocess
import zipfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trade_agent.config import Params, load_params_or_defaults
from trade_agent.config.registry import TypeGrading
from trade_agent.errors import ConfigError, InputError, IntegrityError
from trade_agent.integrity import IntegrityReport
from trade_agent.io import (
    atomic_path,
    canonical_json,
    is_safe_relative_path,
    new_temp_dir,
    path_inside,
    read_json,
    sha256_file,
    sha256_text,
)
from trade_agent.registry.grading import PerformanceGrade, composite_score, grade_for, metric_value
from trade_agent.registry.naming import make_model_id, resolve
from trade_agent.registry.store import (
    RegistryCorruptError,
    Store,
    check_entry,
    check_index,
    default_dvc_remote,
    dvc_cache_dir,
    fetch_from_dvc_remote,
    locate_store,
)
from trade_agent.registry.versioning import Fingerprint, format_version, next_version, parse_version

log = logging.getLogger(__name__)

EXPORT_FILE = "registry.json"
# Where a model's files are: all of them in the store or the DVC cache, else fetchable from
# the configured DVC remote (a restore pulls them), else nowhere this clone can reach.
HERE, REMOTE, MISSING = "here", "remote", "missing"
# Files of a model directory that describe a run rather than the model: stored, but not
# part of the content hash. SB3's model.zip pickles run state (start time, last
# observation); an agent's identity is its pickle-free policy.pt + policy.json.
RUN_SPECIFIC = frozenset({"metadata.json", "model.zip"})
# training_config keys that do not count as hyperparameters for versioning.
NOT_HYPERPARAMETERS = frozenset({"seed", "interface", "runtime"})
VIEW_WEIGHT_SUFFIXES = {".pt": ".pth", ".pth": ".pth", ".zip": ".zip", ".npz": ".npz"}


@dataclass
class ModelMetadata:
    """Everything the registry knows about one model version."""

    model_id: str
    model_type: str
    version: str
    performance_grade: str
    created_at: str
    training_config: dict[str, Any]
    metrics: dict[str, float]
    dataset_info: dict[str, Any]
    dependencies: list[str]
    file_paths: list[str]
    training_duration: float | None
    hardware_info: dict[str, Any]
    git_commit: str | None
    model_size_mb: float
    checksum: str
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    composite_score: float | None = None
    archived: bool = False
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    fingerprint: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> ModelMetadata:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in entry.items() if k in known})


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _zip_content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


EXPORT_KEYS = (
    "model_id",
    "model_type",
    "version",
    "checksum",
    "created_at",
    "files",
    "fingerprint",
    "dependencies",
    "metrics",
    "performance_grade",
)


def _renumber(index: dict[str, Any], entry: dict[str, Any], ids: dict[str, str]) -> str:
    """Give ``entry`` the next free patch version of its line and (re-)insert it."""
    old_id = entry["model_id"]
    if index["entries"].get(old_id) is entry:
        del index["entries"][old_id]
    issued = index["issued"].setdefault(entry["model_type"], [])
    major, minor, _ = parse_version(entry["version"])
    patch = max(parse_version(v)[2] for v in issued if parse_version(v)[:2] == (major, minor)) + 1
    version = format_version((major, minor, patch))
    entry["model_id"] = old_id.replace(f"_v{entry['version']}_", f"_v{version}_", 1)
    entry["version"] = version
    issued.append(version)
    index["entries"][entry["model_id"]] = entry
    ids[old_id] = entry["model_id"]
    return str(entry["model_id"])


def _merge(index: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """Add an export's unknown entries to ``index`` (see ``ModelRegistry.import_export``)."""
    entries = index["entries"]
    deleted = set(index.setdefault("deleted", []))
    by_content = {(e["model_type"], e["checksum"]): e["model_id"] for e in entries.values()}
    ids: dict[str, str] = {}
    notes: list[str] = []
    for incoming in sorted(document["models"], key=lambda e: (e["created_at"], e["checksum"])):
        key = (incoming["model_type"], incoming["checksum"])
        if key in by_content:
            ids[incoming["model_id"]] = by_content[key]
            continue
        if incoming["checksum"] in deleted:
            continue  # deleted here: an old export must not bring it back
        entry = dict(incoming)
        clash = next(
            (
                e
                for e in entries.values()
                if e["model_type"] == entry["model_type"] and e["version"] == entry["version"]
            ),
            None,
        )
        issued = index["issued"].setdefault(entry["model_type"], [])
        if clash is not None:
            if (entry["created_at"], entry["checksum"]) < (clash["created_at"], clash["checksum"]):
                old_local = clash["model_id"]
                moved = _renumber(index, clash, ids)
                by_content[(clash["model_type"], clash["checksum"])] = moved
                notes.append(f"{old_local} shared its version with an older model; renumbered to {moved}")
            else:
                old = entry["model_id"]
                new = _renumber(index, entry, ids)
                by_content[key] = new
                notes.append(f"{old} collided with a different model of the same version; imported as {new}")
                continue
        entries[entry["model_id"]] = entry
        if entry["version"] not in issued:
            issued.append(entry["version"])
        by_content[key] = entry["model_id"]
        ids[incoming["model_id"]] = entry["model_id"]
    for entry in entries.values():
        entry["dependencies"] = [ids.get(d, d) for d in entry["dependencies"]]
    for model_type, versions in document.get("issued", {}).items():
        merged = index["issued"].setdefault(model_type, [])
        merged.extend(v for v in versions if v not in merged)
    return notes


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`ModelRegistry.recover` brought back into the index."""

    from_records: int
    from_export: int
    total: int
    refused: list[str]
    index: str

    def summary(self) -> str:
        restored = self.from_records + self.from_export
        text = (
            f"recovered {restored} entr{'y' if restored == 1 else 'ies'} into {self.index} "
            f"({self.from_records} from the store's records, {self.from_export} from the export); "
            f"it lists {self.total} models"
        )
        return text + (f"; {len(self.refused)} record(s) refused (see the warnings)" if self.refused else "")


def experiment_tags() -> list[str]:
    """``experiment:<name>`` and ``baseline:<commit>`` when a DVC experiment runs the stage."""
    name, baseline = os.environ.get("DVC_EXP_NAME"), os.environ.get("DVC_EXP_BASELINE_REV")
    return [f"experiment:{name}", f"baseline:{baseline}"] if name and baseline else []


def in_experiment_workspace(path: Path) -> bool:
    """True inside a DVC experiment's temporary workspace (``.dvc/tmp/exps/...``)."""
    return "/.dvc/tmp/exps/" in str(path.resolve()).replace("\\", "/") + "/"


class ModelRegistry:
    """Register, find, verify and restore model versions.

    Args:
        registry_root: folder of the git-tracked export and the human-readable view.
        grading: per-type grading tables (default: params.yaml ``grading:`` if present).
        export: rewrite ``registry.json`` and the view after changes (default: yes,
            except inside a DVC experiment workspace).
    """

    def __init__(
        self,
        registry_root: str | Path = "models",
        grading: dict[str, TypeGrading] | None = None,
        export: bool | None = None,
    ) -> None:
        self.root = Path(registry_root)
        self.store = Store(locate_store(self.root))
        self.grading = grading if grading is not None else load_params_or_defaults(None).grading
        self.export_enabled = not in_experiment_workspace(self.root) if export is None else export
        self.recovery = self._seed_from_export()

    # -- registering ----------------------------------------------------------------

    def register_model(
        self,
        model_type: str,
        model_path: str | Path,
        preprocessor_path: str | Path | None,
        training_config: dict[str, Any],
        metrics: dict[str, float],
        dataset_info: dict[str, Any],
        dependencies: list[str] | None = None,
        training_duration: float | None = None,
        hardware_info: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        notes: str = "",
    ) -> str:
        """Register a model; returns its id (the existing id when the content is known).

        ``training_config["interface"]`` (input schema, sequence length/observation space,
        architecture family, action space) drives MAJOR versions; the rest of
        ``training_config`` except ``seed`` and ``runtime`` (threads, device, precision)
        counts as hyperparameters (MINOR).

        Raises:
            ConfigError: unknown model type. InputError: missing files or unknown
            dependencies. IntegrityError: a dependency fails its integrity check.
        """
        table = self._table(model_type)
        files = self._collect(Path(model_path), Path(preprocessor_path) if preprocessor_path else None)
        checksum = self._checksum(model_type, files)
        interface = training_config.get("interface", {})
        hyper = {k: v for k, v in training_config.items() if k not in NOT_HYPERPARAMETERS}
        deps_in = dependencies or []
        with self.store.locked() as index:
            entries = index["entries"]
            resolved_deps = [resolve(dep, list(entries.values()), self._rank)["model_id"] for dep in deps_in]
            for entry in entries.values():
                if entry["checksum"] == checksum and entry["model_type"] == model_type:
                    for rel, info in files.items():
                        self.store.add_object(info["_path"], info["sha256"])  # `models gc` may have dropped them
                        if rel in RUN_SPECIFIC and entry["files"].get(rel, {}).get("sha256") != info["sha256"]:
                            # The same model from a newer run: its run record follows the latest
                            # stage output, so the entry's directory hash is the dvc.lock's.
                            entry["files"][rel] = {k: v for k, v in info.items() if k != "_path"}
                    if self.export_enabled:
                        self._export(index)
                    log.info("registry: %s is already registered as %s", model_path, entry["model_id"])
                    return str(entry["model_id"])
            for dep in resolved_deps:
                report = self._integrity(entries[dep])
                if not report:
                    raise IntegrityError(f"dependency {dep}: {report.problems[0]}")
            fingerprint = Fingerprint(
                interface=sha256_text(canonical_json(interface)),
                hyperparameters=sha256_text(canonical_json(hyper)),
                data=sha256_text(canonical_json(dataset_info)),
                upstream=sha256_text(canonical_json(sorted(resolved_deps))),
            )
            same_type = [e for e in entries.values() if e["model_type"] == model_type]
            issued = [parse_version(v) for v in index["issued"].get(model_type, [])]
            version = format_version(
                next_version(
                    fingerprint,
                    [(parse_version(e["version"]), Fingerprint(**e["fingerprint"])) for e in same_type],
                    issued,
                )
            )
            score = composite_score(metrics, table)
            grade = grade_for(score).value
            key_value = metric_value(metrics, table.key_metric, table.split)
            model_id = make_model_id(model_type, version, grade, table.key_label, key_value)
            for info in files.values():
                self.store.add_object(info.pop("_path"), info["sha256"])
            entry = asdict(
                ModelMetadata(
                    model_id=model_id,
                    model_type=model_type,
                    version=version,
                    performance_grade=grade,
                    created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    training_config=training_config,
                    metrics=metrics,
                    dataset_info=dataset_info,
                    dependencies=resolved_deps,
                    file_paths=sorted(files),
                    training_duration=training_duration,
                    hardware_info=hardware_info or {},
                    git_commit=_git_commit(Path.cwd()),
                    model_size_mb=round(sum(i["size"] for i in files.values()) / 2**20, 4),
                    checksum=checksum,
                    tags=[*(tags or []), *experiment_tags()],
                    notes=notes,
                    composite_score=score,
                    files=files,
                    fingerprint=asdict(fingerprint),
                    source=str(model_path),
                )
            )
            entry["registered_by"] = getpass.getuser()
            entries[model_id] = entry
            index["issued"].setdefault(model_type, []).append(version)
            if self.export_enabled:  # under the lock: exports land in registration order
                self._export(index)
        log.info("registry: registered %s (%s, score %s)", model_id, grade, score)
        if self.export_enabled:
            self._materialize(entry)
        return model_id

    def _table(self, model_type: str) -> TypeGrading:
        if model_type not in self.grading:
            raise ConfigError(
                f"model type '{model_type}' has no grading table; known types: {', '.join(self.grading)} "
                "(add one under 'grading:' in params.yaml)"
            )
        return self.grading[model_type]

    @staticmethod
    def _checksum(model_type: str, files: dict[str, dict[str, Any]]) -> str:
        """Content identity: every file's bytes except the run-specific ones."""
        payload = {
            rel: info.get("content_sha256", info["sha256"]) for rel, info in files.items() if rel not in RUN_SPECIFIC
        }
        return sha256_text(canonical_json({"model_type": model_type, "files": payload}))

    def id_of(self, model_type: str, model_path: str | Path) -> str | None:
        """The id of the registered model whose content equals ``model_path``, if any."""
        checksum = self._checksum(model_type, self._collect(Path(model_path), None))
        for entry in self._entries():
            if entry["checksum"] == checksum and entry["model_type"] == model_type:
                return str(entry["model_id"])
        return None

    @staticmethod
    def _collect(model_path: Path, preprocessor_path: Path | None) -> dict[str, dict[str, Any]]:
        if not model_path.exists():
            raise InputError(f"{model_path}: model file or directory not found")
        sources: list[tuple[str, Path]] = []
        if model_path.is_dir():
            sources += [(p.relative_to(model_path).as_posix(), p) for p in sorted(model_path.rglob("*")) if p.is_file()]
        else:
            sources.append((model_path.name, model_path))
        if preprocessor_path is not None and not preprocessor_path.resolve().is_relative_to(model_path.resolve()):
            if preprocessor_path.is_dir():
                sources += [
                    (f"preprocessor/{preprocessor_path.name}/{p.relative_to(preprocessor_path).as_posix()}", p)
                    for p in sorted(preprocessor_path.rglob("*"))
                    if p.is_file()
                ]
            elif preprocessor_path.is_file():
                sources.append((f"preprocessor/{preprocessor_path.name}", preprocessor_path))
            else:
                raise InputError(f"{preprocessor_path}: preprocessor not found")
        files: dict[str, dict[str, Any]] = {}
        for rel, path in sources:
            if not is_safe_relative_path(rel):
                raise InputError(
                    f"{path}: '{rel}' cannot be registered; rename it with letters, digits and _ . + = @ , - only"
                )
            files[rel] = {"sha256": sha256_file(path), "md5": _md5(path), "size": path.stat().st_size, "_path": path}
            if zipfile.is_zipfile(path):
                # SB3 zips stamp member dates: identify them by their members' bytes.
                files[rel]["content_sha256"] = _zip_content_hash(path)
        return files

    # -- reading --------------------------------------------------------------------

    def _entries(self, include_archived: bool = True) -> list[dict[str, Any]]:
        entries = list(self.store.read()["entries"].values())
        return [e for e in entries if include_archived or not e.get("archived")]

    def _rank(self, entry: dict[str, Any]) -> tuple[float, float]:
        """``@best`` order: composite score, then the type's key metric."""
        table = self.grading.get(entry["model_type"])
        key = metric_value(entry["metrics"], table.key_metric, table.split) if table else None
        score = entry.get("composite_score")
        return (score if score is not None else -1.0, key if key is not None else float("-inf"))

    def resolve_id(self, query: str) -> str:
        """Canonical id for a full id, unique prefix, ``type@vX.Y.Z``/``@latest``/``@best``."""
        return str(resolve(query, self._entries(), self._rank)["model_id"])

    def get_model(self, model_id: str) -> ModelMetadata:
        return ModelMetadata.from_entry(resolve(model_id, self._entries(), self._rank))

    def list_models(
        self,
        model_type: str | None = None,
        grade_filter: str | None = None,
        limit: int | None = None,
        include_archived: bool = False,
    ) -> list[ModelMetadata]:
        """Models, newest version first per type; ``grade_filter`` keeps that grade or better."""
        worst = PerformanceGrade.parse(grade_filter).rank if grade_filter else None
        entries = [
            e
            for e in self._entries(include_archived)
            if (model_type is None or e["model_type"] == model_type)
            and (worst is None or PerformanceGrade.parse(e["performance_grade"]).rank <= worst)
        ]
        entries.sort(key=lambda e: (e["model_type"], parse_version(e["version"])), reverse=True)
        return [ModelMetadata.from_entry(e) for e in entries[:limit]]

    def _scores(self, entry: dict[str, Any]) -> tuple[float, list[float]]:
        scores = [
            e.get("composite_score") or 0.0 for e in self._entries(False) if e["model_type"] == entry["model_type"]
        ]
        return entry.get("composite_score") or 0.0, scores

    def percentile(self, model_id: str) -> float:
        """Mid-rank percentile of the composite score within the type (the seed's percentiles):
        models it beats plus half of those it ties, itself included, so equal scores give 50
        rather than claiming the top."""
        own, scores = self._scores(resolve(model_id, self._entries(), self._rank))
        below, ties = sum(s < own for s in scores), sum(s == own for s in scores)
        return 100.0 * (below + 0.5 * ties) / max(len(scores), 1)

    def rank(self, model_id: str) -> tuple[int, int]:
        """``(rank, count)`` by composite score among the type's active models (1 = best; ties share a rank)."""
        own, scores = self._scores(resolve(model_id, self._entries(), self._rank))
        return 1 + sum(s > own for s in scores), len(scores)

    def get_model_dependencies(self, model_id: str) -> dict[str, Any]:
        """Lineage tree: ``{"model_id", "model_type", "dependencies": [subtrees]}``."""
        entries = {e["model_id"]: e for e in self._entries()}
        root = resolve(model_id, list(entries.values()), self._rank)

        def tree(entry: dict[str, Any]) -> dict[str, Any]:
            children = [
                tree(entries[d]) if d in entries else {"model_id": d, "missing": True} for d in entry["dependencies"]
            ]
            return {"model_id": entry["model_id"], "model_type": entry["model_type"], "dependencies": children}

        return tree(root)

    def get_best_model(self, model_type: str, metric: str | None = None) -> ModelMetadata | None:
        """Best non-archived model of a type: by ``metric`` if given, else ``@best`` order."""
        candidates = [e for e in self._entries(False) if e["model_type"] == model_type]
        if not candidates:
            return None
        if metric is None:
            return ModelMetadata.from_entry(max(candidates, key=self._rank))
        with_metric = [e for e in candidates if e["metrics"].get(metric) is not None]
        if not with_metric:
            return None
        name = metric.split("/")[-1]
        rule = self.grading[model_type].metrics.get(name) if model_type in self.grading else None
        lower_is_better = rule.excellent < rule.poor if rule else name in ("loss", "max_drawdown", "volatility")
        sign = -1.0 if lower_is_better else 1.0
        return ModelMetadata.from_entry(max(with_metric, key=lambda e: sign * e["metrics"][metric]))

    def export_model_info(self, model_id: str) -> dict[str, Any]:
        """Metadata, lineage and integrity status as one JSON-ready dict."""
        entry = resolve(model_id, self._entries(), self._rank)
        report = self._integrity(entry)
        return {
            **entry,
            "availability": self._availability(entry),
            "lineage": self.get_model_dependencies(entry["model_id"]),
            "integrity": {"ok": bool(report), "problems": report.problems},
            "percentile": self.percentile(entry["model_id"]),
            "rank": list(self.rank(entry["model_id"])),
        }

    # -- integrity and files --------------------------------------------------------

    def _dvc_cache_object(self, md5: str) -> Path | None:
        cache = dvc_cache_dir(self.root if self.root.exists() else self.root.parent)
        return cache / "files" / "md5" / md5[:2] / md5[2:] if cache else None

    def _integrity(self, entry: dict[str, Any]) -> IntegrityReport:
        report = IntegrityReport(entry["model_id"])
        for rel, info in sorted(entry["files"].items()):
            try:
                self.store.verify_object(info["sha256"], f"{entry['model_id']}/{rel}")
            except IntegrityError as exc:
                cached = self._dvc_cache_object(info["md5"])
                if "missing" in str(exc) and cached and cached.is_file() and sha256_file(cached) == info["sha256"]:
                    continue  # not in our store, but the DVC cache still has it
                report.problems.append(str(exc))
        return report

    def availability(self, model_id: str) -> str:
        """``here``, ``remote`` or ``missing`` (existence only; integrity re-hashes)."""
        return self._availability(resolve(model_id, self._entries(), self._rank))

    def availabilities(self, model_ids: list[str]) -> dict[str, str]:
        """:meth:`availability` of many models, reading the index once."""
        entries = self._entries()
        return {model_id: self._availability(resolve(model_id, entries, self._rank)) for model_id in model_ids}

    def _availability(self, entry: dict[str, Any]) -> str:
        for info in entry["files"].values():
            cached = self._dvc_cache_object(info["md5"])
            if not self.store.object_path(info["sha256"]).is_file() and not (cached and cached.is_file()):
                return REMOTE if default_dvc_remote(self.root if self.root.exists() else self.root.parent) else MISSING
        return HERE

    def validate_model_integrity(self, model_id: str) -> IntegrityReport:
        """Re-hash every stored file of the model against its recorded sha256."""
        return self._integrity(resolve(model_id, self._entries(), self._rank))

    def check_upstream(self, model_ids: list[str]) -> list[str]:
        """Before training on registered models: each one and everything in its lineage exists
        and re-hashes to its recorded checksums (files missing locally are pulled from the
        DVC remote first). Returns the checked ids, upstream first.

        Raises:
            InputError: an id or a dependency is not registered.
            IntegrityError: a file is missing everywhere or corrupted; names the model and file.
        """
        checked: list[str] = []

        def visit(model_id: str, needed_by: str | None) -> None:
            try:
                entry = resolve(model_id, self._entries(), self._rank)
            except InputError as exc:
                if needed_by is None:
                    raise
                raise InputError(
                    f"{needed_by} depends on {model_id}, which is not in this registry; check out the commit whose "
                    "models/registry.json lists it, or retrain the upstream stage"
                ) from exc
            for dependency in entry.get("dependencies", []):
                if dependency not in checked:
                    visit(dependency, entry["model_id"])
            self._fetch_missing(entry)
            report = self._integrity(entry)
            if not report:
                raise IntegrityError(
                    f"upstream model {entry['model_id']}: {report.problems[0]}; restore it from the DVC remote "
                    "(`dvc pull`) or retrain it before training on it"
                )
            checked.append(entry["model_id"])

        for model_id in model_ids:
            visit(model_id, None)
        return checked

    def restore(self, model_id: str, target: str | Path) -> Path:
        """Write the model's exact files into ``target`` (verifying every checksum).

        Files come from the registry's store, else the DVC cache, else the DVC remote (pulled
        into the cache first, e.g. in a fresh clone of a project whose models were pushed).

        Raises:
            IntegrityError: a file is missing everywhere or does not match its checksum.
        """
        entry = resolve(model_id, self._entries(), self._rank)
        target = Path(target)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InputError(f"{target} exists and is not an empty directory; restore into a new directory")
        for rel in entry["files"]:  # checked on read already; re-checked before the first write
            path_inside(target, rel)
        self._fetch_missing(entry)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = new_temp_dir(target.parent, f".{target.name}.")
        try:
            self._write_files(entry, staging)
            if target.exists():
                target.rmdir()
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _write_files(self, entry: dict[str, Any], target: Path) -> None:
        """Every file of ``entry`` into ``target``, each verified against its sha256."""
        for rel, info in sorted(entry["files"].items()):
            label = f"{entry['model_id']}/{rel}"
            try:
                source = self.store.verify_object(info["sha256"], label)
            except IntegrityError as exc:
                cached = self._dvc_cache_object(info["md5"])
                if (
                    "missing" not in str(exc)
                    or not cached
                    or not cached.is_file()
                    or sha256_file(cached) != info["sha256"]
                ):
                    raise
                source = cached
            destination = path_inside(target, rel)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(destination) as tmp:
                shutil.copyfile(source, tmp)

    def _fetch_missing(self, entry: dict[str, Any]) -> None:
        missing = []
        for info in entry["files"].values():
            cached = self._dvc_cache_object(info["md5"])
            if not self.store.object_path(info["sha256"]).is_file() and not (cached and cached.is_file()):
                missing.append(info["md5"])
        if missing:
            arrived = fetch_from_dvc_remote(self.root if self.root.exists() else self.root.parent, missing)
            log.info(
                "registry: %d of %d missing files of %s pulled from the DVC remote",
                arrived,
                len(missing),
                entry["model_id"],
            )

    def load_model_dir(self, model_id: str, work_dir: str | Path) -> Path:
        """Restore into ``work_dir/<model_id>`` (verified) and return that directory."""
        entry = resolve(model_id, self._entries(), self._rank)
        return self.restore(entry["model_id"], path_inside(Path(work_dir), entry["model_id"]))

    # -- lifecycle ------------------------------------------------------------------

    def archive_model(self, model_id: str) -> str:
        """Move a model out of the active view (still listed with ``include_archived``)."""
        with self.store.locked() as index:
            entry = resolve(model_id, list(index["entries"].values()), self._rank)
            entry["archived"] = True
            if self.export_enabled:
                self._export(index)
        if self.export_enabled:
            self._materialize(entry)
        return str(entry["model_id"])

    def delete_model(self, model_id: str, force: bool = False) -> str:
        """Remove a model (its version number stays used).

        Raises:
            InputError: other models depend on it and ``force`` is false.
        """
        with self.store.locked() as index:
            entries = index["entries"]
            entry = resolve(model_id, list(entries.values()), self._rank)
            dependents = [e["model_id"] for e in entries.values() if entry["model_id"] in e["dependencies"]]
            if dependents and not force:
                raise InputError(
                    f"{entry['model_id']} is a dependency of {', '.join(dependents)}; delete those first or use --force"
                )
            del entries[entry["model_id"]]
            index.setdefault("deleted", []).append(entry["checksum"])
            still_used = {i["sha256"] for e in entries.values() for i in e["files"].values()}
            for info in entry["files"].values():
                if info["sha256"] not in still_used:
                    self.store.object_path(info["sha256"]).unlink(missing_ok=True)
            if self.export_enabled:
                self._export(index)
        self._remove_view(entry)
        return str(entry["model_id"])

    def drop_archived_files(self) -> int:
        """Delete stored files (and view copies) used only by archived models; returns bytes freed."""
        freed = 0
        with self.store.locked() as index:
            entries = list(index["entries"].values())
            keep = {i["sha256"] for e in entries if not e.get("archived") for i in e["files"].values()}
            for entry in entries:
                if not entry.get("archived"):
                    continue
                for info in entry["files"].values():
                    path = self.store.object_path(info["sha256"])
                    if info["sha256"] not in keep and path.is_file():
                        freed += path.stat().st_size
                        path.unlink()
                for view in self._view_files(entry):
                    if view.is_file():
                        freed += view.stat().st_size
                        view.unlink()
        return freed

    # -- export, import, view -------------------------------------------------------

    @property
    def export_path(self) -> Path:
        return self.root / EXPORT_FILE

    def export(self) -> Path:
        """Rewrite ``registry.json`` and the view from the store (files that are not here
        are left out of the view and summarised in one warning)."""
        with self.store.locked() as index:
            self._export(index)
        absent = {entry["model_id"]: self._materialize(entry) for entry in index["entries"].values()}
        absent = {model: n for model, n in absent.items() if n}
        if absent:
            log.warning("view: %s", absent_summary(sum(absent.values()), len(absent)))
        return self.export_path

    def _export(self, index: dict[str, Any]) -> None:
        """Write ``registry.json`` (under the lock), first merging entries that reached the
        file from elsewhere (``git pull`` of another clone's export) instead of dropping them."""
        if self.export_path.is_file():
            for note in _merge(index, self._read_export(self.export_path)):
                log.warning("registry: %s", note)
        models = sorted(index["entries"].values(), key=lambda e: (e["model_type"], parse_version(e["version"])))
        document = {"format": 1, "models": models, "issued": index["issued"]}
        with atomic_path(self.export_path) as tmp:
            tmp.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")

    @staticmethod
    def _read_export(path: Path) -> dict[str, Any]:
        """A parsed, shape-checked export.

        Raises:
            RegistryCorruptError: unreadable, conflict markers, or entries missing keys.
        """
        fix = f"restore it from git (`git checkout {path}`) or resolve it by hand"
        try:
            document = read_json(path)
        except ValueError as exc:
            raise RegistryCorruptError(f"{path} is not valid JSON ({exc}); {fix}") from None
        models = document.get("models") if isinstance(document, dict) else None
        if not isinstance(models, list):
            raise RegistryCorruptError(f"{path} is not a registry export (no 'models' list); {fix}")
        for i, entry in enumerate(models):
            missing = [k for k in EXPORT_KEYS if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise RegistryCorruptError(f"{path}: models[{i}] lacks {', '.join(missing)}; {fix}")
            check_entry(entry, f"{path}: models[{i}]")
        issued = document.get("issued", {})
        check_index({"entries": {}, "issued": issued if isinstance(issued, dict) else None}, str(path))
        return document

    def import_export(self, path: str | Path | None = None) -> list[str]:
        """Merge an export (default ``registry.json``) into the store, by content hash.

        Entries whose content is known are skipped. When two different models carry the
        same version, the one created first (then the smaller checksum) keeps it and the
        other moves to the next free patch version - the same outcome in every clone -
        and dependencies are rewritten to the new ids.

        Returns:
            One line per re-numbered entry.
        """
        path = Path(path) if path else self.export_path
        if not path.is_file():
            return []
        document = self._read_export(path)
        with self.store.locked() as index:
            notes = _merge(index, document)
        for note in notes:
            log.warning("registry import: %s", note)
        return notes

    def recover(self) -> RecoveryReport:
        """Rebuild the index from the store's records, then the git-tracked export.

        Entries already in the index are kept; the rest come back with their ids,
        checksums and metadata unchanged (an export entry that clashes with a recovered
        one is renumbered as in :meth:`import_export`). Runs by itself when a registry
        opens a store whose ``index.json`` is gone.
        """
        recorded, refused = self.store.read_records()
        export = self._read_export(self.export_path) if self.export_path.is_file() else None
        with self.store.locked() as index:
            known = set(index["entries"])
            deleted = index.setdefault("deleted", [])
            deleted.extend(c for c in recorded["deleted"] if c not in deleted)
            for model_type, versions in recorded["issued"].items():  # first, so their order is kept
                issued = index["issued"].setdefault(model_type, [])
                issued.extend(v for v in versions if v not in issued)
            notes = _merge(index, {"models": list(recorded["entries"].values()), "issued": recorded["issued"]})
            from_records = set(index["entries"]) - known
            if export is not None:
                notes += _merge(index, export)
            from_export = set(index["entries"]) - known - from_records
            total = len(index["entries"])
        for line in [*notes, *refused]:
            log.warning("registry recovery: %s", line)
        return RecoveryReport(len(from_records), len(from_export), total, refused, str(self.store.index_path))

    def _seed_from_export(self) -> RecoveryReport | None:
        """A store without an index (a fresh clone, or a lost ``index.json``) is rebuilt from
        its records and the git-tracked export."""
        if self.store.index_path.is_file() or not (self.export_path.is_file() or self.store.records.is_dir()):
            return None
        report = self.recover()
        if report.from_records:  # only records mean something was lost; a fresh clone is normal
            log.warning("registry: %s", report.summary())
        return report

    def _view_files(self, entry: dict[str, Any]) -> dict[Path, str | None]:
        """view path -> relative file in the model (None: the metadata JSON)."""
        folder = self.root / ("archived" if entry.get("archived") else "") / entry["model_type"]
        version = entry["version"]
        view: dict[Path, str | None] = {folder / f"metadata_v{version}.json": None}
        for rel in entry["files"]:
            suffix = Path(rel).suffix
            if "/" not in rel and suffix in VIEW_WEIGHT_SUFFIXES:
                view[folder / f"{entry['model_id']}{VIEW_WEIGHT_SUFFIXES[suffix]}"] = rel
            elif rel == "config.json":
                view[folder / f"config_v{version}.json"] = rel
            elif rel.startswith("preprocessor/") and rel.endswith("/pipeline.json"):
                view[folder / f"preprocessor_v{version}.json"] = rel
            if rel.startswith("preprocessor/"):
                # Per model version: two models' pipelines may share an id but not content.
                name = f"{entry['model_type']}_v{version}"
                view[self.root / "preprocessors" / name / rel.removeprefix("preprocessor/")] = rel
        return view

    def _materialize(self, entry: dict[str, Any]) -> int:
        """Write the entry's view files; returns how many of its files are not here (those
        are left out, never written empty)."""
        other = dict(entry, archived=not entry.get("archived"))
        for path in self._view_files(other):
            if "preprocessors" not in path.parts:
                path.unlink(missing_ok=True)
        absent = 0
        for path, rel in self._view_files(entry).items():
            path_inside(self.root, path.relative_to(self.root).as_posix())
            source = None
            if rel is not None:
                try:
                    source = self.store.verify_object(entry["files"][rel]["sha256"], f"{entry['model_id']}/{rel}")
                except IntegrityError as exc:
                    log.debug("view: %s", exc)
                    absent += 1
                    path.unlink(missing_ok=True)
                    continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                if source is None:
                    tmp.write_text(json.dumps(entry, indent=2, sort_keys=True, default=str) + "\n")
                else:
                    shutil.copyfile(source, tmp)
        return absent

    def _remove_view(self, entry: dict[str, Any]) -> None:
        for archived in (False, True):
            for path in self._view_files(dict(entry, archived=archived)):
                if "preprocessors" not in path.parts:
                    path.unlink(missing_ok=True)


def absent_summary(files: int, models: int) -> str:
    """One line for files that are registered but not in this clone."""
    return (
        f"{files} file(s) of {models} registered model(s) are not here (`trade-agent train list` marks them); "
        "`make run` reproduces the committed pipeline's models, `dvc pull` fetches pushed ones"
    )


def default_registry(params: Params | None = None, export: bool | None = None) -> ModelRegistry:
    """The repository's registry (``models/``) graded with ``params.grading``."""
    return ModelRegistry("models", grading=params.grading if params else None, export=export)
