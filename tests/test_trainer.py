"""Stage-1 training: it learns what is there (and only that), is deterministic, resumes
exactly after SIGKILL, and degrades loudly when CUDA is missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import tiny_params_dict
from trade_agent.cnn_lstm import device as device_module
from trade_agent.cnn_lstm.device import DeviceError, select_device
from trade_agent.cnn_lstm.stage import load_window_data, train_cnn_lstm
from trade_agent.cnn_lstm.trainer import class_weights
from trade_agent.config import params_from_dict
from trade_agent.data.ingest import prepare
from trade_agent.errors import ConfigError
from trade_agent.features.build import run_features_stage
from trade_agent.io import read_json

CLI = [sys.executable, "-m", "trade_agent.cli"]
ROOT = Path(__file__).resolve().parents[1]
LEARNING = {
    "features": {"sequence_length": 10},
    "labels": {"horizon": 1, "dead_zone": 0.0},
    "cnn_lstm": {
        "epochs": 8,
        "class_weighting": False,
        "conv_filters": [16],
        "kernel_sizes": [3],
        "lstm_hidden": 32,
        "attention_heads": 0,
        "batch_size": 128,
        "patience": 3,
        "learning_rate": 0.003,
    },
    "base": {"threads": 2},
}


def _planted(tmp_path: Path, ar: float) -> tuple[float, float, float]:
    """(model accuracy, oracle accuracy, chance) on the test split of AR(ar) data."""
    params = params_from_dict(
        {
            **LEARNING,
            "data": {"source": "synthetic", "synthetic_symbols": 4, "synthetic_bars": 6000, "synthetic_ar": ar},
        }
    )
    prepare(params.data, tmp_path / "prepared", params.base.seed)
    run_features_stage(params, tmp_path / "prepared" / "market.parquet", tmp_path / "features")
    run = train_cnn_lstm(params, tmp_path / "features", tmp_path / "model", checkpoint_root=None)

    data, _ = load_window_data(tmp_path / "features")
    frame = pd.read_parquet(tmp_path / "features" / "features.parquet")
    test = frame.iloc[data.ends["test"].numpy()]
    market = pd.read_parquet(tmp_path / "prepared" / "market.parquet")
    market["r"] = np.log(market["close"]).groupby(market["symbol"]).diff()
    r_t = test.merge(market, on=["timestamp", "symbol"], how="left")["r"].to_numpy()
    # The Bayes classifier knows E[r(t+1) | past] = ar * r(t): up iff ar * r(t) > 0.
    oracle = np.where(ar * r_t > 0, 2, 0)
    truth = test["target_direction"].to_numpy()
    chance = float(pd.Series(truth).value_counts(normalize=True).max())
    return run.metrics["test/accuracy"], float((oracle == truth).mean()), chance


@pytest.mark.slow
def test_learns_at_least_90_percent_of_the_planted_edge(tmp_path: Path) -> None:
    accuracy, oracle, chance = _planted(tmp_path, ar=0.4)
    assert oracle - chance > 0.08  # there is an edge to learn
    assert accuracy - chance >= 0.9 * (oracle - chance), (accuracy, oracle, chance)


@pytest.mark.slow
def test_pure_noise_stays_at_chance(tmp_path: Path) -> None:
    accuracy, _, chance = _planted(tmp_path, ar=0.0)
    # ~3,600 test windows: 0.03 is 3.6 standard errors of a coin flip. Leakage would show
    # as accuracy above chance; seeds 1-8 measured within 0.012.
    assert abs(accuracy - chance) < 0.03, (accuracy, chance)


def test_same_seed_same_weights(tiny_features_dir: Path, tmp_path: Path) -> None:
    params = params_from_dict(tiny_params_dict())
    states = []
    for name in ("a", "b"):
        run = train_cnn_lstm(params, tiny_features_dir, tmp_path / name, checkpoint_root=None)
        states.append(run.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    # The whole model directory (a DVC output) is byte-identical, metadata included.
    for name in ("model.pt", "config.json", "metadata.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_model_directory_contents(tiny_features_dir: Path, tmp_path: Path) -> None:
    params = params_from_dict(tiny_params_dict())
    run = train_cnn_lstm(
        params,
        tiny_features_dir,
        tmp_path / "m",
        metrics_path=tmp_path / "metrics.json",
        live_dir=tmp_path / "live",
        checkpoint_root=tmp_path / "temp",
    )
    meta = read_json(tmp_path / "m" / "metadata.json")
    config = read_json(tmp_path / "m" / "config.json")
    schema = read_json(tiny_features_dir / "schema.json")
    assert config["preprocessor_id"] == meta["preprocessor_id"] == schema["preprocessor_id"]
    assert (tmp_path / "m" / "preprocessor" / schema["preprocessor_id"] / "pipeline.json").is_file()
    assert meta["data"]["features_sha256"] and meta["params"]["epochs"] == 2
    metrics = read_json(tmp_path / "metrics.json")
    for split in ("val", "test"):
        for name in ("loss", "accuracy", "balanced_accuracy", "macro_f1", "r2", "ic", "directional_accuracy"):
            assert np.isfinite(metrics[f"{split}/{name}"]), f"{split}/{name}"
    assert metrics == run.metrics
    curve = pd.read_csv(tmp_path / "live" / "plots" / "metrics" / "val" / "loss.tsv", sep="\t")
    assert curve["step"].tolist() == [1, 2]
    assert not (tmp_path / "temp" / "cnn_lstm").exists() or not any((tmp_path / "temp" / "cnn_lstm").iterdir())


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    raw = tiny_params_dict()
    raw["cnn_lstm"].update(epochs=25, patience=100, batch_size=16)
    args = ["train", "cnn-lstm-enhanced", "synthetic", "--params", "params.yaml", "--output-dir", "run"]
    runs = {}
    for name in ("killed", "straight"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.yaml").write_text(yaml.safe_dump(raw))
    # Kill the first run as soon as it has written a checkpoint.
    process = subprocess.Popen(
        [*CLI, *args], cwd=tmp_path / "killed", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    checkpoint = None
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "killed" / "models" / "temp" / "cnn_lstm").glob("*/checkpoint.pt"))
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.02)
    assert checkpoint is not None and process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_at < 25

    resumed = subprocess.run([*CLI, *args], cwd=tmp_path / "killed", capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    straight = subprocess.run([*CLI, *args], cwd=tmp_path / "straight", capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    assert "resuming" not in straight.stderr
    for name in ("killed", "straight"):
        runs[name] = torch.load(tmp_path / name / "run" / "model" / "model.pt", weights_only=True)
    assert all(torch.equal(runs["killed"][k], runs["straight"][k]) for k in runs["straight"])
    meta = read_json(tmp_path / "killed" / "run" / "model" / "metadata.json")
    assert meta["training"]["resumed_from_epoch"] >= killed_at
    assert not checkpoint.exists()  # removed after success


@pytest.mark.slow
def test_the_default_cli_run_killed_after_epoch_2_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """The user's command on the repository's params.yaml; the resumed shell has another
    OMP_NUM_THREADS, which changed LayerNorm's gradients before the checkpoint kept it."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    command = [*CLI, "train", "cnn-lstm-enhanced", "sample", "--epochs", "4", "--no-dvc"]
    model = tmp_path / "models" / "runs" / "cnn_lstm" / "model" / "model.pt"

    def train(threads: int, faults: str = "") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRADE_AGENT_FAULTS": faults}
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)

    def registered() -> list[str]:
        return [m["model_id"] for m in read_json(tmp_path / "models" / "registry.json")["models"]]

    straight = train(2)
    assert straight.returncode == 0, straight.stderr
    uninterrupted = torch.load(model, weights_only=True)
    before = registered()
    killed = train(2, faults="kill_after_epoch=2")
    assert killed.returncode == -signal.SIGKILL
    assert "killing rank 0 after epoch 2" in killed.stderr and "epoch 3/4" not in killed.stdout + killed.stderr
    resumed = train(1)
    assert resumed.returncode == 0, resumed.stderr
    log = resumed.stdout + resumed.stderr
    assert "resuming from" in log and "after epoch 2" in log
    weights = torch.load(model, weights_only=True)
    assert weights.keys() == uninterrupted.keys()
    assert all(torch.equal(weights[k], uninterrupted[k]) for k in uninterrupted)
    assert "already registered" in log
    assert registered() == before


def test_cuda_fallback_is_loud_and_recorded(
    tiny_features_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(device_module, "_cuda_problem", lambda: "CUDA failed to initialise (driver error)")
    raw = tiny_params_dict()
    raw["base"]["device"] = "cuda"
    run = train_cnn_lstm(params_from_dict(raw), tiny_features_dir, tmp_path / "m", checkpoint_root=None)
    assert run.device.device.type == "cpu"
    meta = read_json(tmp_path / "m" / "metadata.json")
    assert meta["device"]["fallback_reason"] == "CUDA failed to initialise (driver error)"
    assert meta["warnings"] == ["trained on CPU: CUDA failed to initialise (driver error)"]
    assert "TRAINING ON CPU INSTEAD of cuda" in caplog.text
    raw["cnn_lstm"]["fallback_to_cpu"] = False
    with pytest.raises(DeviceError, match="device 'cuda' requested but CUDA failed to initialise"):
        train_cnn_lstm(params_from_dict(raw), tiny_features_dir, tmp_path / "n", checkpoint_root=None)
    assert not (tmp_path / "n").exists()


def test_a_gpu_index_beyond_the_visible_gpus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "_cuda_problem", lambda: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert str(select_device("cuda:1", fallback_to_cpu=True).device) == "cuda:1"
    with pytest.raises(DeviceError, match=r"'cuda:2': this machine has 2 visible GPU\(s\) \(cuda:0\.\.cuda:1\)"):
        select_device("cuda:2", fallback_to_cpu=True)  # a typo is not a reason to train on CPU


def test_cuda_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_module._cuda_problem() == "CUDA is not available on this machine"
    assert select_device("auto").device.type == "cpu" and select_device("auto").fallback_reason is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_zeros = torch.zeros

    def zeros(*args, **kwargs):
        if kwargs.get("device") == "cuda":
            raise RuntimeError("CUDA driver version is insufficient")
        return real_zeros(*args, **kwargs)

    monkeypatch.setattr(torch, "zeros", zeros)
    assert device_module._cuda_problem() == "CUDA failed to initialise (CUDA driver version is insufficient)"
    with pytest.raises(ConfigError, match="device 'tpu' is unknown"):
        select_device("tpu")


def test_precisions(tiny_features_dir: Path, tmp_path: Path) -> None:
    raw = tiny_params_dict()
    raw["cnn_lstm"].update(precision="fp16")
    with pytest.raises(ConfigError, match="precision fp16 needs a CUDA device"):
        train_cnn_lstm(params_from_dict(raw), tiny_features_dir, tmp_path / "m", checkpoint_root=None)
    raw["cnn_lstm"].update(precision="bf16", epochs=1)
    run = train_cnn_lstm(params_from_dict(raw), tiny_features_dir, tmp_path / "m", checkpoint_root=None)
    assert np.isfinite(run.metrics["val/loss"]) and run.outcome.history[0]["train/loss"] > 0


def test_class_weights() -> None:
    weights = class_weights(torch.tensor([0, 0, 0, 2]))
    assert weights.tolist() == pytest.approx([4 / 6, 0.0, 2.0])
