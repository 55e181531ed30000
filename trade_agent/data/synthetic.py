"""Seeded synthetic OHLCV with a planted, known-strength predictable component.

Close-to-close log returns follow a stationary Gaussian AR(1) per symbol,
``r[t+1] = phi * r[t] + sigma * eps``. Because everything is Gaussian, the best possible
(Bayes-optimal) accuracy of predicting the sign of the ``h``-bar forward return from the
past is known in closed form, so tests can check that a model learns what is there - and
no more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trade_agent.data.schema import MARKET_COLUMNS


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the generator."""

    n_symbols: int = 2
    n_bars: int = 1500
    ar: float = 0.3
    volatility: float = 0.01
    seed: int = 42
    start: str = "2000-01-03"
    freq: str = "B"


def bayes_directional_accuracy(ar: float, horizon: int = 1) -> float:
    """Best achievable accuracy for the sign of the ``horizon``-bar forward log return.

    For jointly Gaussian zero-mean (X, Y), P(sign X = sign Y) = 1/2 + arcsin(rho)/pi. The
    optimal predictor of R = r[t+1] + ... + r[t+h] given the past is proportional to r[t],
    so rho = corr(r[t], R) = sum_k phi^k / sqrt(h + 2 sum_{d<h} (h-d) phi^d).
    """
    if not -1.0 < ar < 1.0:
        raise ValueError(f"ar must be in (-1, 1) for a stationary process, got {ar}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    cov = sum(ar**k for k in range(1, horizon + 1))
    var_r = horizon + 2.0 * sum((horizon - d) * ar**d for d in range(1, horizon))
    rho = abs(cov) / math.sqrt(var_r)
    return 0.5 + math.asin(rho) / math.pi


def generate_synthetic(spec: SyntheticSpec) -> pd.DataFrame:
    """Long-format OHLCV for ``spec.n_symbols`` independent AR(1) instruments (deterministic)."""
    rng = np.random.default_rng(spec.seed)
    timestamps = pd.date_range(spec.start, periods=spec.n_bars, freq=spec.freq)
    frames = []
    for i in range(spec.n_symbols):
        eps = rng.standard_normal(spec.n_bars)
        returns = np.empty(spec.n_bars)
        # Start in the stationary distribution so early bars are not special.
        returns[0] = eps[0] * spec.volatility / math.sqrt(1.0 - spec.ar**2)
        for t in range(1, spec.n_bars):
            returns[t] = spec.ar * returns[t - 1] + spec.volatility * eps[t]
        close = 100.0 * np.exp(np.cumsum(returns))
        prev_close = np.concatenate([[100.0], close[:-1]])
        # The open sits between the previous and current close (part of the move happens
        # overnight), so open-to-open returns carry the same planted signal.
        open_ = prev_close * np.exp(returns * rng.uniform(0.0, 0.3, spec.n_bars))
        wick = np.abs(rng.standard_normal((2, spec.n_bars))) * spec.volatility * 0.5
        high = np.maximum(open_, close) * np.exp(wick[0])
        low = np.minimum(open_, close) * np.exp(-wick[1])
        volume = np.round(rng.lognormal(mean=13.0, sigma=0.4, size=spec.n_bars))
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": timestamps,
                    "symbol": f"SYN{i}",
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[list(MARKET_COLUMNS)]
