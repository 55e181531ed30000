"""Walk-forward folds: calendar boundaries, no look-ahead, incremental under DVC, stitched out-of-sample."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_params_dict
from trade_agent.config import params_from_dict
from trade_agent.config.walkforward import WalkForwardConfig
from trade_agent.data.synthetic import SyntheticSpec, generate_synthetic
from trade_agent.errors import ConfigError, InsufficientDataError
from trade_agent.features.splits import SPLIT
from trade_agent.market.trading import trading_metrics
from trade_agent.walkforward.folds import fold_boundaries, fold_windows, write_fold_inputs
from trade_agent.walkforward.gates import gate_figures


def test_fold_boundaries_fall_on_calendar_dates() -> None:
    first = pd.Timestamp("2004-08-19 00:00")
    expanding = fold_windows(
        first, WalkForwardConfig(train_period="3Y", val_period="6M", test_period="1Y", folds=[0, 2])
    )
    assert [w.to_json() for w in expanding] == [
        {
            "fold": 0,
            "train_start": "2004-08-19",
            "val_start": "2007-08-19",
            "test_start": "2008-02-19",
            "test_end": "2009-02-19",
        },
        {
            "fold": 2,
            "train_start": "2004-08-19",
            "val_start": "2009-08-19",
            "test_start": "2010-02-19",
            "test_end": "2011-02-19",
        },
    ]
    rolling = fold_windows(
        first,
        WalkForwardConfig(
            start="2010-01-01", train="rolling", train_period="2Y", val_period="3M", test_period="6M", folds=[1]
        ),
    )
    assert rolling[0].to_json() == {
        "fold": 1,
        "train_start": "2008-04-01",
        "val_start": "2010-04-01",
        "test_start": "2010-07-01",
        "test_end": "2011-01-01",
    }
    # Bar-level splits: the test window keeps every bar; embargo bars come off the end of train and val.
    days = pd.bdate_range("2004-08-19", "2011-06-30")
    bounds = fold_boundaries(days.to_numpy(), expanding[0], embargo=5, min_bars=10)
    assert bounds.test == (pd.Timestamp("2008-02-19"), pd.Timestamp("2009-02-18"))
    val_bars = days[(days >= "2007-08-19") & (days < "2008-02-19")]
    assert bounds.val == (val_bars[0], val_bars[-6])
    train_bars = days[days < "2007-08-19"]
    assert bounds.train == (train_bars[0], train_bars[-6])
    with pytest.raises(InsufficientDataError, match=r"fold 0 has 0 test bars .* drop the fold from walkforward.folds"):
        fold_boundaries(days[days < "2008-01-01"].to_numpy(), expanding[0], embargo=5, min_bars=10)
    with pytest.raises(ConfigError, match=r"walkforward\.test_period: '1 year' is not a calendar period"):
        WalkForwardConfig(test_period="1 year")


def test_no_fold_input_depends_on_bars_after_its_train_end(tmp_path: Path) -> None:
    """Scaler, features and labels of a fold's training rows are the same whatever comes later."""
    params = params_from_dict(tiny_params_dict())
    market = generate_synthetic(SyntheticSpec(n_symbols=2, n_bars=300, seed=1))
    window = fold_windows(market["timestamp"].min(), params.walkforward)[0]
    bounds = write_fold_inputs(params, market, window, tmp_path / "a")
    later = market["timestamp"] > bounds.train[1] + pd.Timedelta(days=7 * params.labels.horizon)
    changed = market.copy()
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.5  # the whole future moves
    changed.loc[later, "volume"] *= 3
    write_fold_inputs(params, changed, window, tmp_path / "b")
    state = sorted((tmp_path / "a" / "preprocessor").rglob("state.npz"))[0]
    twin = tmp_path / "b" / state.relative_to(tmp_path / "a")
    assert state.read_bytes() == twin.read_bytes()  # the scaler saw nothing after the train end
    pipeline = json.loads(next((tmp_path / "a" / "preprocessor").rglob("pipeline.json")).read_text())
    assert str(bounds.train[1]) in json.dumps(pipeline)  # fitted until the fold's train end
    a, b = (pd.read_parquet(tmp_path / x / "features.parquet") for x in ("a", "b"))
    train_a, train_b = a[a[SPLIT] == "train"], b[b[SPLIT] == "train"]
    assert train_a["timestamp"].max() == bounds.train[1]
    pd.testing.assert_frame_equal(train_a.reset_index(drop=True), train_b.reset_index(drop=True))
    # ...and the test rows did change: the comparison can fail.
    assert not a[a[SPLIT] == "test"]["target_return"].equals(b[b[SPLIT] == "test"]["target_return"])


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)


def _write_bars(repo: Path, market: pd.DataFrame) -> None:
    market.to_csv(repo / "data" / "raw" / "bars.csv", index=False, date_format="%Y-%m-%d")


def _set_params(repo: Path, **sections: dict) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _stages(output: str) -> tuple[set[str], set[str]]:
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}
    skipped = {
        line.split("'")[1]
        for line in output.splitlines()
        if line.startswith("Stage '") and ("didn't change" in line or "restored" in line.lower())
    }
    return ran, skipped


def test_appending_bars_reruns_only_the_folds_whose_windows_hold_them(dvc_fresh_repo: Path) -> None:
    repo = dvc_fresh_repo
    full = generate_synthetic(SyntheticSpec(n_symbols=2, n_bars=320, seed=3))
    stamps = np.sort(full["timestamp"].unique())
    # Folds test Jul, Sep and Nov 2000 (two months each, see conftest); the data end inside fold 2's window.
    _write_bars(repo, full[full["timestamp"] <= pd.Timestamp("2000-12-01")])
    _set_params(repo, data={"source": "file", "path": "data/raw/bars.csv"})
    first = run(["dvc", "repro", "walkforward"], repo)
    assert first.returncode == 0, first.stdout + first.stderr
    metrics_before = json.loads((repo / "metrics" / "walkforward.json").read_text())
    assert [f["test_start"] for f in metrics_before["per_fold"]] == ["2000-07-03", "2000-09-03", "2000-11-03"]

    # The stitched out-of-sample returns are the folds' test returns end to end.
    folds = [pd.read_parquet(repo / "models" / "walkforward" / f"fold_{k}" / "returns.parquet") for k in range(3)]
    stitched = pd.concat(folds, ignore_index=True)
    assert stitched["timestamp"].is_monotonic_increasing and not stitched["timestamp"].duplicated().any()
    assert metrics_before["oos_bars"] == len(stitched)
    for name, row in metrics_before["models"].items():
        expected = trading_metrics(stitched[name].to_numpy(), periods_per_year=metrics_before["periods_per_year"])
        assert row["sharpe"] == pytest.approx(expected["sharpe"], rel=1e-9)
        assert row["total_return"] == pytest.approx(expected["total_return"], rel=1e-9)
    # The release gate recomputes each DSR from the recorded moments: with no registry trials it is the report's.
    for model_type in ("cnn_lstm", "ppo", "ensemble"):
        figures = gate_figures(metrics_before, {"model_type": model_type}, [], "metrics/walkforward.json")
        assert figures.dsr == pytest.approx(metrics_before["models"][model_type]["dsr"], rel=1e-9)
    for k, fold in enumerate(folds):  # each fold trades inside its own window only
        window = metrics_before["per_fold"][k]
        assert fold["timestamp"].min() >= pd.Timestamp(window["test_start"])
        assert fold["timestamp"].max() < pd.Timestamp(window["test_end"])

    # A month more of bars: only fold 2 holds them.
    _write_bars(repo, full[full["timestamp"] <= pd.Timestamp("2001-01-05")])
    second = run(["dvc", "repro", "walkforward"], repo)
    assert second.returncode == 0, second.stdout + second.stderr
    ran, skipped = _stages(second.stdout)
    assert {"walkforward_fold@0", "walkforward_fold@1"} <= skipped, second.stdout
    assert {"walkforward_fold@2", "walkforward"} <= ran and not ran & {"walkforward_fold@0", "walkforward_fold@1"}
    metrics_after = json.loads((repo / "metrics" / "walkforward.json").read_text())
    assert metrics_after["oos_bars"] > metrics_before["oos_bars"]

    # Bars past the last fold's window and a new fold number: only the new fold runs.
    _write_bars(repo, full)
    assert stamps[-1] > np.datetime64("2001-01-03")
    _set_params(repo, walkforward={"folds": [0, 1, 2, 3]})
    third = run(["dvc", "repro", "walkforward"], repo)
    assert third.returncode == 0, third.stdout + third.stderr
    ran, skipped = _stages(third.stdout)
    assert {"walkforward_fold@0", "walkforward_fold@1", "walkforward_fold@2"} <= skipped, third.stdout
    assert {"walkforward_fold@3", "walkforward"} <= ran
    assert json.loads((repo / "metrics" / "walkforward.json").read_text())["folds"] == 4
    report = (repo / "reports" / "walkforward.md").read_text()
    assert report.startswith("# Walk-forward: 4 folds") and "PBO = " in report and "N = " in report
