"""Vectorised backtest of target weights, with the environments' execution rules.

``weights[k]`` is the target decided after the close of bar ``start + k``. It fills at
open[t+1] (paying ``cost_bps + slippage_bps`` on the traded notional) and earns
open[t+1] -> close[t+1]; the overnight move close[t] -> open[t+1] accrues to what was held
before the fill, drifted by the previous bar's moves. These are exactly the dynamics of
:class:`trade_agent.market.simulator.PortfolioSimulator`, computed for the whole path at once:
portfolio weights are fractions, so each bar's growth factor depends only on the targets
and prices, never on the path of the portfolio value.

Baselines (:func:`buy_and_hold_weights`, :func:`equal_weight_weights`) are expressed as
target weights and run through the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trade_agent.market.trading import trading_metrics
from trade_agent.type_aliases import FloatArray

COST_SENSITIVITY_BPS = (0.0, 5.0, 10.0, 25.0)


@dataclass(frozen=True)
class BacktestResult:
    """Per-decision series (length ``K``) and the metrics suite after costs."""

    returns: FloatArray  # simple return of bar t+1 (overnight + fill costs + intraday)
    weights: FloatArray  # (K, N) targets as executed (clipped, leverage-capped)
    turnover: FloatArray  # sum |target - drifted holdings| at each fill
    costs: FloatArray  # costs paid at each fill, as a fraction of the portfolio value
    metrics: dict[str, float]

    @property
    def equity(self) -> FloatArray:
        return np.cumprod(1.0 + self.returns).astype(np.float64)

    @property
    def drawdown(self) -> FloatArray:
        equity = np.r_[1.0, self.equity]
        return (1.0 - equity / np.maximum.accumulate(equity))[1:]


def cap_leverage(weights: FloatArray, max_leverage: float) -> FloatArray:
    """Clip to [-1, 1] and scale rows so gross exposure <= ``max_leverage`` (the env's rule)."""
    w = np.clip(np.asarray(weights, dtype=np.float64), -1.0, 1.0)
    gross = np.abs(w).sum(axis=1)
    scale = np.where(gross > max_leverage, max_leverage / np.maximum(gross, 1e-12), 1.0)
    return w * scale[:, None]


def backtest(
    weights: FloatArray,
    open_: FloatArray,
    close: FloatArray,
    start: int,
    cost_bps: float = 5.0,
    slippage_bps: float = 2.0,
    max_leverage: float = 1.0,
    *,
    periods_per_year: float,
) -> BacktestResult:
    """Backtest ``weights`` (``(K, N)``) decided at bars ``start .. start + K - 1``.

    Args:
        open_, close: ``(T, N)`` prices; ``start + K`` must be a valid bar (the last fill).
        periods_per_year: the data's bars per year, for the annualised metrics.

    Raises:
        ValueError: shapes disagree or the weights run past the last bar.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w.reshape(len(w), -1)
    k, n = w.shape
    open_, close = np.asarray(open_, np.float64), np.asarray(close, np.float64)
    if open_.shape != close.shape or open_.ndim != 2 or open_.shape[1] != n:
        raise ValueError(f"prices {open_.shape}/{close.shape} do not match weights for {n} assets")
    if start < 0 or start + k >= len(open_):
        raise ValueError(f"weights for bars {start}..{start + k - 1} need prices up to bar {start + k}")
    w = cap_leverage(w, max_leverage)
    decision = np.arange(start, start + k)
    gap = open_[decision + 1] / close[decision] - 1.0
    day = close[decision + 1] / open_[decision + 1] - 1.0
    day_return = (w * day).sum(axis=1)
    end_of_day = w * (1.0 + day) / (1.0 + day_return)[:, None]
    held = np.vstack([np.zeros((1, n)), end_of_day[:-1]])
    gap_return = (held * gap).sum(axis=1)
    drifted = held * (1.0 + gap) / (1.0 + gap_return)[:, None]
    turnover = np.abs(w - drifted).sum(axis=1)
    rate = (cost_bps + slippage_bps) / 1e4
    costs = (1.0 + gap_return) * turnover * rate
    returns = (1.0 + gap_return) * (1.0 - turnover * rate) * (1.0 + day_return) - 1.0
    metrics = trading_metrics(returns, w, periods_per_year=periods_per_year, traded=turnover)
    metrics["cost_paid"] = float(costs.sum())
    return BacktestResult(returns, w, turnover, costs, metrics)


def buy_and_hold_weights(open_: FloatArray, start: int, k: int) -> FloatArray:
    """Equal money in every asset at the first fill, never rebalanced: each later target
    equals the drifted holdings, so only the first fill trades."""
    opens = np.asarray(open_, dtype=np.float64)[start + 1 : start + k + 1]
    value = opens / opens[0]
    return value / value.sum(axis=1, keepdims=True)


def equal_weight_weights(n_assets: int, k: int) -> FloatArray:
    """1/N in every asset, rebalanced at every fill."""
    return np.full((k, n_assets), 1.0 / n_assets)
