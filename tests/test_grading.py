"""Grades of trading models (agents, hybrids, ensembles): risk-adjusted return after costs.

All cases use the default tables (``default_grading()``, equal to params.yaml's ``grading:``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from trade_agent.config import params_from_dict
from trade_agent.config.registry import MetricRule, TypeGrading, default_grading
from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR
from trade_agent.errors import ConfigError
from trade_agent.market.bootstrap import sharpe_interval
from trade_agent.market.trading import trading_metrics as metrics_of
from trade_agent.registry import ModelRegistry, composite_score, grade_for

TRADING_TYPES = ("ppo", "sac", "td3", "hybrid", "ensemble")
PPY = DAILY_PERIODS_PER_YEAR  # the synthetic series here are daily


def trading(sharpe: float, ci_low: float | None = None, drawdown: float | None = None) -> dict[str, float]:
    metrics = {"test/sharpe": sharpe}
    if ci_low is not None:
        metrics["test/sharpe_ci_low"] = ci_low
    if drawdown is not None:
        metrics["test/max_drawdown"] = drawdown
    return metrics


def grade(metrics: dict[str, float], model_type: str = "ppo") -> str:
    return grade_for(composite_score(metrics, default_grading()[model_type])).value


def test_every_trading_type_uses_the_same_table_without_total_reward() -> None:
    tables = default_grading()
    for model_type in TRADING_TYPES:
        assert tables[model_type].metrics == tables["ppo"].metrics, model_type
        assert tables[model_type].split == "test"
    assert set(tables["ppo"].metrics) == {"sharpe", "sharpe_ci_low", "max_drawdown"}
    assert tables["ppo"].metrics["max_drawdown"].gate == "sharpe"
    assert (tables["ppo"].key_metric, tables["ppo"].key_label) == ("sharpe", "sharpe")
    assert (tables["ensemble"].key_metric, tables["ensemble"].key_label) == ("roi_pct", "roi")


@pytest.mark.parametrize("model_type", TRADING_TYPES)
def test_a_model_that_never_trades_grades_f_and_below_any_positive_sharpe(model_type: str) -> None:
    table = default_grading()[model_type]
    flat = trading(0.0, 0.0, 0.0)
    assert composite_score(flat, table) == 0.0
    assert composite_score(trading(0.0, drawdown=0.0), table) == 0.0  # no interval reported
    assert grade(flat, model_type) == grade(trading(0.0, drawdown=0.0), model_type) == "F"
    # The metrics a flat policy actually gets from the backtester and the bootstrap.
    idle = {f"test/{k}": v for k, v in metrics_of(np.zeros(250), np.zeros((250, 2)), periods_per_year=PPY).items()}
    idle["test/sharpe_ci_low"], idle["test/sharpe_ci_high"] = sharpe_interval(np.zeros(250), PPY, seed=0)
    assert composite_score(idle, table) == 0.0
    flat_score = composite_score(flat, table)
    for sharpe in (0.01, 0.3, 1.0):
        # Positive Sharpe, the worst interval and a drawdown beyond 'poor': still above flat.
        assert composite_score(trading(sharpe, -1.0, 0.5), table) > flat_score
        assert composite_score(trading(sharpe, drawdown=0.5), table) > flat_score


def test_the_sac_from_the_issue_grades_f_despite_a_tiny_drawdown() -> None:
    # Test Sharpe -1.47 with a 1 % drawdown graded C under the old table.
    assert composite_score(trading(-1.47, -3.0, 0.01), default_grading()["sac"]) == 0.0
    assert grade(trading(-1.47, -3.0, 0.01), "sac") == "F"
    assert grade(trading(-1.47, drawdown=0.01), "sac") == "F"


def test_excellent_values_grade_s_and_band_edges_are_exact() -> None:
    table = default_grading()["ppo"]
    assert composite_score(trading(2.0, 1.0, 0.05), table) == pytest.approx(1.0)
    assert grade(trading(2.0, 1.0, 0.05)) == "S"
    # 0.5 * 1 + 0.3 * 0.5 + 0.2 * (0.75 * 1) = 0.80 exactly: A; a hair worse: A-.
    edge = trading(2.0, 0.5, 0.1125)
    assert composite_score(edge, table) == pytest.approx(0.80, abs=1e-12)
    assert grade(edge) == "A"
    assert grade(trading(2.0, 0.5, 0.1126)) == "A-"
    assert grade(trading(2.0, 0.4999, 0.1125)) == "A-"
    # Sharpe 1 with its bound at 0 and a 17.5 % drawdown: 0.25 + 0 + 0.2 * 0.5 * 0.5 = 0.30, C.
    assert composite_score(trading(1.0, 0.0, 0.175), table) == pytest.approx(0.30)
    assert grade(trading(1.0, 0.0, 0.175)) == "C"


def test_drawdown_credit_is_gated_by_the_sharpe_score() -> None:
    table = default_grading()["td3"]
    # Same Sharpe: a larger drawdown scores lower.
    assert composite_score(trading(1.0, 0.5, 0.05), table) > composite_score(trading(1.0, 0.5, 0.20), table)
    # Credit = 0.2 * drawdown score * Sharpe score: 0.2 * 1 * 0.5 at Sharpe 1.
    gain = composite_score(trading(1.0, 0.5, 0.05), table) - composite_score(trading(1.0, 0.5, 0.30), table)
    assert gain == pytest.approx(0.2 * 0.5)
    # No credit at all for a small drawdown when the Sharpe ratio is not positive.
    for sharpe in (0.0, -0.5):
        assert (
            composite_score(trading(sharpe, 0.0, 0.01), table)
            == composite_score(trading(sharpe, 0.0, 0.30), table)
            == 0.0
        )
    # A drawdown reported without its gate (no Sharpe) earns nothing: F, not S.
    assert composite_score({"test/max_drawdown": 0.01}, table) == 0.0
    assert grade({"test/max_drawdown": 0.01}, "td3") == "F"


def test_the_gate_mechanism_on_a_custom_table() -> None:
    table = TypeGrading(
        metrics={"a": MetricRule(1.0, 1.0, 0.0), "b": MetricRule(1.0, 1.0, 0.0, gate="a")},
    )
    assert composite_score({"test/a": 0.5, "test/b": 1.0}, table) == pytest.approx((0.5 + 0.5 * 1.0) / 2)
    assert composite_score({"test/a": 2.0, "test/b": 0.5}, table) == pytest.approx((1.0 + 0.5) / 2)  # gate clipped
    assert composite_score({"test/b": 1.0}, table) == 0.0  # unreported gate counts as 0
    # A gate with weight 0 still gates (its score is read, it adds nothing itself).
    silent = TypeGrading(metrics={"a": MetricRule(0.0, 1.0, 0.0), "b": MetricRule(1.0, 1.0, 0.0, gate="a")})
    assert composite_score({"test/a": 0.25, "test/b": 1.0}, silent) == pytest.approx(0.25)


def test_ensembles_are_graded_as_trading_models_and_named_by_roi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = ModelRegistry(tmp_path / "models")

    def register(name: str, metrics: dict[str, float]) -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "ensemble.json").write_text(json.dumps({"name": name}))
        return registry.register_model("ensemble", folder, None, {"interface": {"members": 2}}, metrics, {})

    good = register("good", trading(2.0, 1.0, 0.05) | {"test/roi_pct": 15.3})
    assert good == "ensemble_v1.0.0_grade_S_roi_15.3"
    # Accurate and diverse but losing money after costs: F (accuracy/diversity are not graded).
    losing = trading(-0.8, -2.0, 0.02) | {"test/roi_pct": -4.0, "test/ensemble_accuracy": 0.98, "test/diversity": 0.8}
    assert register("losing", losing) == "ensemble_v1.0.1_grade_F_roi_-4"
    assert registry.resolve_id("ensemble@best") == good


def test_params_yaml_grades_with_the_default_tables() -> None:
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert params_from_dict({"grading": raw["grading"]}).grading == default_grading()


def grading_section(gate: str) -> dict:
    rules = {
        "sharpe": {"weight": 0.5, "excellent": 2.0, "poor": 0.0},
        "sharpe_ci_low": {"weight": 0.3, "excellent": 1.0, "poor": 0.0},
        "max_drawdown": {"weight": 0.2, "excellent": 0.05, "poor": 0.30, "gate": gate},
    }
    return {"grading": {"ppo": {"key_metric": "sharpe", "key_label": "sharpe", "metrics": rules}}}


def test_a_gate_must_name_another_metric_of_its_table() -> None:
    assert params_from_dict(grading_section("sharpe")).grading["ppo"] == default_grading()["ppo"]
    listed = "gate 'sharp' is not another metric of its table; valid gates: sharpe, sharpe_ci_low;"
    with pytest.raises(ConfigError, match=re.escape(listed)):
        params_from_dict(grading_section("sharp"))
    with pytest.raises(ConfigError, match="gate 'max_drawdown' is not another metric"):  # not itself
        params_from_dict(grading_section("max_drawdown"))


# -- the graded interval is reported -------------------------------------------------


def test_agents_report_the_bootstrap_interval_of_their_test_sharpe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_envs import panel
    from trade_agent.agents.train import train_agent
    from trade_agent.evaluation import suite
    from trade_agent.io import read_json

    calls: list[tuple[np.ndarray, float, int]] = []

    def recorded(returns: np.ndarray, periods_per_year: float, **kwargs: int) -> tuple[float, float]:
        calls.append((np.asarray(returns).copy(), periods_per_year, kwargs["seed"]))
        return sharpe_interval(returns, periods_per_year, **kwargs)

    monkeypatch.setattr(suite, "sharpe_interval", recorded)  # the one metrics suite's bootstrap
    rl = {"common": {"window": 5, "episode_length": 40, "eval_freq": 64}}
    rl["ppo"] = {"net_arch": [16], "n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 2, "total_timesteps": 64}
    params = params_from_dict({"base": {"seed": 3}, "rl": rl})
    panels = {"train": panel(200, seed=1), "val": panel(80, seed=2), "test": panel(80, seed=3)}
    run = train_agent("ppo", params, panels, tmp_path / "ppo")
    low, high = run.metrics["test/sharpe_ci_low"], run.metrics["test/sharpe_ci_high"]
    assert read_json(tmp_path / "ppo" / "metrics.json")["test/sharpe_ci_low"] == low
    # Bootstrapped once, with the run's seed, from the very returns test/sharpe is computed on.
    [(returns, periods_per_year, seed)] = calls
    assert seed == 3 and periods_per_year == panels["test"].periods_per_year == run.metrics["periods_per_year"]
    test_sharpe = metrics_of(returns, np.zeros((returns.size, 2)), periods_per_year=periods_per_year)["sharpe"]
    assert test_sharpe == pytest.approx(run.metrics["test/sharpe"])
    # ...and the evaluate section's bootstrap settings, as every other report of a Sharpe interval.
    evaluate = params.evaluate
    assert (low, high) == sharpe_interval(
        returns, periods_per_year, samples=evaluate.bootstrap_samples, block_length=evaluate.block_length, seed=3
    )
    assert low < run.metrics["test/sharpe"] < high


def test_ensembles_report_the_bootstrap_interval_on_both_splits(tmp_path: Path) -> None:
    from trade_agent.config.ensemble import EnsembleConfig
    from trade_agent.config.evaluation import EvaluateConfig
    from trade_agent.config.rl import RLCommonConfig
    from trade_agent.ensemble.combine import MemberRuns
    from trade_agent.ensemble.stage import Member, build_ensemble, ensemble_backtest
    from trade_agent.market.backtest import backtest

    common = RLCommonConfig()
    rng = np.random.default_rng(0)

    def runs(bars: int) -> MemberRuns:
        close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, (bars + 1, 2)), axis=0))
        open_ = close * np.exp(rng.normal(0, 0.002, close.shape))
        weights = np.clip(rng.normal(0.2, 0.3, (2, bars, 2)), -0.5, 0.5)
        results = [
            backtest(
                w, open_, close, 0, common.cost_bps, common.slippage_bps, common.max_leverage, periods_per_year=PPY
            )
            for w in weights
        ]
        return MemberRuns(weights, results, open_, close, PPY)

    val, test_runs = runs(120), runs(120)
    members = [Member("a", "ppo", None), Member("b", "sac", None)]
    first = build_ensemble(EnsembleConfig(), members, val, test_runs, common, tmp_path / "one", seed=7)
    assert first.metrics["periods_per_year"] == PPY
    again = build_ensemble(EnsembleConfig(), members, val, test_runs, common, tmp_path / "two", seed=7)
    for split in ("val", "test"):
        low, high = first.metrics[f"{split}/sharpe_ci_low"], first.metrics[f"{split}/sharpe_ci_high"]
        assert low < high
        assert (low, high) == (again.metrics[f"{split}/sharpe_ci_low"], again.metrics[f"{split}/sharpe_ci_high"])
    other = build_ensemble(EnsembleConfig(), members, val, test_runs, common, tmp_path / "three", seed=8)
    assert other.metrics["test/sharpe"] == first.metrics["test/sharpe"]
    assert other.metrics["test/sharpe_ci_low"] != first.metrics["test/sharpe_ci_low"]  # the seed is threaded
    # The bounds are those of the combined returns on each split, after costs.
    val_sharpes = np.array([r.metrics["sharpe"] for r in val.results])
    for split, split_runs in (("val", val), ("test", test_runs)):
        result, _ = ensemble_backtest(EnsembleConfig(), split_runs, val_sharpes, common, EvaluateConfig(), 7)
        assert result.metrics["sharpe"] == pytest.approx(first.metrics[f"{split}/sharpe"])
        expected = sharpe_interval(result.returns, PPY, seed=7)
        assert (first.metrics[f"{split}/sharpe_ci_low"], first.metrics[f"{split}/sharpe_ci_high"]) == expected
