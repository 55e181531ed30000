"""Every annualised metric uses the data's bar frequency, never a fixed daily figure.

The same per-bar returns annualised as hourly 24x5 FX and as daily bars differ exactly by
``sqrt(ppy_hourly / ppy_daily)`` in Sharpe and volatility; the frequency travels from
``schema.json`` through ``SplitData`` and the panels into every metric, and the reports say
which figure they used.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_envs import panel
from trade_agent.agents.evaluation import evaluate, sharpe_standard_error
from trade_agent.config import params_from_dict
from trade_agent.config.ensemble import EnsembleConfig
from trade_agent.config.rl import RLCommonConfig
from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR, BarFrequency, infer_frequency
from trade_agent.ensemble.combine import MemberRuns
from trade_agent.errors import DataSourceError, InputError
from trade_agent.evaluation.suite import metrics_suite, run_backtest
from trade_agent.market.backtest import BacktestResult
from trade_agent.market.bootstrap import sharpe_interval
from trade_agent.market.panel import SplitData
from trade_agent.market.simulator import SimulatorConfig
from trade_agent.market.trading import trading_metrics

ROOT = Path(__file__).resolve().parents[1]


def hourly_24x5(weeks: int = 20) -> pd.DatetimeIndex:
    hours = pd.date_range("2024-01-01", periods=weeks * 7 * 24, freq="h")  # 2024-01-01 is a Monday
    return hours[hours.day_of_week < 5]


def daily(n: int = 1000) -> pd.DatetimeIndex:
    return pd.bdate_range("2020-01-01", periods=n)


@pytest.fixture(scope="module")
def frequencies() -> tuple[BarFrequency, BarFrequency]:
    hourly, day = infer_frequency(hourly_24x5().to_numpy(), 1.0), infer_frequency(daily().to_numpy(), 1.0)
    assert (hourly.bar_interval, hourly.calendar) == ("1h", "24x5")
    assert (day.bar_interval, day.calendar) == ("1D", "weekdays")
    assert 6_000 < hourly.periods_per_year < 6_400  # ~120 bars a week
    assert 250 < day.periods_per_year < 265  # business days (no holidays here)
    return hourly, day


def test_the_same_returns_annualise_with_each_datasets_bars_per_year(
    frequencies: tuple[BarFrequency, BarFrequency],
) -> None:
    r = np.random.default_rng(0).normal(2e-4, 0.003, 2400)
    mean, std = r.mean(), r.std(ddof=1)
    growth = np.prod(1.0 + r)
    sharpes = []
    for frequency in frequencies:
        ppy = frequency.periods_per_year
        m = trading_metrics(r, periods_per_year=ppy)
        assert m["sharpe"] == pytest.approx(mean / std * np.sqrt(ppy), rel=1e-12)
        assert m["volatility"] == pytest.approx(std * np.sqrt(ppy), rel=1e-12)
        assert m["cagr"] == pytest.approx(growth ** (ppy / r.size) - 1.0, rel=1e-12)
        assert (1.0 + m["cagr"]) ** (r.size / ppy) == pytest.approx(1.0 + m["total_return"], rel=1e-12)
        sharpes.append(m["sharpe"])
    hourly, day = (f.periods_per_year for f in frequencies)
    assert sharpes[0] / sharpes[1] == pytest.approx(np.sqrt(hourly / day), rel=1e-12)
    assert sharpes[0] / sharpes[1] > 4.5  # what a fixed daily figure understated on hourly FX


def test_sharpe_interval_and_standard_error_scale_with_the_root_of_bars_per_year(
    frequencies: tuple[BarFrequency, BarFrequency],
) -> None:
    r = np.random.default_rng(1).normal(1e-4, 0.002, 600)
    hourly, day = (f.periods_per_year for f in frequencies)
    scale = np.sqrt(hourly / day)
    low_h, high_h = sharpe_interval(r, hourly, samples=300, seed=5)
    low_d, high_d = sharpe_interval(r, day, samples=300, seed=5)
    assert low_h == pytest.approx(low_d * scale, rel=1e-12) and high_h == pytest.approx(high_d * scale, rel=1e-12)
    assert sharpe_standard_error(2.0 * scale, 600, hourly) == pytest.approx(
        scale * sharpe_standard_error(2.0, 600, day), rel=1e-12
    )


def test_evaluation_uses_the_panels_bars_per_year() -> None:
    from dataclasses import replace

    daily_panel = panel(n_bars=120, seed=2)
    hourly_panel = replace(daily_panel, periods_per_year=6_000.0)
    config = SimulatorConfig(window=5, episode_length=40)
    long = lambda obs: np.array([1.0, -0.5])  # noqa: E731
    as_daily, as_hourly = evaluate(long, daily_panel, config), evaluate(long, hourly_panel, config)
    assert as_daily["total_return"] == as_hourly["total_return"]
    assert as_hourly["sharpe"] / as_daily["sharpe"] == pytest.approx(np.sqrt(6_000.0 / DAILY_PERIODS_PER_YEAR))


def test_no_hard_coded_daily_figure_outside_the_frequency_module() -> None:
    literal = re.compile(r"(?<![\w.])252(?!\d)")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "trade_agent").rglob("*.py"))
        if path != ROOT / "trade_agent" / "data" / "frequency.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert not offenders, "use the data's BarFrequency (or DAILY_PERIODS_PER_YEAR):\n" + "\n".join(offenders)


def write_stage_outputs(directory: Path, frequency: object | None) -> tuple[Path, Path]:
    """A features directory and a market file for two symbols x 30 daily bars."""
    times = daily(30)
    split = np.array(["train"] * 20 + ["val"] * 5 + ["test"] * 5)
    rows = [
        {"timestamp": t, "symbol": s, "split": split[i], "ret_1": 0.01 * i, "close": 100.0 + i, "open": 99.5 + i}
        for i, t in enumerate(times)
        for s in ("A", "B")
    ]
    frame = pd.DataFrame(rows)
    directory.mkdir(parents=True)
    frame[["timestamp", "symbol", "split", "ret_1"]].to_parquet(directory / "features.parquet")
    schema: dict[str, object] = {"feature_names": ["ret_1"]}
    if frequency is not None:
        schema["frequency"] = frequency
    (directory / "schema.json").write_text(json.dumps(schema))
    market = directory.parent / "market.parquet"
    frame[["timestamp", "symbol", "open", "close"]].to_parquet(market)
    return directory, market


def test_split_data_refuses_a_schema_without_a_frequency(tmp_path: Path) -> None:
    features, market = write_stage_outputs(tmp_path / "old" / "features", None)
    with pytest.raises(DataSourceError) as missing:
        SplitData.load(features, None, market, "test")
    message = str(missing.value)
    assert "\n" not in message and "schema.json" in message and "frequency" in message
    recorded = infer_frequency(daily(30).to_numpy(), 0.7).to_json()
    del recorded["periods_per_year"]
    features, market = write_stage_outputs(tmp_path / "malformed" / "features", recorded)
    with pytest.raises(DataSourceError, match="periods_per_year") as malformed:
        SplitData.load(features, None, market, "test")
    assert "\n" not in str(malformed.value)


def test_the_recorded_frequency_reaches_the_panels(tmp_path: Path) -> None:
    frequency = BarFrequency.from_json(
        infer_frequency(hourly_24x5().to_numpy(), 0.7).to_json() | {"periods_per_year": 6_123.0}, "test"
    )
    features, market = write_stage_outputs(tmp_path / "features", frequency.to_json())
    data = SplitData.load(features, None, market, "test")
    assert data.frequency == frequency
    assert data.panel(3, with_embeddings=False).periods_per_year == 6_123.0


def backtested_suite(periods_per_year: float) -> tuple[dict[str, float], BacktestResult]:
    p = panel(n_bars=60, seed=9)
    weights = np.random.default_rng(2).uniform(-0.5, 0.5, (59, 2))
    params = params_from_dict({"evaluate": {"bootstrap_samples": 200}})
    common = params.rl.common
    result = run_backtest(weights, p.open, p.close, common, periods_per_year)
    suite = metrics_suite(result, p.open, p.close, common, params.evaluate, 0, periods_per_year)
    return suite, result


def test_the_metrics_suite_records_its_annualisation_and_each_cost_level_uses_it() -> None:
    daily_suite, _ = backtested_suite(DAILY_PERIODS_PER_YEAR)
    hourly_suite, _ = backtested_suite(6_000.0)
    assert daily_suite["periods_per_year"] == DAILY_PERIODS_PER_YEAR and hourly_suite["periods_per_year"] == 6_000.0
    scale = np.sqrt(6_000.0 / DAILY_PERIODS_PER_YEAR)
    for key in ("sharpe", "sharpe_ci_low", "sharpe_ci_high", "sharpe_at_0bps", "sharpe_at_25bps", "volatility"):
        assert hourly_suite[key] == pytest.approx(scale * daily_suite[key], rel=1e-9), key


def test_the_evaluation_report_states_its_annualisation(tmp_path: Path) -> None:
    from trade_agent.evaluation.report import ModelReport, write_outputs

    params = params_from_dict({"evaluate": {"bootstrap_samples": 200}})
    frequency = infer_frequency(hourly_24x5().to_numpy(), 0.7)
    suite, result = backtested_suite(frequency.periods_per_year)
    reports = [ModelReport("ppo", "ppo", result, suite), ModelReport("equal_weight", "baseline", result, suite)]
    write_outputs(reports, params, frequency, tmp_path / "evaluate.json", tmp_path / "plots", tmp_path / "reports")
    markdown = (tmp_path / "reports" / "evaluation.md").read_text()
    assert f"are {frequency.note()}." in markdown and "bars/year of 1h bars, inferred" in markdown
    evaluated = json.loads((tmp_path / "evaluate.json").read_text())
    assert set(evaluated) == {"ppo", "equal_weight"}  # one entry per model: readers iterate over models
    assert all(m["periods_per_year"] == frequency.periods_per_year for m in evaluated.values())
    assert (tmp_path / "reports" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"


def test_backtest_cli_prints_the_annualisation_under_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    from trade_agent.cli.backtest import print_rows

    frequency = infer_frequency(daily(400).to_numpy(), 0.7)
    row = {"model": "m", "type": "ppo", "sharpe": 1.0, "periods_per_year": frequency.periods_per_year}
    print_rows([row], "backtest", False, frequency)
    assert frequency.note() in capsys.readouterr().out
    print_rows([row], "backtest", True, frequency)
    assert json.loads(capsys.readouterr().out)[0]["periods_per_year"] == frequency.periods_per_year


def test_an_ensemble_refuses_splits_annualised_differently(tmp_path: Path) -> None:
    from trade_agent.ensemble.stage import Member, build_ensemble

    p, common = panel(n_bars=40, seed=3), RLCommonConfig()
    weights = [np.full((39, 2), 0.25), np.full((39, 2), -0.25)]
    val = MemberRuns.backtested(weights, p.open, p.close, common, DAILY_PERIODS_PER_YEAR)
    test = MemberRuns.backtested(weights, p.open, p.close, common, 6_000.0)
    members = [Member("a", "ppo", None), Member("b", "sac", None)]
    with pytest.raises(InputError, match="same data"):
        build_ensemble(EnsembleConfig(), members, val, test, common, tmp_path / "ensemble")
    run = build_ensemble(EnsembleConfig(), members, test, test, common, tmp_path / "ensemble")
    assert run.metrics["periods_per_year"] == 6_000.0
    assert json.loads((tmp_path / "ensemble" / "metrics.json").read_text())["periods_per_year"] == 6_000.0


def test_the_evaluate_stage_annualises_every_model_with_the_recorded_frequency(
    tiny_stage2: dict[str, Path], tmp_path: Path
) -> None:
    from tests.conftest import tiny_params_dict
    from trade_agent.ensemble.stage import train_ensemble
    from trade_agent.evaluation.report import EvaluationInputs, evaluate_models, markdown_table

    params = params_from_dict(tiny_params_dict())
    root = tmp_path / "pipeline"
    root.mkdir()
    for name in ("cnn_lstm", "ppo", "sac"):
        (root / name).symlink_to(tiny_stage2[name], target_is_directory=True)
    features, embeddings, market = tiny_stage2["features"], tiny_stage2["embeddings"], tiny_stage2["market"]
    train_ensemble(params, [root / "ppo", root / "sac"], features, embeddings, market, root / "ensemble")
    reports, frequency = evaluate_models(params, EvaluationInputs(features, embeddings, market, root))
    recorded = BarFrequency.from_json(json.loads((features / "schema.json").read_text())["frequency"], "schema")
    assert frequency == recorded
    assert {r.name for r in reports} >= {"cnn_lstm", "ppo", "sac", "ensemble", "best_member", "buy_and_hold"}
    assert all(r.metrics["periods_per_year"] == recorded.periods_per_year for r in reports)
    stage = json.loads((root / "ensemble" / "metrics.json").read_text())
    ensemble = next(r for r in reports if r.name == "ensemble")
    assert stage["periods_per_year"] == recorded.periods_per_year
    assert ensemble.metrics["sharpe"] == pytest.approx(stage["test/sharpe"], rel=1e-12)  # one annualisation
    assert recorded.note() in markdown_table(reports, params, frequency)
