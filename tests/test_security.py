"""Nothing read back from a store, an index or a JSON file can run code or write outside
its folder (issue 14). Each attack is built as a user of a shared store would build it,
with the checksums fixed up by the project's own functions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trade_agent.config import FeaturesConfig
from trade_agent.errors import IntegrityError, PreprocessorError
from trade_agent.io import atomic_path, read_npz, write_json
from trade_agent.preprocessing.pipeline import PreprocessingPipeline
from trade_agent.training import PreprocessorManager


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
        os.chmod(atomic, 0o640)  # an existing file keeps its mode, as with open()
        with atomic_path(atomic) as tmp:
            tmp.write_text("y")
        assert stat.S_IMODE(atomic.stat().st_mode) == 0o640
    finally:
        os.umask(previous)
