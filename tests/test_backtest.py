"""The vectorised backtester against an obviously-correct share-and-cash loop, the env, and baselines."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_envs import panel
from trade_agent.agents.evaluation import run_episode
from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR
from trade_agent.market.backtest import backtest, buy_and_hold_weights, equal_weight_weights
from trade_agent.market.simulator import SimulatorConfig

PPY = DAILY_PERIODS_PER_YEAR  # the test panels are daily


def slow_backtest(weights: np.ndarray, open_: np.ndarray, close: np.ndarray, start: int, rate: float) -> np.ndarray:
    """Shares and cash, one bar at a time: trade to the target at the next open, pay costs
    on the traded notional, mark at the close."""
    n = open_.shape[1]
    cash, shares, previous = 1.0, np.zeros(n), 1.0
    returns = []
    for k, target in enumerate(weights):
        t = start + k
        value = cash + shares @ open_[t + 1]
        traded = np.abs(target * value - shares * open_[t + 1]).sum()
        value -= rate * traded
        shares = target * value / open_[t + 1]
        cash = value - target.sum() * value
        marked = cash + shares @ close[t + 1]
        returns.append(marked / previous - 1.0)
        previous = marked
    return np.array(returns)


@pytest.mark.parametrize("n_assets", [1, 4])
def test_vectorised_backtest_equals_the_slow_loop_on_random_weights(n_assets: int) -> None:
    p = panel(n_bars=300, n_assets=n_assets, seed=11)
    rng = np.random.default_rng(0)
    weights = rng.uniform(-1, 1, (250, n_assets)) / n_assets
    weights[rng.random(weights.shape) < 0.2] = 0.0  # flats
    result = backtest(
        weights, p.open, p.close, start=20, cost_bps=10, slippage_bps=5, max_leverage=1.0, periods_per_year=PPY
    )
    expected = slow_backtest(weights, p.open, p.close, 20, 15e-4)
    np.testing.assert_allclose(result.returns, expected, rtol=1e-10, atol=1e-13)
    assert result.metrics["total_return"] == pytest.approx(np.prod(1 + expected) - 1, rel=1e-10)
    assert result.metrics["cost_paid"] > 0


def test_backtest_reproduces_the_environment() -> None:
    p = panel(n_bars=120, n_assets=3, seed=4)
    config = SimulatorConfig(window=5, cost_bps=5, slippage_bps=2, max_leverage=1.5)
    rng = np.random.default_rng(1)
    episode = run_episode(lambda obs: rng.uniform(-1, 1, 3), p, config)
    returns, weights, turnover = episode.returns, episode.weights, episode.turnover
    result = backtest(
        weights,
        p.open,
        p.close,
        start=config.window - 1,
        cost_bps=5,
        slippage_bps=2,
        max_leverage=1.5,
        periods_per_year=PPY,
    )
    np.testing.assert_allclose(result.returns, returns, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(result.turnover, turnover, rtol=1e-10, atol=1e-13)


def test_weights_never_see_the_future_and_fills_are_next_bar() -> None:
    p = panel(n_bars=100, n_assets=2, seed=5)
    weights = np.tile([0.5, -0.5], (60, 1))
    base = backtest(weights, p.open, p.close, start=10, periods_per_year=PPY)
    # Changing bar 40's prices changes results from the decision at bar 39 on (filled at
    # open[40], marked at close[40]), never before.
    bumped_open, bumped_close = p.open.copy(), p.close.copy()
    bumped_open[40] *= 1.03
    bumped_close[40] *= 0.97
    moved = backtest(weights, bumped_open, bumped_close, start=10, periods_per_year=PPY)
    np.testing.assert_array_equal(moved.returns[: 39 - 10], base.returns[: 39 - 10])
    assert moved.returns[39 - 10] != base.returns[39 - 10]


def test_baselines() -> None:
    p = panel(n_bars=80, n_assets=3, seed=6)
    k = 70
    hold = backtest(buy_and_hold_weights(p.open, 5, k), p.open, p.close, start=5, periods_per_year=PPY)
    np.testing.assert_allclose(hold.turnover[1:], 0.0, atol=1e-12)  # only the first fill trades
    assert hold.metrics["turnover"] == pytest.approx(1 / k)  # reported turnover is what was traded
    shares = (1 - 7e-4) / 3 / p.open[6]
    assert 1 + hold.metrics["total_return"] == pytest.approx(shares @ p.close[5 + k])
    rebalanced = backtest(equal_weight_weights(3, k), p.open, p.close, start=5, periods_per_year=PPY)
    assert rebalanced.turnover[0] == pytest.approx(1.0) and (rebalanced.turnover[1:] > 0).all()


def test_leverage_cap_and_bad_shapes() -> None:
    p = panel(n_bars=30, n_assets=2)
    result = backtest(np.tile([1.0, 1.0], (10, 1)), p.open, p.close, start=0, max_leverage=1.0, periods_per_year=PPY)
    np.testing.assert_allclose(np.abs(result.weights).sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="need prices up to bar 30"):
        backtest(np.zeros((25, 2)), p.open, p.close, start=5, periods_per_year=PPY)
    with pytest.raises(ValueError, match="do not match weights for 3 assets"):
        backtest(np.zeros((5, 3)), p.open, p.close, start=0, periods_per_year=PPY)


def test_bootstrap_interval_covers_the_true_sharpe_at_its_nominal_rate() -> None:
    from trade_agent.market.bootstrap import sharpe_interval, stationary_bootstrap_indices

    indices = stationary_bootstrap_indices(50, 200, block_length=5, seed=0)
    assert indices.shape == (200, 50) and indices.min() >= 0 and indices.max() < 50
    runs = np.diff(indices, axis=1) == 1
    assert 0.7 < runs.mean() < 0.9  # blocks continue with probability 1 - 1/5
    true_sharpe = 1.0  # annualised, from daily mean/std
    rng = np.random.default_rng(3)
    covered = 0
    for seed in range(60):
        r = rng.normal(true_sharpe / np.sqrt(PPY) * 0.01, 0.01, 500)
        low, high = sharpe_interval(r, PPY, samples=400, block_length=5, seed=seed)
        covered += low <= true_sharpe <= high
    assert covered >= 50  # ~95% nominal; 50/60 leaves room for sampling noise
    assert sharpe_interval(np.zeros(30), PPY) == (0.0, 0.0)


def reference_backtest(
    weights: np.ndarray, open_: np.ndarray, close: np.ndarray, start: int, rate: float, max_leverage: float
) -> tuple[np.ndarray, ...]:
    """The whole-array formulas the blocked backtester must reproduce float for float."""
    w = np.clip(weights.reshape(len(weights), -1), -1.0, 1.0)
    gross = np.abs(w).sum(axis=1)
    w = w * np.where(gross > max_leverage, max_leverage / np.maximum(gross, 1e-12), 1.0)[:, None]
    decision = np.arange(start, start + len(w))
    gap = open_[decision + 1] / close[decision] - 1.0
    day = close[decision + 1] / open_[decision + 1] - 1.0
    day_return = (w * day).sum(axis=1)
    end_of_day = w * (1.0 + day) / (1.0 + day_return)[:, None]
    held = np.vstack([np.zeros((1, w.shape[1])), end_of_day[:-1]])
    gap_return = (held * gap).sum(axis=1)
    drifted = held * (1.0 + gap) / (1.0 + gap_return)[:, None]
    turnover = np.abs(w - drifted).sum(axis=1)
    costs = (1.0 + gap_return) * turnover * rate
    returns = (1.0 + gap_return) * (1.0 - turnover * rate) * (1.0 + day_return) - 1.0
    return returns, w, turnover, costs


def reference_metrics(returns: np.ndarray, w: np.ndarray, turnover: np.ndarray, costs: np.ndarray) -> dict[str, float]:
    """trading_metrics' straightforward formulas (with ``traded``), plus cost_paid."""
    from trade_agent.market.trading import max_drawdown

    r, n = returns, len(returns)
    equity = np.cumprod(1.0 + r)
    total, years = float(equity[-1] - 1.0), n / PPY
    cagr = float(equity[-1] ** (1.0 / years) - 1.0) if equity[-1] > 0 else -1.0
    std, mean = float(r.std(ddof=1)) if n > 1 else 0.0, float(r.mean())
    downside_dev = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    drawdown = max_drawdown(np.r_[1.0, equity])
    moved = r[r != 0]
    metrics = {
        "total_return": total,
        "cagr": cagr,
        "volatility": std * np.sqrt(PPY),
        "sharpe": mean / std * np.sqrt(PPY) if std > 0 else 0.0,
        "sortino": mean / downside_dev * np.sqrt(PPY) if r[r < 0].size and downside_dev > 0 else 0.0,
        "max_drawdown": drawdown,
        "calmar": cagr / drawdown if drawdown > 0 else 0.0,
        "win_rate": float(np.mean(moved > 0)) if moved.size else 0.0,
        "roi_pct": 100.0 * total,
        "turnover": float(turnover.mean()),
        "exposure": float(np.mean(np.abs(w).sum(axis=1) > 0)),
        "cost_paid": float(costs.sum()),
    }
    return {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize(
    ("n_assets", "k", "start", "max_leverage", "bps", "drift"),
    [
        (1, 1, 0, 1.0, 7.0, 0.0),
        (1, 5000, 3, 0.5, 0.0, 5e-4),
        (2, 777, 11, 1.0, 15.0, 0.0),
        (4, 5000, 0, 1.0, 7.0, -2e-4),
        (4, 24_000, 7, 1.5, 25.0, 2e-3),  # several drawdown chunks
        (4, 4096, 1, 0.0, 5.0, 0.0),
        (7, 300, 2, 3.0, 10.0, 0.0),
        (9, 1000, 5, 2.0, 7.0, 0.0),  # > 7 assets: numpy's pairwise row sums
    ],
)
def test_blocked_backtest_is_float_for_float_the_whole_array_formulas(
    monkeypatch: pytest.MonkeyPatch, n_assets: int, k: int, start: int, max_leverage: float, bps: float, drift: float
) -> None:
    from trade_agent.market import backtest as module

    monkeypatch.setattr(module, "_BLOCK_ROWS", 256)  # many blocks and a short last one
    rng = np.random.default_rng(k + n_assets)
    close = 100 * np.exp(np.cumsum(rng.normal(drift, 0.01, (start + k + 2, n_assets)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.003, close.shape))
    weights = rng.uniform(-1.5, 1.5, (k, n_assets)) / np.sqrt(n_assets)
    weights[rng.random(weights.shape) < 0.2] = 0.0
    weights[rng.random(k) < 0.1] = -0.0  # flat rows, negative zeros
    if drift > 0:
        weights = np.abs(weights)  # long a rising market: a real drawdown to find
    result = backtest(weights, open_, close, start, bps, 0.0, max_leverage, periods_per_year=PPY)
    expected = reference_backtest(weights, open_, close, start, bps / 1e4, max_leverage)
    for got, want in zip((result.returns, result.weights, result.turnover, result.costs), expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # bit for bit, -0.0 included
    assert result.metrics == reference_metrics(*expected)
    assert list(result.metrics) == list(reference_metrics(*expected))


@pytest.mark.parametrize("n_columns", [1, 2, 3, 4, 5, 7, 8, 9, 16])
def test_column_by_column_row_sums_are_numpys(n_columns: int) -> None:
    from trade_agent.market.backtest import _row_sums

    rng = np.random.default_rng(n_columns)
    x = rng.normal(size=(5000, n_columns)) * 10.0 ** rng.integers(-8, 8, (5000, n_columns))
    x[rng.random(x.shape) < 0.1] = -0.0
    x[:3] = -0.0
    assert _row_sums(x, np.empty(len(x))).tobytes() == x.sum(axis=1).tobytes()


@pytest.mark.parametrize("drift", [-1e-3, 0.0, 1e-4, 5e-4, 2e-3])
def test_pruned_drawdown_is_the_full_running_peaks(drift: float) -> None:
    from trade_agent.market.trading import _drawdown_from_one, max_drawdown

    rng = np.random.default_rng(int(drift * 1e5) + 500)
    for size in (10, 4096 * 4, 4096 * 4 + 1, 60_001):
        r = rng.normal(drift, 0.01, size)
        if size > 10:
            r[rng.integers(0, size)] = -0.3  # a crash somewhere
        equity = np.cumprod(1.0 + r, dtype=np.float64)
        assert _drawdown_from_one(equity) == max_drawdown(np.r_[1.0, equity])
    r = np.r_[rng.normal(0, 0.01, 20_000), -1.5, rng.normal(0, 0.01, 100)]  # negative equity
    equity = np.cumprod(1.0 + r, dtype=np.float64)
    assert _drawdown_from_one(equity) == max_drawdown(np.r_[1.0, equity])
