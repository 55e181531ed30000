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


def return_metrics(returns: FloatArray, *, periods_per_year: float) -> dict[str, float]:
    """The return-only part of :func:`trading_metrics` (everything but turnover, exposure and
    the mean episode reward), for callers that have the position series' figures already."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    # Each line computes exactly the figure of the straightforward form in its comment, with
    # one full-length scratch array (the backtester calls this on millions of bars).
    equity = np.add(r, 1.0)
    np.cumprod(equity, out=equity)  # np.cumprod(1.0 + r)
    total = float(equity[-1] - 1.0) if n else 0.0
    years = n / periods_per_year
    cagr = float(equity[-1] ** (1.0 / years) - 1.0) if n and equity[-1] > 0 else -1.0 if n else 0.0
    drawdown = _drawdown_from_one(equity)  # max_drawdown(np.r_[1.0, equity])
    scratch = equity  # no longer needed
    mean = float(np.add.reduce(r) / n) if n else 0.0  # r.mean()
    std = 0.0
    if n > 1:  # r.std(ddof=1): numpy's own steps
        np.subtract(r, mean, out=scratch)
        std = float(np.sqrt(np.add.reduce(np.square(scratch, out=scratch)) / (n - 1)))
    flags = np.less(r, 0.0)
    has_downside = bool(flags.any())  # r[r < 0].size
    np.minimum(r, 0.0, out=scratch)
    downside_dev = float(np.sqrt(np.mean(np.square(scratch, out=scratch)))) if n else 0.0  # mean(minimum(r, 0) ** 2)
    moved = np.count_nonzero(np.not_equal(r, 0.0, out=flags))  # r[r != 0].size
    wins = np.count_nonzero(np.greater(r, 0.0, out=flags))  # win rate = mean(r[r != 0] > 0)
    metrics = {
        "total_return": total,
        "cagr": cagr,
        "volatility": std * np.sqrt(periods_per_year),
        "sharpe": mean / std * np.sqrt(periods_per_year) if std > 0 else 0.0,
        "sortino": mean / downside_dev * np.sqrt(periods_per_year) if has_downside and downside_dev > 0 else 0.0,
        "max_drawdown": drawdown,
        "calmar": cagr / drawdown if drawdown > 0 else 0.0,
        "win_rate": wins / moved if moved else 0.0,
        "roi_pct": 100.0 * total,
    }
    return {k: float(v) for k, v in metrics.items()}


# Chunk length of the drawdown's pruning in :func:`_drawdown_from_one`.
_DRAWDOWN_CHUNK = 4096


def _drawdown_from_one(equity: FloatArray) -> float:
    """``max_drawdown(np.r_[1.0, equity])``, the same float, without copying ``equity`` and
    with the running peak computed only in the chunks that can hold the largest drawdown.

    Every drawdown is ``1 - e / P`` for an equity ``e`` and its running peak ``P``. In a chunk
    with lowest equity ``low > 0``, every peak lies between ``before`` (the running peak at
    the chunk's start, from 1.0) and ``upper = max(before, chunk high)``. So each drawdown in
    it is at most ``1 - low / upper`` (division and subtraction round monotonically, so the
    bound holds in floating point too). Chunks are computed exactly in decreasing order of
    that bound until it is no larger than the largest drawdown found; the maximum of floats
    does not depend on grouping.
    """
    size = equity.size
    if size == 0:
        return 0.0
    full = size // _DRAWDOWN_CHUNK * _DRAWDOWN_CHUNK
    if full < 4 * _DRAWDOWN_CHUNK or not np.isfinite(equity).all():
        return _drawdown_exact(equity, 1.0, fallback=True)
    chunks = equity[:full].reshape(-1, _DRAWDOWN_CHUNK)
    lows = chunks.min(axis=1)
    if not (lows > 0).all():
        return _drawdown_exact(equity, 1.0, fallback=True)
    highs = chunks.max(axis=1)
    before = np.maximum.accumulate(np.r_[1.0, highs])  # running peak before each chunk, and after all
    upper = 1.0 - lows / np.maximum(before[:-1], highs)
    drawdown = _drawdown_exact(equity[full:], float(before[-1])) if full < size else 0.0
    for c in np.argsort(-upper, kind="stable"):
        if upper[c] <= drawdown:
            break
        drawdown = max(drawdown, _drawdown_exact(chunks[c], float(before[c])))
    return drawdown


def _drawdown_exact(equity: FloatArray, peak: float, *, fallback: bool = False) -> float:
    """``max(1 - equity / running peak)``, the peak starting at ``peak``; with ``fallback``,
    exactly ``max_drawdown(np.r_[1.0, equity])``, NaN for NaN (the leading 1.0's drawdown of
    0 never exceeds the others: each is ``1 - e / P`` with ``e <= P``, so >= +0.0)."""
    peaks = np.maximum.accumulate(equity)
    np.maximum(peaks, peak, out=peaks)
    np.divide(equity, peaks, out=peaks)
    np.subtract(1.0, peaks, out=peaks)
    drawdown = float(np.max(peaks))
    if fallback and drawdown != drawdown:
        return max_drawdown(np.r_[1.0, equity])  # the same NaN
    return drawdown


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
    metrics = return_metrics(returns, periods_per_year=periods_per_year)
    if positions is not None:
        w = np.asarray(positions, dtype=np.float64)
        w = w.reshape(len(w), -1)
        if traded is not None:
            changes = np.asarray(traded, dtype=np.float64)
        else:
            changes = np.abs(np.diff(np.vstack([np.zeros((1, w.shape[1])), w]), axis=0)).sum(axis=1)
        metrics["turnover"] = float(changes.mean()) if len(changes) else 0.0
        metrics["exposure"] = float(np.mean(np.abs(w).sum(axis=1) > 0)) if len(w) else 0.0
    if episode_rewards is not None and len(episode_rewards):
        metrics["mean_episode_reward"] = float(np.mean(episode_rewards))
    return metrics
