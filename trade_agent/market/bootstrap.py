"""Confidence intervals for the Sharpe ratio by the stationary block bootstrap.

Strategy returns are autocorrelated (positions persist), so resampling single bars would
understate the uncertainty; the stationary bootstrap (Politis & Romano, 1994)
resamples blocks of geometric length with mean ``block_length``.
"""

from __future__ import annotations

import numpy as np

from trade_agent.type_aliases import FloatArray


def stationary_bootstrap_indices(n: int, samples: int, block_length: float, seed: int) -> np.ndarray:
    """``(samples, n)`` resampling indices: a block continues with probability 1 - 1/block_length."""
    rng = np.random.default_rng(seed)
    indices = np.empty((samples, n), dtype=np.int64)
    indices[:, 0] = rng.integers(0, n, samples)
    restart = rng.random((samples, n)) < 1.0 / block_length
    fresh = rng.integers(0, n, (samples, n))
    for t in range(1, n):
        indices[:, t] = np.where(restart[:, t], fresh[:, t], (indices[:, t - 1] + 1) % n)
    return indices


def sharpe_interval(
    returns: FloatArray,
    periods_per_year: float,
    samples: int = 2000,
    block_length: float = 10.0,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the annualised Sharpe ratio (``(0, 0)`` for a flat series)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2 or r.std() == 0:
        return 0.0, 0.0
    resampled = r[stationary_bootstrap_indices(r.size, samples, block_length, seed)]
    std = resampled.std(axis=1, ddof=1)
    sharpe = np.where(std > 0, resampled.mean(axis=1) / np.where(std > 0, std, 1.0), 0.0) * np.sqrt(periods_per_year)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(sharpe, [tail, 1.0 - tail])
    return float(low), float(high)
