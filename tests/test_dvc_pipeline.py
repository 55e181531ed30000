"""`dvc repro` is the build: runs what changed, skips what did not, restores from run-cache."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert "Running stage 'prepare'" in first and "Running stage 'features'" in first
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
