"""`dvc repro` is the build: runs what changed, skips what did not, restores from run-cache."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import TINY_FEATURES, run
from trade_agent.config import FeaturesConfig
from trade_agent.features import feature_names
from trade_agent.io import sha256_file

pytestmark = pytest.mark.slow


def _repro(repo: Path) -> str:
    result = run(["dvc", "repro"], repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _set(repo: Path, section: str, key: str, value: object) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_repro_is_incremental_and_uses_the_run_cache(dvc_repo: Path) -> None:
    first = _repro(dvc_repo)
    for stage in ("prepare", "features", "cnn_lstm", "embed"):
        assert f"Running stage '{stage}'" in first
    features = dvc_repo / "data" / "features" / "features.parquet"
    original = sha256_file(features)
    metrics = json.loads((dvc_repo / "data" / "features" / "metrics.json").read_text())
    assert (
        metrics["n_features"] == len(feature_names(FeaturesConfig(**TINY_FEATURES)))
        and metrics["train_rows"] > metrics["val_rows"] > 0
    )
    assert 0.5 < metrics["bayes_directional_accuracy"] < 0.6  # synthetic AR(0.3), horizon 2
    assert (
        dvc_repo / "data" / "features" / "preprocessor" / "preprocessor_cnn_lstm_v1.0.0" / "pipeline.json"
    ).is_file()

    second = _repro(dvc_repo)
    assert "Running stage" not in second and "Data and pipelines are up to date" in second

    _set(dvc_repo, "features", "rsi_period", 9)
    changed = _repro(dvc_repo)
    assert "Running stage 'features'" in changed and "Running stage 'prepare'" not in changed
    assert sha256_file(features) != original

    _set(dvc_repo, "features", "rsi_period", 7)
    reverted = _repro(dvc_repo)
    assert "Running stage" not in reverted, reverted
    assert "Stage 'features' is cached - skipping run, checking out outputs" in reverted
    assert sha256_file(features) == original  # byte-identical restore


def test_model_param_change_reruns_only_the_model_stages(dvc_repo: Path) -> None:
    _repro(dvc_repo)
    model = dvc_repo / "models" / "cnn_lstm" / "model.pt"
    before = sha256_file(model)
    _set(dvc_repo, "cnn_lstm", "learning_rate", 0.003)
    changed = _repro(dvc_repo)
    ran = sorted(line.split("'")[1] for line in changed.splitlines() if line.startswith("Running stage"))
    assert ran == ["cnn_lstm", "embed"]
    assert sha256_file(model) != before
    embeddings = pd.read_parquet(dvc_repo / "data" / "embeddings" / "embeddings.parquet")
    assert {"emb_0", "prob_up", "pred_return", "split"} <= set(embeddings.columns)
    metrics = json.loads((dvc_repo / "metrics" / "cnn_lstm.json").read_text())
    assert 0 <= metrics["test/accuracy"] <= 1
    plots = run(["dvc", "plots", "show", "--json"], dvc_repo)
    assert plots.returncode == 0 and "val/loss" in plots.stdout


def test_failed_validation_leaves_no_outputs(dvc_repo: Path) -> None:
    (dvc_repo / "data" / "raw" / "bars.csv").write_text(
        "timestamp,open,high,low,close,volume\n2020-01-02,1,2,0.5,x,1\n"
    )
    _set(dvc_repo, "data", "source", "file")
    _set(dvc_repo, "data", "path", "data/raw/bars.csv")
    result = run(["dvc", "repro"], dvc_repo)
    assert result.returncode != 0
    assert "error: data/raw/bars.csv: column 'close', line 2: non-numeric value 'x'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (dvc_repo / "data" / "prepared" / "market.parquet").exists()
