"""Model registry: versions, grades, names, lookups, integrity, lifecycle, export/import."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from trade_agent.config.registry import default_grading
from trade_agent.errors import ConfigError, InputError, IntegrityError
from trade_agent.registry import ModelNotFoundError, ModelRegistry, PerformanceGrade, composite_score, grade_for
from trade_agent.registry.grading import format_value
from trade_agent.registry.naming import make_model_id
from trade_agent.registry.store import RegistryCorruptError
from trade_agent.registry.versioning import Fingerprint, next_version
from trade_agent.training.model_registry import ModelRegistry as SeedPathRegistry

GOOD = {"test/accuracy": 0.95, "test/loss": 0.01, "test/r2": 0.9}


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.chdir(tmp_path)
    return ModelRegistry(tmp_path / "models")


def model_dir(root: Path, weights: bytes, name: str = "m") -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.pt").write_bytes(weights)
    (path / "config.json").write_text(json.dumps({"weights": len(weights)}))
    (path / "metadata.json").write_text(json.dumps({"run": str(weights)}))  # run-specific
    return path


def config(features: tuple[str, ...] = ("a", "b"), lr: float = 1e-3, seed: int = 0) -> dict:
    return {"interface": {"features": list(features), "sequence_length": 30}, "learning_rate": lr, "seed": seed}


def register(registry: ModelRegistry, tmp_path: Path, weights: bytes, **kwargs) -> str:
    cfg = config(**{k: kwargs.pop(k) for k in ("features", "lr", "seed") if k in kwargs})
    data = kwargs.pop("data", {"sha": "d1"})
    metrics = kwargs.pop("metrics", GOOD)
    return registry.register_model("cnn_lstm", model_dir(tmp_path, weights), None, cfg, metrics, data, **kwargs)


# -- semantic versions ---------------------------------------------------------------


def fp(interface: str = "i1", hyper: str = "h1", data: str = "d1", upstream: str = "u1") -> Fingerprint:
    return Fingerprint(interface, hyper, data, upstream)


def test_semver_rules() -> None:
    assert next_version(fp(), [], []) == (1, 0, 0)
    one = [((1, 0, 0), fp())]
    issued = [(1, 0, 0)]
    assert next_version(fp(), one, issued) == (1, 0, 1)  # only seed/code differ: PATCH
    assert next_version(fp(hyper="h2"), one, issued) == (1, 1, 0)  # hyperparameters: MINOR
    assert next_version(fp(data="d2"), one, issued) == (1, 1, 0)  # data: MINOR
    assert next_version(fp(upstream="u2"), one, issued) == (1, 1, 0)  # upstream model: MINOR
    assert next_version(fp(interface="i2"), one, issued) == (2, 0, 0)  # interface: MAJOR
    two_lines = [((1, 0, 0), fp()), ((2, 0, 0), fp(interface="i2"))]
    # Interface of an earlier major line: that line continues.
    assert next_version(fp(hyper="h9"), two_lines, [(1, 0, 0), (2, 0, 0)]) == (1, 1, 0)
    # Versions are never reused, even when the model holding them was deleted.
    assert next_version(fp(hyper="h3"), one, [(1, 0, 0), (1, 1, 0)]) == (1, 2, 0)
    assert next_version(fp(), one, [(1, 0, 0), (1, 0, 1)]) == (1, 0, 2)
    assert next_version(fp(interface="i3"), [], [(1, 0, 0), (2, 0, 0)]) == (3, 0, 0)


def test_versions_through_the_registry(registry: ModelRegistry, tmp_path: Path) -> None:
    assert SeedPathRegistry is ModelRegistry
    a = register(registry, tmp_path, b"a")
    b = register(registry, tmp_path, b"b", seed=1)
    c = register(registry, tmp_path, b"c", lr=3e-4)
    d = register(registry, tmp_path, b"d", features=("a", "b", "c"))
    e = register(registry, tmp_path, b"e", lr=1e-4)  # interface of line 1: continues it
    assert [registry.get_model(x).version for x in (a, b, c, d, e)] == ["1.0.0", "1.0.1", "1.1.0", "2.0.0", "1.2.0"]
    registry.delete_model(e)
    f = register(registry, tmp_path, b"f", lr=5e-5)
    assert registry.get_model(f).version == "1.3.0"  # 1.2.0 is never handed out again


def test_identical_content_is_registered_once(registry: ModelRegistry, tmp_path: Path) -> None:
    first = register(registry, tmp_path, b"same")
    # metadata.json differs (run-specific), weights and config do not: same model.
    (tmp_path / "m" / "metadata.json").write_text('{"run": "another run"}')
    again = registry.register_model("cnn_lstm", tmp_path / "m", None, config(), GOOD, {"sha": "d1"})
    assert again == first and len(registry.list_models()) == 1


# -- grades and names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "grade"),
    [
        (1.0, "S"),
        (0.95, "S"),
        (0.9499, "A+"),
        (0.90, "A+"),
        (0.80, "A"),
        (0.7999, "A-"),
        (0.70, "A-"),
        (0.60, "B+"),
        (0.50, "B"),
        (0.40, "B-"),
        (0.30, "C"),
        (0.20, "D"),
        (0.1999, "F"),
        (0.0, "F"),
        (None, "F"),
    ],
)
def test_grade_band_edges(score: float | None, grade: str) -> None:
    assert grade_for(score).value == grade


def test_composite_score_is_linear_between_poor_and_excellent() -> None:
    table = default_grading()["cnn_lstm"]
    assert composite_score(GOOD, table) == pytest.approx(1.0)
    assert composite_score({"test/accuracy": 0.5, "test/loss": 0.5, "test/r2": 0.3}, table) == pytest.approx(0.0)
    # accuracy halfway (0.725) -> 0.5; loss below poor -> 0; r2 above excellent -> 1 (clipped).
    mixed = {"test/accuracy": 0.725, "test/loss": 0.9, "test/r2": 0.99}
    assert composite_score(mixed, table) == pytest.approx(0.5 * 0.5 + 0.25 * 0 + 0.25 * 1)
    # Only the graded split counts; validation metrics are ignored.
    assert composite_score({"val/accuracy": 0.95}, table) is None
    rl = default_grading()["sac"]  # PPO, SAC, TD3, hybrids and ensembles use the trading table
    # Weighted mean over the reported metrics (no sharpe_ci_low: weights 0.5 + 0.2); the
    # drawdown's score (0.5) is gated by the Sharpe score (0.5). More in test_grading.py.
    expected = (0.5 * 0.5 + 0.2 * 0.5 * 0.5) / 0.7
    assert composite_score({"test/sharpe": 1.0, "test/max_drawdown": 0.175}, rl) == pytest.approx(expected)
    assert PerformanceGrade.parse("a-") is PerformanceGrade.A_MINUS
    with pytest.raises(ConfigError, match="grade 'Z' is unknown"):
        PerformanceGrade.parse("Z")


def test_names() -> None:
    assert make_model_id("cnn_lstm", "1.0.0", "A", "acc", 0.95) == "cnn_lstm_v1.0.0_grade_A_acc_0.95"
    assert make_model_id("ppo", "2.1.0", "A-", "sharpe", 2.1) == "ppo_v2.1.0_grade_A-_sharpe_2.1"
    assert make_model_id("ensemble", "1.0.0", "S", "roi", 15.3) == "ensemble_v1.0.0_grade_S_roi_15.3"
    assert make_model_id("td3", "1.0.0", "F", "sharpe", None) == "td3_v1.0.0_grade_F"
    assert [format_value(v) for v in (0.9499, -0.004, 1.0, 12.345)] == ["0.95", "0", "1", "12.35"]


def test_lookups(registry: ModelRegistry, tmp_path: Path) -> None:
    low = register(registry, tmp_path, b"1", metrics={"test/accuracy": 0.65})
    high = register(registry, tmp_path, b"2", seed=1, metrics={"test/accuracy": 0.9})
    newest = register(registry, tmp_path, b"3", seed=2, metrics={"test/accuracy": 0.7})
    assert low == "cnn_lstm_v1.0.0_grade_C_acc_0.65"
    assert registry.resolve_id("cnn_lstm_v1.0.0_grade_C") == low  # unique prefix
    assert registry.resolve_id("cnn_lstm_v1.0.1") == high
    assert registry.resolve_id("cnn_lstm@v1.0.0") == low and registry.resolve_id("cnn_lstm@1.0.0") == low
    assert registry.resolve_id("cnn_lstm@latest") == newest
    assert registry.resolve_id("cnn_lstm@best") == high
    assert registry.get_best_model("cnn_lstm").model_id == high
    with pytest.raises(ModelNotFoundError, match=re.escape("'cnn_lstm' is ambiguous")):
        registry.resolve_id("cnn_lstm")
    with pytest.raises(ModelNotFoundError):  # prefixes end at a field boundary
        registry.resolve_id("cnn_lstm_v1.0")
    with pytest.raises(ModelNotFoundError, match=re.escape("closest: cnn_lstm_v1.0.0_grade_C_acc_0.65")):
        registry.resolve_id("cnn_lstm_v1.0.0_grade_D_acc_0.65")
    with pytest.raises(ModelNotFoundError, match=re.escape("cnn_lstm has v1.0.0, v1.0.1, v1.0.2")):
        registry.resolve_id("cnn_lstm@v9.9.9")
    with pytest.raises(ModelNotFoundError, match="no ppo models are registered"):
        registry.resolve_id("ppo@latest")
    assert [m.model_id for m in registry.list_models(grade_filter="B")] == [high]  # B or better
    assert [m.model_id for m in registry.list_models(grade_filter="C")] == [newest, high, low]


# -- integrity, files, lifecycle ------------------------------------------------------


def test_flipped_byte_is_reported_by_validate_info_and_loading(registry: ModelRegistry, tmp_path: Path) -> None:
    model_id = register(registry, tmp_path, b"weights-bytes")
    assert registry.validate_model_integrity(model_id)
    sha = registry.get_model(model_id).files["model.pt"]["sha256"]
    stored = registry.store.object_path(sha)
    data = bytearray(stored.read_bytes())
    data[0] ^= 0xFF
    stored.write_bytes(bytes(data))
    report = registry.validate_model_integrity(model_id)
    assert not report and f"{model_id}/model.pt: stored object" in report.problems[0]
    assert "corrupted" in report.problems[0]
    info = registry.export_model_info(model_id)
    assert info["integrity"]["ok"] is False and "model.pt" in info["integrity"]["problems"][0]
    with pytest.raises(IntegrityError, match=r"model\.pt: stored object .* is corrupted"):
        registry.load_model_dir(model_id, tmp_path / "load")


def test_restore_is_byte_identical_after_the_workspace_changed(registry: ModelRegistry, tmp_path: Path) -> None:
    model_id = register(registry, tmp_path, b"first")
    original = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    register(registry, tmp_path, b"second", lr=0.5)  # overwrites the workspace files
    registry.restore(model_id, tmp_path / "restored")
    assert {p.name: p.read_bytes() for p in (tmp_path / "restored").iterdir()} == original


def test_lineage_archive_delete(registry: ModelRegistry, tmp_path: Path) -> None:
    base = register(registry, tmp_path, b"base")
    agent_dir = model_dir(tmp_path, b"agent", "agent")
    agent = registry.register_model(
        "ppo",
        agent_dir,
        None,
        {"interface": {"obs": 10}},
        {"test/sharpe": 1.0},
        {},
        dependencies=[base.split("_grade")[0]],
    )
    assert registry.get_model(agent).dependencies == [base]
    assert registry.get_model_dependencies(agent)["dependencies"][0]["model_id"] == base
    with pytest.raises(InputError, match=f"{base} is a dependency of {agent}; delete those first or use --force"):
        registry.delete_model(base)
    with pytest.raises(ModelNotFoundError):
        registry.register_model("ppo", agent_dir, None, {}, {}, {}, dependencies=["cnn_lstm_v7"])
    registry.archive_model(agent)
    assert registry.list_models("ppo") == [] and len(registry.list_models("ppo", include_archived=True)) == 1
    assert (tmp_path / "models" / "archived" / "ppo" / f"{agent}.pth").is_file()
    registry.delete_model(base, force=True)
    assert registry.get_model_dependencies(agent)["dependencies"][0].get("missing")
    with pytest.raises(ConfigError, match="model type 'lstm' has no grading table"):
        registry.register_model("lstm", agent_dir, None, {}, {}, {})


def test_view_export_and_fresh_clone_seeding(registry: ModelRegistry, tmp_path: Path) -> None:
    model_id = register(registry, tmp_path, b"w")
    view = tmp_path / "models" / "cnn_lstm"
    assert sorted(p.name for p in view.iterdir()) == sorted(
        [f"{model_id}.pth", "config_v1.0.0.json", "metadata_v1.0.0.json"]
    )
    export = json.loads((tmp_path / "models" / "registry.json").read_text())
    assert [m["model_id"] for m in export["models"]] == [model_id]
    # A fresh clone: the store is gone, the export is there.
    clone = ModelRegistry(tmp_path / "models")
    clone.store.index_path.unlink()
    seeded = ModelRegistry(tmp_path / "models")
    assert [m.model_id for m in seeded.list_models()] == [model_id]


def test_exports_of_two_clones_merge_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    one, two = ModelRegistry(tmp_path / "one"), ModelRegistry(tmp_path / "two")
    shared = register(one, tmp_path / "a", b"shared")
    register(two, tmp_path / "b", b"shared")  # same content in both clones
    register(two, tmp_path / "b", b"other", seed=5)  # v1.0.1 in clone two
    register(one, tmp_path / "a", b"mine", seed=7)  # v1.0.1 in clone one, different content
    notes = one.import_export(tmp_path / "two" / "registry.json")
    ids = {m.model_id for m in one.list_models()}
    assert shared in ids and len(ids) == 3
    # The other direction reaches the same numbering: the older model keeps v1.0.1.
    two.import_export(tmp_path / "one" / "registry.json")
    numbering = {m.checksum: m.version for m in one.list_models()}
    assert numbering == {m.checksum: m.version for m in two.list_models()}
    assert len(notes) == 1 and "_v1.0.2_" in notes[0]  # one of the two moved to the next free patch


def test_entries_from_another_clone_map_by_content_even_when_their_ids_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clones' different first models are both cnn_lstm_v1.0.0_grade_A_acc_0.95; the older
    keeps v1.0.0 in both, so the importing clone's own model is renumbered. What the import
    returns must follow content, not the incoming id (what `exp collect` lists)."""
    from trade_agent.registry.sharing import import_entries, lineage_entries

    monkeypatch.chdir(tmp_path)
    older, here = ModelRegistry(tmp_path / "older"), ModelRegistry(tmp_path / "here")
    theirs = register(older, tmp_path / "a", b"theirs")
    mine = register(here, tmp_path / "b", b"mine")
    assert theirs == mine  # the same id string, different models
    ids = import_entries(here, lineage_entries(older, theirs), "clone older")
    their_checksum = older.get_model(theirs).checksum
    assert ids == {("cnn_lstm", their_checksum): theirs}  # the older model keeps v1.0.0
    by_checksum = {m.checksum: m.model_id for m in here.list_models()}
    assert by_checksum[their_checksum] == theirs and len(by_checksum) == 2
    assert "_v1.0.1_" in next(i for c, i in by_checksum.items() if c != their_checksum)  # mine moved
    assert import_entries(here, lineage_entries(older, theirs), "clone older") == ids  # again: nothing new
    bad = {**lineage_entries(older, theirs)[0], "model_id": "../escape"}
    with pytest.raises(RegistryCorruptError, match=r"clone older\[0\]: entry '../escape': model_id"):
        import_entries(here, [bad], "clone older")


def test_corrupt_registry_is_reported_not_overwritten(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path, b"w")
    registry.store.index_path.write_text("{broken")
    with pytest.raises(RegistryCorruptError, match="is not valid JSON"):
        register(registry, tmp_path, b"x", seed=3)
    assert registry.store.index_path.read_text() == "{broken"
    (tmp_path / "models" / "registry.json").write_text("[]")
    with pytest.raises(RegistryCorruptError, match="is not a registry export"):
        registry.import_export()


def test_zip_member_dates_do_not_make_a_new_version(registry: ModelRegistry, tmp_path: Path) -> None:
    import zipfile

    ids = []
    for name, stamp in (("a", (2020, 1, 1, 0, 0, 0)), ("b", (2024, 6, 6, 6, 6, 6))):
        folder = tmp_path / name
        folder.mkdir()
        with zipfile.ZipFile(folder / "weights.zip", "w") as archive:
            archive.writestr(zipfile.ZipInfo("policy.pth", date_time=stamp), b"same weights")
        ids.append(registry.register_model("ppo", folder, None, {"interface": {}}, {"test/sharpe": 1.0}, {}))
    assert ids[0] == ids[1]


def test_aliases_skip_archived_models_and_restore_needs_an_empty_target(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    best = register(registry, tmp_path, b"1", metrics={"test/accuracy": 0.9})
    other = register(registry, tmp_path, b"2", seed=1, metrics={"test/accuracy": 0.6})
    registry.archive_model(best)
    assert registry.resolve_id("cnn_lstm@best") == other and registry.resolve_id("cnn_lstm@latest") == other
    assert registry.resolve_id(best) == best  # still reachable by id
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(InputError, match="is not an empty directory"):
        registry.restore(other, tmp_path / "busy")
    assert registry.get_best_model("cnn_lstm", metric="test/accuracy").model_id == other


def test_a_lost_index_is_rebuilt_from_the_store_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    registry = ModelRegistry(tmp_path / "models", export=False)  # as the DVC stages register
    first = register(registry, tmp_path, b"one")
    second = register(registry, tmp_path, b"two", lr=1e-2)
    registry.archive_model(first)
    third = register(registry, tmp_path, b"three", lr=1e-1)
    registry.delete_model(third)
    before = registry.store.read()
    registry.store.index_path.unlink()

    reopened = ModelRegistry(tmp_path / "models", export=False)
    assert reopened.recovery is not None and reopened.recovery.from_records == 2
    after = reopened.store.read()
    assert after["entries"] == before["entries"]  # ids, checksums, metadata, archived flag
    assert after["issued"] == before["issued"] and after["deleted"] == before["deleted"]
    assert {first, second} == set(after["entries"])
    assert reopened.validate_model_integrity(second)
    # the deleted model's version stays used
    assert register(reopened, tmp_path, b"four", lr=1e-1).startswith("cnn_lstm_v1.3.")


def test_release_matches_the_committed_lock_without_a_dvc_cache() -> None:
    """A fresh clone has no .dir manifests in its cache: the directory hash computed from a
    registry entry must equal what dvc.lock records for that model's stage output."""
    import yaml

    from trade_agent.registry.release import dir_md5

    root = Path(__file__).resolve().parents[1]
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    outs = {
        out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if out["path"].startswith("models/pipeline/")
    }
    exported = json.loads((root / "models" / "registry.json").read_text())["models"]
    matched = {dir_md5(entry["files"]) for entry in exported} & outs
    assert matched == outs  # every committed model output is a registered entry, found by hash alone


def test_a_newer_run_of_known_content_refreshes_only_the_run_record(tmp_path: Path) -> None:
    """Same weights, a different run-specific file (SB3's model.zip, metadata.json): same id, one
    entry, and the entry's files follow the newest stage output, so its directory hash is the
    one the newest dvc.lock records (releases and fetch-by-id find it)."""
    from trade_agent.registry.release import dir_md5

    registry = ModelRegistry(tmp_path / "models")
    directory = model_dir(tmp_path, b"weights")
    (directory / "model.zip").write_bytes(b"run one")
    first = registry.register_model("cnn_lstm", directory, None, config(), GOOD, {"sha": "d1"})
    before = dir_md5(registry.get_model(first).files)
    (directory / "model.zip").write_bytes(b"run two")
    again = registry.register_model("cnn_lstm", directory, None, config(), GOOD, {"sha": "d1"})
    entry = ModelRegistry(tmp_path / "models").get_model(again)  # re-read from the store
    assert again == first and len(registry.list_models()) == 1
    assert entry.files["model.zip"]["sha256"] == hashlib.sha256(b"run two").hexdigest()
    assert dir_md5(entry.files) != before
    assert registry.validate_model_integrity(first)  # the new bytes are in the store
