"""Trading metrics against values computed by hand."""

import numpy as np
import pytest

from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR
from trade_agent.market.trading import max_drawdown, trading_metrics


def test_hand_computed_values() -> None:
    r = np.array([0.10, -0.05, 0.02, -0.01])
    m = trading_metrics(r, positions=np.array([1.0, 1.0, -0.5, 0.0]), periods_per_year=4, episode_rewards=[1.0, 3.0])
    equity = [1.10, 1.045, 1.0659, 1.055241]
    assert m["total_return"] == pytest.approx(equity[-1] - 1)
    assert m["cagr"] == pytest.approx(equity[-1] - 1)  # exactly one year of 4 periods
    mean, std = r.mean(), r.std(ddof=1)
    assert m["volatility"] == pytest.approx(std * 2)
    assert m["sharpe"] == pytest.approx(mean / std * 2)
    assert m["sortino"] == pytest.approx(mean / np.sqrt((0.05**2 + 0.01**2) / 4) * 2)
    assert m["max_drawdown"] == pytest.approx(1 - 1.045 / 1.10)
    assert m["calmar"] == pytest.approx(m["cagr"] / m["max_drawdown"])
    assert m["win_rate"] == pytest.approx(0.5)
    assert m["turnover"] == pytest.approx((1 + 0 + 1.5 + 0.5) / 4)
    assert m["exposure"] == pytest.approx(0.75)
    assert m["mean_episode_reward"] == 2.0
    assert m["roi_pct"] == pytest.approx(100 * m["total_return"])


def test_flat_and_degenerate_series() -> None:
    flat = trading_metrics(np.zeros(10), periods_per_year=DAILY_PERIODS_PER_YEAR)
    assert flat["sharpe"] == 0 and flat["max_drawdown"] == 0 and flat["win_rate"] == 0
    assert max_drawdown(np.array([1.0, 2.0, 1.0, 3.0])) == pytest.approx(0.5)


def test_turnover_is_the_traded_notional_when_given() -> None:
    r = np.array([0.01, 0.02, -0.01, 0.0])
    drifting_targets = np.array([[0.5, 0.5], [0.52, 0.48], [0.49, 0.51], [0.5, 0.5]])
    m = trading_metrics(r, positions=drifting_targets, periods_per_year=4, traded=[1.0, 0.0, 0.0, 0.0])
    assert m["turnover"] == pytest.approx(0.25)  # only the first fill traded; drift is not trading
    assert trading_metrics(r, positions=drifting_targets, periods_per_year=4)["turnover"] > 0.25
