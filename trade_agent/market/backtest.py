"""Vectorised backtest of target weights, with the environments' execution rules.

``weights[k]`` is the target decided after the close of bar ``start + k``. It fills at
open[t+1] (paying ``cost_bps + slippage_bps`` on the traded notional) and earns
open[t+1] -> close[t+1]; the overnight move close[t] -> open[t+1] accrues to what was held
before the fill, drifted by the previous bar's moves. These are exactly the dynamics of
:class:`trade_agent.market.simulator.PortfolioSimulator`, computed for the whole path at once:
portfolio weights are fractions, so each bar's growth factor depends only on the targets
and prices, never on the path of the portfolio value. The path is processed in blocks of
bars small enough for the CPU cache, each block with the same element-wise operations (and
so the same floats) as the whole-array formulas in the comments.

Baselines (:func:`buy_and_hold_weights`, :func:`equal_weight_weights`) are expressed as
target weights and run through the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trade_agent.market.trading import return_metrics
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


# Rows per block of :func:`backtest`: a block's (rows, N) temporaries stay in the CPU cache,
# so the whole-path arrays are each read or written once.
_BLOCK_ROWS = 8192
# Up to this many columns numpy's ``x.sum(axis=1)`` adds a row's elements one after another
# to +0.0 (its pairwise summation unrolls only from 8); column by column, the same additions
# are ~10x faster than its per-row reduction. tests/test_backtest.py checks both agree.
_SEQUENTIAL_COLUMNS = 7


def _row_sums(x: FloatArray, out: FloatArray) -> FloatArray:
    """``x.sum(axis=1, out=out)``, bit for bit, for a C-contiguous ``(m, n)`` block."""
    n = x.shape[1]
    if n > _SEQUENTIAL_COLUMNS:
        return x.sum(axis=1, out=out)
    if n == 1:
        return np.add(x[:, 0], 0.0, out=out)
    np.add(x[:, 0], x[:, 1], out=out)
    for j in range(2, n):
        out += x[:, j]
    out += 0.0  # ((0.0 + x0) + x1) + ... differs from (x0 + x1) + ... only for all -0.0: +0.0
    return out


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
    targets = np.asarray(weights, dtype=np.float64)
    targets = targets.reshape(len(targets), -1)
    k, n = targets.shape
    open_, close = np.asarray(open_, np.float64), np.asarray(close, np.float64)
    if open_.shape != close.shape or open_.ndim != 2 or open_.shape[1] != n:
        raise ValueError(f"prices {open_.shape}/{close.shape} do not match weights for {n} assets")
    if start < 0 or start + k >= len(open_):
        raise ValueError(f"weights for bars {start}..{start + k - 1} need prices up to bar {start + k}")
    rate = (cost_bps + slippage_bps) / 1e4
    w = np.empty((k, n))
    returns, turnover, costs = np.empty(k), np.empty(k), np.empty(k)
    exposed = np.empty(k, dtype=bool)
    rows = min(k, _BLOCK_ROWS)
    # Row 0 holds the end-of-day weights of the bar before the block (flat before the first
    # fill); rows 1.. the block's own, so held = eod[:m] needs no copy.
    eod = np.zeros((rows + 1, n))
    gap, day, tmp = np.empty((rows, n)), np.empty((rows, n)), np.empty((rows, n))
    gross_, day_return_, gap_return_ = np.empty(rows), np.empty(rows), np.empty(rows)
    for lo in range(0, k, rows):
        hi = min(lo + rows, k)
        m = hi - lo
        b = start + lo  # the block's first decision bar
        wb, g, d, t, held, e = w[lo:hi], gap[:m], day[:m], tmp[:m], eod[:m], eod[1 : m + 1]
        # cap_leverage, row by row the same operations
        np.clip(targets[lo:hi], -1.0, 1.0, out=wb)
        gross = _row_sums(np.abs(wb, out=t), gross_[:m])
        over = gross > max_leverage
        if over.any():
            wb *= np.where(over, max_leverage / np.maximum(gross, 1e-12), 1.0)[:, None]
            np.greater(_row_sums(np.abs(wb, out=t), gross), 0, out=exposed[lo:hi])
        else:
            np.greater(gross, 0, out=exposed[lo:hi])
        # gap = open[t+1] / close[t] - 1; day = close[t+1] / open[t+1] - 1
        np.divide(open_[b + 1 : b + m + 1], close[b : b + m], out=g)
        g -= 1.0
        np.divide(close[b + 1 : b + m + 1], open_[b + 1 : b + m + 1], out=d)
        d -= 1.0
        day_return = _row_sums(np.multiply(wb, d, out=t), day_return_[:m])
        # end_of_day = w * (1 + day) / (1 + day_return)
        d += 1.0
        np.multiply(wb, d, out=e)
        day_return += 1.0
        e /= day_return[:, None]
        # held = end_of_day of the previous bar; gap_return = sum(held * gap)
        gap_return = _row_sums(np.multiply(held, g, out=t), gap_return_[:m])
        # drifted = held * (1 + gap) / (1 + gap_return); turnover = sum |w - drifted|
        g += 1.0
        np.multiply(held, g, out=t)
        gap_return += 1.0
        t /= gap_return[:, None]
        np.subtract(wb, t, out=t)
        traded = _row_sums(np.abs(t, out=t), turnover[lo:hi])
        # costs = (1 + gap_return) * turnover * rate
        np.multiply(gap_return, traded, out=costs[lo:hi])
        costs[lo:hi] *= rate
        # returns = (1 + gap_return) * (1 - turnover * rate) * (1 + day_return) - 1
        r = np.multiply(traded, rate, out=returns[lo:hi])
        np.subtract(1.0, r, out=r)
        r *= gap_return  # gap_return * (...) == (...) * gap_return exactly
        r *= day_return
        r -= 1.0
        eod[0] = eod[m]
    metrics = return_metrics(returns, periods_per_year=periods_per_year)
    # trading_metrics(returns, w, traded=turnover)'s turnover and exposure, from the blocks
    metrics["turnover"] = float(turnover.mean()) if k else 0.0
    metrics["exposure"] = float(np.count_nonzero(exposed) / k) if k else 0.0  # np.mean: the same exact quotient
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
