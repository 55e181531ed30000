"""The seed's training API and `trade-agent train cnn-lstm-enhanced`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tests.conftest import tiny_params_dict
from trade_agent.cli.main import app
from trade_agent.cnn_lstm.embed import PROBABILITY_COLUMNS, compute_embeddings
from trade_agent.cnn_lstm.stage import load_window_data
from trade_agent.cnn_lstm.store import load_cnn_lstm
from trade_agent.config import params_from_dict
from trade_agent.data.synthetic import SyntheticSpec, generate_synthetic
from trade_agent.registry import ModelRegistry
from trade_agent.training import TrainingConfig, TrainingResult, UnifiedTrainingManager
from trade_agent.training.unified_manager import UnifiedTrainingManager as SeedPathManager

runner = CliRunner()


@pytest.fixture
def bars_file(tmp_path: Path) -> Path:
    path = tmp_path / "bars.csv"
    generate_synthetic(SyntheticSpec(n_symbols=2, n_bars=300, seed=3)).to_csv(path, index=False)
    return path


def test_train_model_returns_real_metrics(bars_file: Path, tmp_path: Path) -> None:
    assert SeedPathManager is UnifiedTrainingManager
    manager = UnifiedTrainingManager(checkpoint_root=tmp_path / "temp")
    config = TrainingConfig(
        "cnn_lstm",
        str(bars_file),
        str(tmp_path / "out"),
        epochs=2,
        batch_size=64,
        params=params_from_dict(tiny_params_dict()),
        sequence_length=8,
    )
    result = manager.train_model(config)
    assert isinstance(result, TrainingResult) and result.status == "completed", result.error_message
    assert Path(result.model_path, "model.pt").is_file()
    assert Path(result.preprocessor_path, "pipeline.json").is_file()
    assert np.isfinite(result.metrics["val/loss"])
    # test/accuracy is the saved model's hit rate on the test windows, recomputed here from
    # the model directory and the features it was trained on (not another split, not a constant).
    model, _ = load_cnn_lstm(Path(result.model_path))
    data, _ = load_window_data(tmp_path / "out" / "data" / "features")
    accuracy = {}
    for split in ("val", "test"):
        ends = data.ends[split]
        with torch.no_grad():
            predicted = model(data.windows(ends))[0].argmax(1)
        accuracy[split] = int((predicted == data.direction[ends]).sum()) / len(ends)
    assert len(data.ends["test"]) > 20
    assert result.metrics["test/accuracy"] == pytest.approx(accuracy["test"], abs=1e-12)
    assert result.metrics["val/accuracy"] == pytest.approx(accuracy["val"], abs=1e-12)
    # The same number was written to metrics.json (and, below, recorded in the registry entry).
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["test/accuracy"] == result.metrics["test/accuracy"]
    assert json.loads(Path(result.model_path, "config.json").read_text())["spec"]["sequence_length"] == 8
    assert result.duration > 0
    # Registered: the id carries the grade the registry computed from these metrics.
    registry = ModelRegistry(tmp_path / "models")
    assert registry.get_model(result.model_id).performance_grade == result.performance_grade
    assert registry.get_model(result.model_id).metrics["test/accuracy"] == result.metrics["test/accuracy"]
    assert result.model_id.startswith(f"cnn_lstm_v1.0.0_grade_{result.performance_grade}_acc_")
    status = manager.get_training_status(result.training_id)
    assert status["status"] == "completed" and manager.list_active_trainings() == []


def test_failures_are_reported_not_raised(tmp_path: Path) -> None:
    manager = UnifiedTrainingManager(checkpoint_root=tmp_path / "temp")
    missing = manager.train_model(TrainingConfig("cnn_lstm", str(tmp_path / "nope.csv"), str(tmp_path / "o")))
    assert missing.status == "failed" and "nope.csv: no such file" in missing.error_message
    typo = manager.train_model(TrainingConfig("cnn_lstm", "sample", str(tmp_path / "o"), hidden=3))
    assert typo.status == "failed" and "unknown option 'hidden'" in typo.error_message
    later = manager.train_model(TrainingConfig("hybrid", "sample", str(tmp_path / "o")))
    assert later.status == "failed" and "not available yet" in later.error_message
    assert manager.get_training_status(later.training_id)["status"] == "failed"


def test_active_trainings_are_listed_while_running(bars_file: Path, tmp_path: Path) -> None:
    manager = UnifiedTrainingManager(checkpoint_root=tmp_path / "temp")
    seen: list[list[dict]] = []
    config = TrainingConfig(
        "cnn_lstm",
        str(bars_file),
        str(tmp_path / "out"),
        epochs=1,
        batch_size=64,
        params=params_from_dict(tiny_params_dict()),
    )
    thread = threading.Thread(target=manager.train_model, args=(config,))
    thread.start()
    while thread.is_alive():
        seen.append(manager.list_active_trainings())
        time.sleep(0.01)
    thread.join()
    assert any(active and active[0]["status"] == "running" for active in seen)
    assert manager.list_active_trainings() == []


def test_embeddings_cover_every_row_with_a_full_window(tiny_features_dir: Path, tmp_path: Path) -> None:
    from trade_agent.cnn_lstm.stage import train_cnn_lstm

    params = params_from_dict(tiny_params_dict())
    run = train_cnn_lstm(params, tiny_features_dir, tmp_path / "m", checkpoint_root=None)
    frame = pd.read_parquet(tiny_features_dir / "features.parquet")
    embeddings = compute_embeddings(tmp_path / "m", frame)
    length = params.features.sequence_length
    expected = frame.groupby("symbol").size().sub(length - 1).sum()
    assert len(embeddings) == expected
    assert set(embeddings["split"]) == {"train", "val", "test", "excluded"}
    emb_cols = [c for c in embeddings.columns if c.startswith("emb_")]
    assert len(emb_cols) == run.model.embedding_dim
    np.testing.assert_allclose(embeddings[list(PROBABILITY_COLUMNS)].sum(axis=1), 1.0, rtol=1e-5)
    # Row k of the embeddings equals encoding that row's window directly.
    import torch

    row = embeddings.iloc[5]
    rows = frame[frame["symbol"] == row["symbol"]].reset_index(drop=True)
    end = int(np.flatnonzero(rows["timestamp"] == row["timestamp"])[0])
    names = json.loads((tmp_path / "m" / "config.json").read_text())["feature_names"]
    window = torch.tensor(rows[names].to_numpy(np.float32)[end - length + 1 : end + 1])[None]
    with torch.no_grad():
        direct = run.model.eval().encode(window)[0].numpy()
    np.testing.assert_allclose(row[emb_cols].to_numpy(np.float32), direct, rtol=1e-5, atol=1e-6)


def test_cli_trains_and_prints_metrics(bars_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "cnn-lstm-enhanced", str(bars_file), "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    assert payload["model_path"] == str(Path("models/runs/cnn_lstm/model"))
    assert set(payload["metrics"]) >= {"val/accuracy", "test/accuracy", "test/ic"}
    table = runner.invoke(app, ["train", "cnn-lstm", str(bars_file), "--epochs", "1", "--sequence-length", "6"])
    assert table.exit_code == 0, table.output
    assert "balanced_accuracy" in table.output and "directional_accuracy" in table.output


def test_cli_distributed_options_need_distributed(bars_file: Path) -> None:
    result = runner.invoke(app, ["train", "cnn-lstm-enhanced", str(bars_file), "--zero-stage", "2"])
    assert result.exit_code == 2
    assert "--zero-stage needs --distributed" in result.output


def test_cli_bad_data_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "cnn-lstm-enhanced", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: ") and "no such file" in result.output


def test_params_data_section_is_kept_and_resume_dir_is_respected(tmp_path: Path) -> None:
    """DATA picks the source; how to read it (date_format...) still comes from params."""
    frame = generate_synthetic(SyntheticSpec(n_symbols=1, n_bars=300, seed=3))
    frame["timestamp"] = frame["timestamp"].dt.strftime("%d.%m.%Y")
    frame.drop(columns="symbol").to_csv(tmp_path / "eu.csv", index=False)
    raw = tiny_params_dict()
    raw["data"]["date_format"] = "%d.%m.%Y"
    mine = tmp_path / "my-checkpoints"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    manager = UnifiedTrainingManager(checkpoint_root=tmp_path / "temp", registry_root=tmp_path / "models")
    result = manager.train_model(
        TrainingConfig(
            "cnn_lstm",
            str(tmp_path / "eu.csv"),
            str(tmp_path / "out"),
            epochs=1,
            batch_size=64,
            params=params_from_dict(raw),
            resume_from=str(mine),
        )
    )
    assert result.status == "completed", result.error_message
    assert (mine / "notes.txt").read_text() == "keep me" and not (mine / "checkpoint.pt").exists()


def test_cli_zero_epochs_is_an_error_not_a_default(bars_file: Path) -> None:
    result = runner.invoke(app, ["train", "cnn-lstm-enhanced", str(bars_file), "--epochs", "0"])
    assert result.exit_code == 2 and "cnn_lstm.epochs: must be >= 1, got 0" in result.output


def test_windows_refuse_unsorted_frames(tiny_features_dir: Path) -> None:
    from trade_agent.cnn_lstm.windows import WindowData
    from trade_agent.errors import SchemaError

    frame = pd.read_parquet(tiny_features_dir / "features.parquet")
    names = json.loads((tiny_features_dir / "schema.json").read_text())["feature_names"]
    with pytest.raises(SchemaError, match="sorted by symbol, then time"):
        WindowData.from_frame(frame.sort_values("timestamp"), names, 5)


def test_cli_trains_agents_on_a_new_or_a_registered_cnn_lstm(bars_file: Path, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    first = runner.invoke(
        app, ["train", "ppo", str(bars_file), "--cnn-lstm-model", "new", "--timesteps", "128", "--json"]
    )
    assert first.exit_code == 0, first.output
    ppo = json.loads(first.output[first.output.index("{") :])
    registry = ModelRegistry("models")
    (cnn_lstm,) = registry.list_models("cnn_lstm")
    assert registry.get_model(ppo["model_id"]).dependencies == [cnn_lstm.model_id]
    assert {"val/sharpe", "test/sharpe", "test/calmar", "test/turnover"} <= set(ppo["metrics"])

    second = runner.invoke(
        app,
        ["train", "sac", str(bars_file), "--cnn-lstm-model", cnn_lstm.model_id, "--timesteps", "96", "--n-envs", "2"],
    )
    assert second.exit_code == 0, second.output
    assert "registered sac_v1.0.0" in second.output
    (sac,) = registry.list_models("sac")
    assert sac.dependencies == [cnn_lstm.model_id] and len(registry.list_models("cnn_lstm")) == 1
    assert sac.dataset_info == {
        "cnn_lstm": cnn_lstm.model_id,
        "preprocessor_id": cnn_lstm.dataset_info["preprocessor_id"],
    }
    # The registered model's own preprocessor scaled the data (not a refit).
    schema = json.loads(Path("models/runs/sac/data/features/schema.json").read_text())
    assert (
        schema["preprocessor_id"]
        == json.loads(Path("models/runs/ppo/cnn_lstm/config.json").read_text())["preprocessor_id"]
    )

    wrong = runner.invoke(app, ["train", "td3", str(bars_file), "--cnn-lstm-model", ppo["model_id"]])
    assert wrong.exit_code == 2
    assert wrong.output.startswith("error: ppo_v1.0.0") and "is a ppo model, not cnn_lstm" in wrong.output
    unknown = runner.invoke(app, ["train", "td3", str(bars_file), "--cnn-lstm-model", "cnn_lstm_v9"])
    assert unknown.exit_code == 2 and "cnn_lstm_v9" in unknown.output and len(unknown.output.splitlines()) == 1


def test_corrupted_upstream_fails_before_any_data_work(tiny_stage2: dict[str, Path], tmp_path: Path) -> None:
    from trade_agent.cnn_lstm.registration import register_cnn_lstm
    from trade_agent.errors import IntegrityError

    params = params_from_dict(tiny_params_dict())
    registry = ModelRegistry(tmp_path / "models", grading=params.grading)
    model_id = register_cnn_lstm(tiny_stage2["cnn_lstm"], params, registry)
    assert registry.check_upstream([model_id]) == [model_id]
    weights = registry.get_model(model_id).files["model.pt"]["sha256"]
    stored = registry.store.object_path(weights)
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes()[:-8])  # a truncated copy in the store

    manager = UnifiedTrainingManager(checkpoint_root=tmp_path / "temp", registry_root=tmp_path / "models")
    out = tmp_path / "run"
    result = manager.train_model(TrainingConfig("ppo", "synthetic", str(out), params=params, cnn_lstm_model=model_id))
    assert result.status == "failed" and isinstance(result.exception, IntegrityError)
    assert result.error_message.startswith(f"upstream model {model_id}: {model_id}/model.pt")
    assert "retrain it before training on it" in result.error_message
    assert not out.exists()  # failed before preparing data or training anything
