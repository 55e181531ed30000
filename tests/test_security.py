"""Nothing read back from a store, an index or a JSON file can run code or write outside
its folder (issue 14). Each attack is built as a user of a shared store would build it,
with the checksums fixed up by the project's own functions."""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import json
import os
import pickle
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.test_registry import register
from trade_agent.config import FeaturesConfig
from trade_agent.errors import IntegrityError, PreprocessorError, UnsafePathError
from trade_agent.io import atomic_dir, atomic_path, path_inside, read_npz, sha256_file, write_json
from trade_agent.preprocessing.pipeline import PreprocessingPipeline
from trade_agent.registry import ModelRegistry
from trade_agent.registry.registry import _zip_content_hash
from trade_agent.registry.store import RegistryCorruptError
from trade_agent.training import PreprocessorManager

ROOT = Path(__file__).resolve().parents[1]


class _Forged(PreprocessingPipeline):
    """The project's own content_hash() over an edited spec: what an attacker can compute."""

    def __init__(self, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().__init__(spec["model_type"], spec["sequence_length"])
        self._spec, self._arrays = spec, arrays

    def to_spec(self) -> dict[str, Any]:
        return self._spec

    def state_arrays(self) -> dict[str, np.ndarray]:
        return self._arrays


def _saved(tmp_path: Path, market: pd.DataFrame, features: FeaturesConfig) -> tuple[PreprocessorManager, Path]:
    manager = PreprocessorManager(tmp_path / "pre")
    pipeline = manager.create_standard_pipeline("cnn_lstm", features=features)
    pipeline.fit_transform(market, fit_until=market["timestamp"].iloc[250])
    return manager, manager.save_pipeline(pipeline, "cnn_lstm", {})


def _inject(directory: Path, extra_steps: list[dict[str, Any]]) -> None:
    meta = json.loads((directory / "pipeline.json").read_text())
    meta["spec"]["steps"] += extra_steps
    meta["content_hash"] = _Forged(meta["spec"], read_npz(directory / "state.npz")).content_hash()
    write_json(directory / "pipeline.json", meta)


def _step(name: str, ref: str, **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "ref": ref, "kwargs": kwargs, "fitted": False, "state_keys": []}


def test_attack_1_a_json_preprocessor_cannot_run_a_shell_command(
    tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig
) -> None:
    manager, directory = _saved(tmp_path, market, tiny_features)
    marker = tmp_path / "marker"
    columns = dict(zip(["open", "high", "low"], ["sh", "-c", f"touch {marker}"], strict=True))
    _inject(
        directory,
        [
            _step("rename", "pandas:DataFrame.rename", columns=columns),
            _step("filter", "pandas:DataFrame.filter", items=list(columns.values())),
            _step("run", "subprocess:run"),
        ],
    )
    with pytest.raises(PreprocessorError) as refused:
        manager.load_pipeline(directory.name).transform(market)
    message = str(refused.value)
    assert "\n" not in message
    assert "'rename'" in message and "module 'pandas' is not allowed" in message
    assert "preprocessing.step_modules" in message
    assert not manager.validate_preprocessor_integrity(directory.name)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("ref", "refusal"),
    [
        ("os:system", "module 'os' is not allowed"),
        # An allowed module's imports are not its steps: steps.py imports pandas as pd.
        ("trade_agent.preprocessing.steps:pd", "defines no step function"),
        ("trade_agent.preprocessing.steps:np.save", "is not a top-level function"),
    ],
)
def test_attack_1_only_steps_defined_in_allowed_modules_load(
    tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig, ref: str, refusal: str
) -> None:
    manager, directory = _saved(tmp_path, market, tiny_features)
    _inject(directory, [_step("payload", ref, command=f"touch {tmp_path / 'marker'}")])
    with pytest.raises((PreprocessorError, IntegrityError), match=refusal) as refused:
        manager.load_pipeline(directory.name)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "marker").exists()


def test_a_standard_pipeline_loads_without_configuration(
    tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig
) -> None:
    manager, directory = _saved(tmp_path, market, tiny_features)
    loaded = PreprocessorManager(manager.root).load_pipeline(directory.name)
    assert [s.name for s in loaded.steps][-1] == "final_validation"


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        for umask in (0o022, 0o002, 0o077):
            os.umask(umask)
            plain, atomic = tmp_path / f"plain-{umask:o}", tmp_path / f"atomic-{umask:o}"
            with open(plain, "w") as handle:
                handle.write("x")
            with atomic_path(atomic) as tmp:
                tmp.write_text("x")
            assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
        assert stat.S_IMODE((tmp_path / "atomic-22").stat().st_mode) == 0o644
        os.umask(0o022)
        os.chmod(atomic, 0o600)  # left so by an earlier version: the next write mends it
        with atomic_path(atomic) as tmp:
            tmp.write_text("y")
        assert stat.S_IMODE(atomic.stat().st_mode) == 0o644
        with atomic_dir(tmp_path / "folder") as folder:
            (folder / "f").write_text("z")
        assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    finally:
        os.umask(previous)


# -- attack 2: names in an index or an export that leave their folder -------------------


def _tampered_registry(tmp_path: Path, edit: Any) -> tuple[ModelRegistry, str]:
    """A registered model whose index entry ``edit(index, model_id)`` then alters."""
    registry = ModelRegistry(tmp_path / "models", export=False)
    model = register(registry, tmp_path, b"weights")
    index = json.loads(registry.store.index_path.read_text())
    edit(index, model)  # by hand, as on a shared store: the registry itself refuses to write it
    with pytest.raises(RegistryCorruptError):
        registry.store._write(index, registry.store.read())
    registry.store.index_path.write_text(json.dumps(index))
    return registry, model


def _nothing_outside(tmp_path: Path, *names: str) -> None:
    # Every attack path resolves inside tmp_path (they climb from folders below it).
    for name in names:
        assert not list(tmp_path.rglob(name)), f"{name} was written"


def _file_named(name: str) -> Any:
    def edit(index: dict[str, Any], model: str) -> None:
        files = index["entries"][model]["files"]
        files[name] = files.pop("model.pt")

    return edit


def _id_named(name: str) -> Any:
    def edit(index: dict[str, Any], model: str) -> None:
        index["entries"][name] = dict(index["entries"][model], model_id=name)

    return edit


@pytest.mark.parametrize(
    ("edit", "query", "refusal"),
    [
        (_file_named("../../../../elsewhere/FILE"), None, "file name '../../../../elsewhere/FILE'"),
        (_file_named("/tmp/elsewhere/FILE"), None, "file name '/tmp/elsewhere/FILE'"),
        (_id_named("../../../elsewhere/ID"), "../../../elsewhere/ID", "model_id '../../../elsewhere/ID'"),
        (_id_named("sub/ID"), "sub/ID", "model_id 'sub/ID'"),
    ],
)
def test_attack_2_restore_refuses_names_that_leave_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, query: str | None, refusal: str
) -> None:
    monkeypatch.chdir(tmp_path)
    registry, model = _tampered_registry(tmp_path, edit)
    work = tmp_path / "deep" / "er" / "work"
    for attempt in (
        lambda: registry.restore(query or model, work / "restored"),
        lambda: registry.load_model_dir(query or model, work),
        lambda: registry.list_models(),
    ):
        with pytest.raises(RegistryCorruptError, match=re.escape(refusal)) as refused:
            attempt()
        assert "\n" not in str(refused.value) and "refused" in str(refused.value)
    assert not work.exists()
    _nothing_outside(tmp_path, "FILE", "ID", "elsewhere")


def test_attack_2_an_export_with_such_names_is_not_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    registry = ModelRegistry(tmp_path / "models")  # writes models/registry.json
    register(registry, tmp_path, b"weights")
    document = json.loads(registry.export_path.read_text())
    document["models"][0] |= {"model_id": "../../elsewhere/ID", "checksum": "0" * 64}
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    before = registry.store.index_path.read_bytes()
    with pytest.raises(RegistryCorruptError, match=r"models\[0\]: entry '../../elsewhere/ID': model_id"):
        registry.import_export(forged)
    assert registry.store.index_path.read_bytes() == before
    _nothing_outside(tmp_path, "ID", "elsewhere")


def test_store_objects_are_named_by_their_sha256_only(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models", export=False)
    with pytest.raises(IntegrityError, match="is not a sha256"):
        registry.store.object_path("../" * 4 + "elsewhere")


def test_writes_stay_inside_their_folder_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "link").symlink_to(outside)
    assert path_inside(tmp_path / "target", "sub/file.json") == tmp_path / "target" / "sub" / "file.json"
    for name in ("link/file", "../outside/file", "/abs", "a/../../b", "", "a//b", ".hidden"):
        with pytest.raises(UnsafePathError):
            path_inside(tmp_path / "target", name)


# -- attack 3: a forged SB3 zip with matching checksums -----------------------------------


class _Payload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def _forge_sb3_zip(genuine: Path, forged: Path, command: str) -> None:
    """``genuine`` with its policy class replaced by a pickle that runs ``command``."""
    with zipfile.ZipFile(genuine) as source, zipfile.ZipFile(forged, "w") as out:
        for name in source.namelist():
            content = source.read(name)
            if name == "data":
                data = json.loads(content)
                data["policy_class"][":serialized:"] = base64.b64encode(pickle.dumps(_Payload(command))).decode()
                content = json.dumps(data).encode()
            out.writestr(name, content)


def test_attack_3_a_forged_sb3_zip_is_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stable_baselines3 import PPO

    from tests.test_agent_checkpoints import PANELS, load_trained_action, tiny_params
    from trade_agent.agents.policy_io import load_sb3_model
    from trade_agent.agents.train import train_agent

    monkeypatch.chdir(tmp_path)
    run = train_agent("ppo", tiny_params("ppo", total=64), PANELS, tmp_path / "agent")
    registry = ModelRegistry(tmp_path / "models", export=False)
    model_id = registry.register_model("ppo", run.agent_dir, None, {}, run.metrics, {})
    forged = tmp_path / "forged.zip"
    _forge_sb3_zip(run.agent_dir / "model.zip", forged, f"touch {tmp_path / 'proof'}")
    with contextlib.suppress(Exception):  # the payload is live: PPO.load runs it
        PPO.load(forged, device="cpu")
    assert (tmp_path / "proof").exists()

    marker = tmp_path / "marker"
    _forge_sb3_zip(run.agent_dir / "model.zip", forged, f"touch {marker}")
    sha = sha256_file(forged)
    registry.store.add_object(forged, sha)
    with registry.store.locked() as index:  # the entry fixed up with the project's own hashes
        info = index["entries"][model_id]["files"]["model.zip"]
        info |= {"sha256": sha, "md5": hashlib.md5(forged.read_bytes()).hexdigest(), "size": forged.stat().st_size}
        info["content_sha256"] = _zip_content_hash(forged)
    assert registry.validate_model_integrity(model_id)  # the checksums cannot tell

    model = load_sb3_model(registry, model_id, tmp_path / "work")
    assert not marker.exists()
    obs = np.zeros((1, *model.observation_space.shape), np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], load_trained_action(run.agent_dir, obs))


# -- nothing we load can run code: the invariant, checked on the source -------------------

_SB3_LOADERS = {"PPO", "SAC", "TD3", "BaseAlgorithm", "algorithms"}


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _keyword(call: ast.Call, name: str) -> object:
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else None


def test_no_code_path_unpickles_or_imports_names_it_reads() -> None:
    """pickle/cloudpickle are never imported, SB3's ``.load`` is never called, every
    ``torch.load`` passes weights_only=True and every ``np.load`` allow_pickle=False, and
    import_module is used only where an allow-list guards it."""
    offences = []
    for path in sorted((ROOT / "trade_agent").rglob("*.py")) + sorted((ROOT / "stages").glob("*.py")):
        tree = ast.parse(path.read_text())
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(str(n).split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib") for n in names):
                    offences.append(f"{where}:{node.lineno} imports a pickler")
        for call in _calls(tree):
            func = call.func
            if not isinstance(func, ast.Attribute):
                continue
            owner = func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if isinstance(owner, ast.Subscript) and isinstance(owner.value, ast.Name):
                owner_name = owner.value.id
            if func.attr == "load" and owner_name in _SB3_LOADERS:
                offences.append(f"{where}:{call.lineno} calls SB3's load (unpickles)")
            if func.attr == "load" and owner_name == "torch" and _keyword(call, "weights_only") is not True:
                offences.append(f"{where}:{call.lineno} torch.load without weights_only=True")
            if func.attr == "load" and owner_name == "np" and _keyword(call, "allow_pickle") is not False:
                offences.append(f"{where}:{call.lineno} np.load without allow_pickle=False")
            allowed_import = {"trade_agent/preprocessing/pipeline.py", "trade_agent/cnn_lstm/distributed/worker.py"}
            if func.attr == "import_module" and str(where) not in allowed_import:
                offences.append(f"{where}:{call.lineno} imports a module by name")
    assert not offences, offences


def test_attack_3_an_agent_entry_without_its_pickle_free_form_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_agent_checkpoints import PANELS, tiny_params
    from trade_agent.agents.policy_io import load_sb3_model
    from trade_agent.agents.train import train_agent

    monkeypatch.chdir(tmp_path)
    run = train_agent("ppo", tiny_params("ppo", total=64), PANELS, tmp_path / "agent")
    forged = tmp_path / "forged.zip"
    _forge_sb3_zip(run.agent_dir / "model.zip", forged, f"touch {tmp_path / 'marker'}")
    (run.agent_dir / "policy.pt").unlink()  # only the zip is left to load from
    (run.agent_dir / "policy.json").unlink()
    forged.replace(run.agent_dir / "model.zip")
    registry = ModelRegistry(tmp_path / "models", export=False)
    model_id = registry.register_model("ppo", run.agent_dir, None, {}, run.metrics, {})
    with pytest.raises(IntegrityError, match=r"not a registered PPO/SAC/TD3 agent with policy\.pt") as refused:
        load_sb3_model(registry, model_id, tmp_path / "work")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "marker").exists()
