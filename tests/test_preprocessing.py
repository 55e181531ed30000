"""Versioned preprocessing: API, persistence without pickle, exact replay, versions, integrity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.steps_for_tests import add_spread
from trade_agent.config import FeaturesConfig, SentimentConfig
from trade_agent.errors import ConfigError, IntegrityError, PreprocessorError, PreprocessorNotFoundError, SchemaError
from trade_agent.preprocessing.manager import MODEL_TYPES
from trade_agent.training import PreprocessorManager
from trade_agent.training.preprocessor_manager import PreprocessorManager as SeedPathManager

ROOT = Path(__file__).resolve().parents[1]


def _fitted(manager: PreprocessorManager, market: pd.DataFrame, features: FeaturesConfig, model_type: str = "cnn_lstm"):
    pipeline = manager.create_standard_pipeline(model_type, features=features)
    out = pipeline.fit_transform(market, fit_until=market["timestamp"].iloc[250])
    return pipeline, out


def test_seed_import_paths_are_the_same_class() -> None:
    assert SeedPathManager is PreprocessorManager


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_standard_templates_follow_the_seed_design(
    tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig, model_type: str
) -> None:
    manager = PreprocessorManager(tmp_path)
    pipeline, out = _fitted(manager, market, tiny_features, model_type)
    names = [s.name for s in pipeline.steps]
    assert names[:3] == ["validate", "fill_missing", "indicators"]
    assert "scale" in names and "final_validation" in names
    rl_like = model_type in ("ppo", "sac", "td3", "ensemble")
    assert ("reward_shaping" in names) == rl_like and ("state_normalization" in names) == rl_like
    assert np.isfinite(out[pipeline.feature_names].to_numpy()).all()
    assert not set(pipeline.feature_names) & {"open", "high", "low", "close", "volume"}
    if model_type == "hybrid":
        # Dual preprocessing: the encoder sees exactly what a cnn_lstm pipeline produces,
        # the policy a state-normalised copy plus reward-shaping features.
        assert names[-3:] == ["policy_view", "final_validation", "unified_validation"]
        views = pipeline.views()
        cnn_lstm, cnn_out = _fitted(manager, market, tiny_features, "cnn_lstm")
        assert views["encoder"] == cnn_lstm.feature_names
        assert {f"policy__{c}" for c in views["encoder"]} < set(views["policy"])
        assert any(c.startswith("policy__rs_") for c in views["policy"])
        pd.testing.assert_frame_equal(
            out[views["encoder"]].iloc[-100:].reset_index(drop=True),
            cnn_out[views["encoder"]].iloc[-100:].reset_index(drop=True),
        )
    if model_type in ("cnn_lstm", "hybrid"):
        assert pipeline.sequence_length == tiny_features.sequence_length
        windows, keys = pipeline.transform_to_sequences(market)
        cnn_view = pipeline.views().get("encoder", pipeline.feature_names)
        assert windows.shape[1:] == (tiny_features.sequence_length, len(cnn_view))
        assert len(windows) == len(keys)
        last = out[out["symbol"] == keys["symbol"].iloc[-1]][cnn_view].to_numpy(np.float32)[
            -tiny_features.sequence_length :
        ]
        np.testing.assert_array_equal(windows[-1], last)


def test_save_load_roundtrip_is_bit_identical_in_a_fresh_process(
    tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig
) -> None:
    manager = PreprocessorManager(tmp_path / "pre")
    pipeline, _ = _fitted(manager, market, tiny_features, "ppo")
    path = manager.save_pipeline(pipeline, "ppo", {"rows": len(market)})
    assert sorted(p.name for p in path.iterdir()) == ["pipeline.json", "state.npz"]
    new_data = market.copy()
    new_data[["open", "high", "low", "close"]] *= 1.1  # unseen data
    new_data.to_parquet(tmp_path / "new.parquet")
    expected = pipeline.transform(new_data)
    script = (
        "import sys, pandas as pd\n"
        "from trade_agent.training import PreprocessorManager\n"
        f"p = PreprocessorManager({str(tmp_path / 'pre')!r}).load_pipeline({path.name!r})\n"
        f"p.transform(pd.read_parquet({str(tmp_path / 'new.parquet')!r})).to_parquet(sys.argv[1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out.parquet")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    replayed = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(replayed, expected.reset_index(drop=True), check_exact=True)


def test_nothing_is_pickled(tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig) -> None:
    manager = PreprocessorManager(tmp_path)
    pipeline, _ = _fitted(manager, market, tiny_features)
    path = manager.save_pipeline(pipeline, "cnn_lstm", {})
    spec = json.loads((path / "pipeline.json").read_text())
    steps = {step["name"]: step for step in spec["spec"]["steps"]}
    assert steps["scale"]["ref"] == "trade_agent.preprocessing.steps:ScaleFeatures"
    with np.load(path / "state.npz", allow_pickle=False) as arrays:  # would raise on pickled objects
        assert "scale.center" in arrays.files


def test_custom_steps_and_lambdas(tmp_path: Path, market: pd.DataFrame) -> None:
    manager = PreprocessorManager(tmp_path, step_modules=["tests.steps_for_tests"])
    pipeline = manager.create_pipeline("cnn_lstm").add_step("spread", add_spread, scale=100.0)
    out = pipeline.fit_transform(market)
    assert "spread" in out.columns
    saved = manager.load_pipeline(manager.save_pipeline(pipeline, "cnn_lstm", {}).name)
    assert saved.steps[0].kwargs == {"scale": 100.0}
    with pytest.raises(PreprocessorError, match=r"module 'tests.steps_for_tests' is not allowed.*step_modules"):
        PreprocessorManager(tmp_path / "strict").save_pipeline(pipeline, "cnn_lstm", {})  # not loadable there

    with_lambda = manager.create_pipeline("cnn_lstm").add_step("double", lambda df: df)
    with_lambda.fit_transform(market)  # usable in memory ...
    with pytest.raises(PreprocessorError, match=r"step 'double' uses .*<lambda>, which cannot be saved"):
        manager.save_pipeline(with_lambda, "cnn_lstm", {})  # ... but never pickled

    def closure(df: pd.DataFrame) -> pd.DataFrame:
        return df

    with_closure = manager.create_pipeline("cnn_lstm").add_step("c", closure)
    with_closure.fit_transform(market)
    with pytest.raises(PreprocessorError, match="closure"):
        manager.save_pipeline(with_closure, "cnn_lstm", {})


def test_unsaveable_callables_are_refused_at_save(tmp_path: Path, market: pd.DataFrame) -> None:
    import functools

    manager = PreprocessorManager(tmp_path)
    for func in (functools.partial(add_spread, scale=2.0), _Holder().method, _Holder()):
        pipeline = manager.create_pipeline("cnn_lstm").add_step("s", func)
        pipeline.fit_transform(market)
        with pytest.raises(PreprocessorError, match="cannot be saved"):
            manager.save_pipeline(pipeline, "cnn_lstm", {})
    assert not list(tmp_path.iterdir())


class _Holder:
    def method(self, df: pd.DataFrame) -> pd.DataFrame:
        return df

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        return df


def test_extra_input_columns_never_become_features(tmp_path: Path, market: pd.DataFrame, tiny_features) -> None:
    labelled = market.assign(target_direction=1, stray=0.0)
    pipeline = PreprocessorManager(tmp_path).create_standard_pipeline("cnn_lstm", features=tiny_features)
    pipeline.fit_transform(labelled)
    assert "target_direction" not in pipeline.feature_names and "stray" not in pipeline.feature_names


def test_corrupt_entries_and_bad_ids(tmp_path: Path, market: pd.DataFrame, tiny_features) -> None:
    manager = PreprocessorManager(tmp_path)
    good = manager.save_pipeline(_fitted(manager, market, tiny_features)[0], "cnn_lstm", {})
    bad = tmp_path / "preprocessor_cnn_lstm_v9.0.0"
    bad.mkdir()
    (bad / "pipeline.json").write_text("{not json")
    assert [m["id"] for m in manager.list_preprocessors()] == [good.name]  # the good one stays visible
    report = manager.validate_preprocessor_integrity(bad.name)
    assert not report and "is not valid JSON" in report.problems[0]
    with pytest.raises(PreprocessorNotFoundError, match="is not a preprocessor id"):
        manager.get_preprocessor_info("../outside")
    ppo = manager.create_standard_pipeline("ppo", features=tiny_features)
    ppo.fit_transform(market)
    with pytest.raises(PreprocessorError, match="built for 'ppo' but is saved as 'cnn_lstm'"):
        manager.save_pipeline(ppo, "cnn_lstm", {})


def test_ensemble_coordinates_member_pipelines(tmp_path: Path, market: pd.DataFrame, tiny_features) -> None:
    manager = PreprocessorManager(tmp_path)
    ids = []
    for model_type in ("cnn_lstm", "ppo"):
        pipeline, _ = _fitted(manager, market, tiny_features, model_type)
        ids.append(manager.save_pipeline(pipeline, model_type, {}).name)
    ensemble = manager.create_ensemble_preprocessing(ids)
    outputs = ensemble.transform(market)
    assert set(outputs) == set(ids)
    a, b = (outputs[i] for i in ids)
    pd.testing.assert_frame_equal(a[["timestamp", "symbol"]], b[["timestamp", "symbol"]])  # same bars, same order
    custom = manager.create_pipeline("cnn_lstm").add_step("spread", add_spread)
    custom.fit_transform(market[["timestamp", "symbol", "high", "low", "close"]])
    with pytest.raises(PreprocessorError, match="ensemble members need different inputs"):
        manager.check_compatibility([manager.load_pipeline(ids[0]), custom])


def test_transform_names_missing_columns(tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig) -> None:
    pipeline, _ = _fitted(PreprocessorManager(tmp_path), market, tiny_features)
    with pytest.raises(SchemaError, match=r"input is missing column\(s\) volume that preprocessor"):
        pipeline.transform(market.rename(columns={"volume": "vol"}))


def test_idempotent_save_and_semantic_versions(
    tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig
) -> None:
    manager = PreprocessorManager(tmp_path)
    first, _ = _fitted(manager, market, tiny_features)
    a = manager.save_pipeline(first, "cnn_lstm", {})
    again, _ = _fitted(manager, market, tiny_features)
    assert manager.save_pipeline(again, "cnn_lstm", {}) == a  # same content: same id
    refit = manager.create_standard_pipeline("cnn_lstm", features=tiny_features)
    refit.fit_transform(market, fit_until=market["timestamp"].iloc[200])  # same interface, new fit
    b = manager.save_pipeline(refit, "cnn_lstm", {})
    longer = manager.create_standard_pipeline("cnn_lstm", features=tiny_features, sequence_length=20)
    longer.fit_transform(market)  # new interface (sequence length)
    c = manager.save_pipeline(longer, "cnn_lstm", {})
    assert [a.name, b.name, c.name] == [
        "preprocessor_cnn_lstm_v1.0.0",
        "preprocessor_cnn_lstm_v1.1.0",
        "preprocessor_cnn_lstm_v2.0.0",
    ]
    assert [m["version"] for m in manager.list_preprocessors("cnn_lstm")] == ["1.0.0", "1.1.0", "2.0.0"]
    assert manager.list_preprocessors("ppo") == []
    info = manager.get_preprocessor_info(c.name)
    assert info["spec"]["sequence_length"] == 20 and info["model_type"] == "cnn_lstm"


def test_integrity_detects_tampering(tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig) -> None:
    manager = PreprocessorManager(tmp_path)
    pipeline, _ = _fitted(manager, market, tiny_features)
    path = manager.save_pipeline(pipeline, "cnn_lstm", {})
    assert manager.validate_preprocessor_integrity(path.name)
    meta = json.loads((path / "pipeline.json").read_text())
    next(s for s in meta["spec"]["steps"] if s["name"] == "scale")["kwargs"]["clip"] = 50.0
    (path / "pipeline.json").write_text(json.dumps(meta))
    report = manager.validate_preprocessor_integrity(path.name)
    assert not report and "content hash differs" in report.problems[0]
    with pytest.raises(IntegrityError):
        manager.load_pipeline(path.name)
    (path / "state.npz").write_bytes(b"corrupt")
    assert "checksum differs" in manager.validate_preprocessor_integrity(path.name).problems[0]


def test_errors_for_unknown_ids_types_and_unfitted(tmp_path: Path) -> None:
    manager = PreprocessorManager(tmp_path)
    with pytest.raises(PreprocessorNotFoundError, match="preprocessor 'nope' not found"):
        manager.load_pipeline("nope")
    with pytest.raises(ConfigError, match="model type 'lstm' is unknown"):
        manager.create_standard_pipeline("lstm")
    with pytest.raises(ConfigError, match=r"sentiment\.enabled is true but no sentiment file is configured"):
        manager.create_standard_pipeline("cnn_lstm", include_sentiment=True, sentiment=SentimentConfig(enabled=True))


def test_an_unfitted_pipeline_is_saved_as_a_template(
    tmp_path: Path, market: pd.DataFrame, tiny_features: FeaturesConfig
) -> None:
    manager = PreprocessorManager(tmp_path)
    template = manager.create_standard_pipeline("cnn_lstm", features=tiny_features)
    path = manager.save_pipeline(template, "cnn_lstm", {"note": "template"})
    assert sorted(p.name for p in path.iterdir()) == ["pipeline.json", "state.npz"]
    (listed,) = manager.list_preprocessors("cnn_lstm")
    assert listed["fitted"] is False and listed["n_features"] is None
    loaded = manager.load_pipeline(path.name)
    assert not loaded.fitted and [s.name for s in loaded.steps] == [s.name for s in template.steps]
    with pytest.raises(PreprocessorError, match="pipeline is not fitted; call fit_transform"):
        loaded.transform(market)
    fitted_out = loaded.fit_transform(market, fit_until=market["timestamp"].iloc[250])
    expected, _ = _fitted(manager, market, tiny_features)
    assert loaded.feature_names == expected.feature_names
    pd.testing.assert_frame_equal(fitted_out, expected.transform(market))
    fitted = manager.save_pipeline(loaded, "cnn_lstm", {})
    assert fitted != path and manager.list_preprocessors("cnn_lstm")[-1]["fitted"] is True


def test_a_script_local_step_is_refused_with_the_way_to_save_it(tmp_path: Path) -> None:
    script = (
        "from trade_agent.training import PreprocessorManager\n"
        "def normalize_features(df):\n"
        "    return df\n"
        "manager = PreprocessorManager('pre')\n"
        "pipeline = manager.create_pipeline('cnn_lstm').add_step('normalize', normalize_features)\n"
        "manager.save_pipeline(pipeline, 'cnn_lstm', {})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("trade_agent.errors.PreprocessorError: step 'normalize' uses __main__:normalize_features")
    assert "my_steps.py" in message and "preprocessing.step_modules in params.yaml" in message
    assert "PreprocessorManager(step_modules=['my_steps'])" in message
    assert not (tmp_path / "pre").exists()


def test_step_modules_default_to_params_yaml(tmp_path: Path, market: pd.DataFrame) -> None:
    (tmp_path / "params.yaml").write_text("preprocessing:\n  step_modules: [tests.steps_for_tests]\n")
    manager = PreprocessorManager(tmp_path / "pre")  # cwd is tmp_path
    assert manager.step_modules == ("tests.steps_for_tests",)
    pipeline = manager.create_pipeline("cnn_lstm").add_step("spread", add_spread)
    pipeline.fit_transform(market)
    assert manager.load_pipeline(manager.save_pipeline(pipeline, "cnn_lstm", {}).name).steps[0].func is add_spread
    assert PreprocessorManager(tmp_path / "pre", step_modules=[]).step_modules == ()
