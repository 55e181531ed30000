"""`trade-agent data pipeline`: exit codes AND output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import tiny_params_dict
from trade_agent.cli.main import app

runner = CliRunner()
CLI = [sys.executable, "-m", "trade_agent.cli"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pipeline_run_writes_stages_and_an_exported_dataset_that_validates(project: Path) -> None:
    result = runner.invoke(app, ["data", "pipeline", "-r"])
    assert result.exit_code == 0, result.output
    dataset = project / "data" / "dataset_synthetic" / "dataset.csv"
    assert (
        "prepared 600 rows of SYN0, SYN1" in result.output
        and str(Path("data/dataset_synthetic/dataset.csv")) in result.output
    )
    assert (project / "data" / "features" / "features.parquet").is_file()
    meta = json.loads((dataset.parent / "metadata.json").read_text())
    assert meta["validation"]["rows"] == 600 and meta["file"] == "dataset.csv"
    assert pd.read_csv(dataset).columns.tolist() == ["timestamp", "symbol", "open", "high", "low", "close", "volume"]

    check = runner.invoke(app, ["data", "pipeline", "--validate", str(dataset), "--json"])
    assert check.exit_code == 0, check.output
    summary = json.loads(check.output)
    assert summary["rows"] == 600 and summary["symbols"] == ["SYN0", "SYN1"]
    assert summary["start"].startswith("2000-01-03") and summary["repaired_values"] == {}


def test_validate_prints_a_table_with_repairs(project: Path) -> None:
    rows = pd.DataFrame(
        {
            "timestamp": pd.bdate_range("2020-01-01", periods=300),
            "open": 10.0,
            "high": 11.0,
            "low": 9.0,
            "close": 10.0 + (pd.RangeIndex(300) % 7) / 10,
            "volume": 5.0,
        }
    )
    rows.loc[10, "close"] = None
    rows.to_csv(project / "one.csv", index=False)
    result = runner.invoke(app, ["data", "pipeline", "--validate", "one.csv"])
    assert result.exit_code == 0, result.output
    assert "one.csv: valid" in result.output and "{'close': 1}" in result.output and "ONE" in result.output


def test_bad_file_is_one_red_line_exit_2_no_traceback(project: Path) -> None:
    result = runner.invoke(app, ["data", "pipeline", "--validate", "missing.csv"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: missing.csv: file not found; pass an existing CSV or Parquet file"
    assert "Traceback" not in result.output


def test_usage_errors_exit_2(project: Path) -> None:
    assert runner.invoke(app, ["data", "pipeline"]).exit_code == 2
    assert runner.invoke(app, ["data", "pipeline", "-r", "--format", "xlsx"]).exit_code == 2
    assert runner.invoke(app, ["data", "pipeline", "--bogus"]).exit_code == 2


def test_bad_params_exit_2(project: Path) -> None:
    raw = tiny_params_dict()
    raw["labels"]["horizon"] = "five"
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["data", "pipeline", "-r"])
    assert result.exit_code == 2
    assert "labels.horizon: expected int, got str 'five'" in result.output
    assert not (project / "data").exists()


def test_console_script_traceback_flag(project: Path) -> None:
    plain = subprocess.run([*CLI, "data", "pipeline", "--validate", "missing.csv"], capture_output=True, text=True)
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1
    assert "Traceback" not in plain.stderr
    traced = subprocess.run(
        [*CLI, "data", "pipeline", "--validate", "missing.csv", "--traceback"], capture_output=True, text=True
    )
    assert traced.returncode == 2 and "Traceback" in traced.stderr and "DataSourceError" in traced.stderr


def test_unexpected_errors_are_one_line_exit_1(project: Path) -> None:
    (project / "data").write_text("a file where a directory should be")
    result = subprocess.run([*CLI, "data", "pipeline", "-r"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: unexpected ") and "--traceback" in result.stderr
    assert "Traceback" not in result.stderr
