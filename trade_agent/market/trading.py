"""Trading metrics after costs, shared by the RL evaluation and the backtester.

Inputs are per-period simple returns of the portfolio (net of costs), optionally with
positions for turnover and exposure. ``periods_per_year`` annualises: the dataset's bars per
year (:class:`trade_agent.data.frequency.BarFrequency`), never a fixed daily figure.
"""

from __future__ import annotations

import numpy as np

from trade_agent.type_aliases import FloatArray


def max_drawdown(equity: FloatArray) -> float:
    """Largest peak-to-trough fall of an equity curve, as a positive fraction."""
    equity = np.asarray(equity, dtype=np.float64)
    if equity.size == 0:
        return 0.0
    peaks = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peaks))


def trading_metrics(
    returns: FloatArray,
    positions: FloatArray | None = None,
    *,
    periods_per_year: float,
    episode_rewards: FloatArray | None = None,
    traded: FloatArray | None = None,
) -> dict[str, float]:
    """Total return, CAGR, volatility, Sharpe, Sortino, max drawdown, Calmar, turnover,
    win rate, exposure and mean episode reward.

    Args:
        returns: simple returns per period, net of costs, shape ``(T,)``.
        positions: target weights per period ``(T,)`` or ``(T, N)``; turnover is the mean
            sum of absolute weight changes per period (the first from flat), exposure the
            share of periods with any position.
        periods_per_year: bars per year for annualisation (the dataset's ``BarFrequency``).
        episode_rewards: total reward of each evaluation episode.
        traded: notional traded at each fill (sum of |target - drifted holdings|), the
            turnover costs are charged on; without it turnover is the mean change of the
            target weights, which counts price drift as trading.

    Sharpe and Sortino use a zero risk-free rate; a flat series has Sharpe 0. Win rate is
    the share of periods with a positive return among periods with a non-zero return.
    """
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    equity = np.cumprod(1.0 + r)
    total = float(equity[-1] - 1.0) if n else 0.0
    years = n / periods_per_year
    cagr = float(equity[-1] ** (1.0 / years) - 1.0) if n and equity[-1] > 0 else -1.0 if n else 0.0
    std = float(r.std(ddof=1)) if n > 1 else 0.0
    mean = float(r.mean()) if n else 0.0
    downside = r[r < 0]
    downside_dev = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))) if n else 0.0
    drawdown = max_drawdown(np.r_[1.0, equity])
    moved = r[r != 0]
    metrics = {
        "total_return": total,
        "cagr": cagr,
        "volatility": std * np.sqrt(periods_per_year),
        "sharpe": mean / std * np.sqrt(periods_per_year) if std > 0 else 0.0,
        "sortino": mean / downside_dev * np.sqrt(periods_per_year) if downside.size and downside_dev > 0 else 0.0,
        "max_drawdown": drawdown,
        "calmar": cagr / drawdown if drawdown > 0 else 0.0,
        "win_rate": float(np.mean(moved > 0)) if moved.size else 0.0,
        "roi_pct": 100.0 * total,
    }
    if positions is not None:
        w = np.asarray(positions, dtype=np.float64)
        w = w.reshape(len(w), -1)
        changes = np.abs(np.diff(np.vstack([np.zeros((1, w.shape[1])), w]), axis=0)).sum(axis=1)
        if traded is not None:
            changes = np.asarray(traded, dtype=np.float64)
        metrics["turnover"] = float(changes.mean()) if len(changes) else 0.0
        metrics["exposure"] = float(np.mean(np.abs(w).sum(axis=1) > 0)) if len(w) else 0.0
    if episode_rewards is not None and len(episode_rewards):
        metrics["mean_episode_reward"] = float(np.mean(episode_rewards))
    return {k: float(v) for k, v in metrics.items()}
