"""Stage 4: combine several members' target weights into one portfolio.

Each member (an agent or a hybrid) runs stand-alone over the split and yields its targets
``(K, N)``; the ensemble combines them bar by bar:

* ``sharpe_softmax``: average of the members' targets weighted by the softmax of their
  validation Sharpe ratios divided by ``temperature`` (low temperature -> the best member).
* ``majority_vote``: per asset, the sign most members hold (a strict majority; otherwise
  flat), sized ``max_leverage / N``.
* ``rolling_best``: every ``rebalance_every`` bars, follow the member with the best Sharpe
  over the trailing ``lookback`` bars of its own stand-alone returns (FinRL's ensemble).
  Only returns already realised at the decision count; before any history the member
  with the best validation Sharpe leads.

Members trade as if alone (their observations hold their own positions), which is how
each was trained; the ensemble's own fills and costs come from the backtester.
"""

from __future__ import annotations

import itertools

import numpy as np

from trade_agent.config.ensemble import EnsembleConfig
from trade_agent.errors import ConfigError
from trade_agent.type_aliases import FloatArray


def softmax_weights(val_sharpes: FloatArray, temperature: float) -> FloatArray:
    z = np.asarray(val_sharpes, dtype=np.float64) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def _sharpe(returns: FloatArray) -> float:
    std = returns.std(ddof=1) if len(returns) > 1 else 0.0
    return float(returns.mean() / std) if std > 0 else 0.0


def combine(
    member_weights: FloatArray,
    val_sharpes: FloatArray,
    config: EnsembleConfig,
    member_returns: FloatArray | None = None,
    max_leverage: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Ensemble targets ``(K, N)`` and each member's share of them per bar ``(K, M)``.

    Args:
        member_weights: ``(M, K, N)`` targets of the members at the same decision bars.
        val_sharpes: ``(M,)`` validation Sharpe of each member.
        member_returns: ``(M, K)`` stand-alone returns (needed by ``rolling_best``);
            ``member_returns[:, k]`` is realised after decision ``k``.
    """
    w = np.asarray(member_weights, dtype=np.float64)
    m, k, n = w.shape
    if config.method == "sharpe_softmax":
        alpha = np.tile(softmax_weights(val_sharpes, config.temperature), (k, 1))
        return np.einsum("km,mkn->kn", alpha, w), alpha
    if config.method == "majority_vote":
        longs, shorts = (w > 0).sum(axis=0), (w < 0).sum(axis=0)  # (K, N) members per side
        direction = np.where(longs > m / 2, 1.0, np.where(shorts > m / 2, -1.0, 0.0))
        agree = (np.sign(w) == direction[None]) & (direction[None] != 0)  # (M, K, N)
        share = agree.sum(axis=2).T / max(n, 1)
        return direction * max_leverage / n, share
    if member_returns is None:
        raise ConfigError("ensemble.method rolling_best needs the members' stand-alone returns")
    returns = np.asarray(member_returns, dtype=np.float64)
    leader = int(np.argmax(val_sharpes))
    chosen = np.empty(k, dtype=np.int64)
    for start in range(0, k, config.rebalance_every):
        history = returns[:, max(0, start - config.lookback) : start]  # realised before `start`
        if history.shape[1] >= 2:
            leader = int(np.argmax([_sharpe(r) for r in history]))
        chosen[start : start + config.rebalance_every] = leader
    alpha = np.zeros((k, m))
    alpha[np.arange(k), chosen] = 1.0
    return w[chosen, np.arange(k)], alpha


def directional_accuracy(weights: FloatArray, open_: FloatArray, close: FloatArray, start: int) -> float:
    """Share of (bar, asset) positions whose sign matches the bar they earn (open[t+1] -> close[t+1]),
    among non-flat positions."""
    w = np.asarray(weights, dtype=np.float64)
    k = len(w)
    day = close[start + 1 : start + k + 1] / open_[start + 1 : start + k + 1] - 1.0
    held = w != 0
    return float(np.mean(np.sign(w[held]) == np.sign(day[held]))) if held.any() else 0.0


def diversity(member_weights: FloatArray) -> float:
    """1 - mean pairwise correlation of the members' positions (pairs with a constant member skipped)."""
    flat = [np.asarray(w, dtype=np.float64).reshape(-1) for w in member_weights]
    correlations = [
        float(np.corrcoef(a, b)[0, 1]) for a, b in itertools.combinations(flat, 2) if a.std() > 0 and b.std() > 0
    ]
    return 1.0 - float(np.mean(correlations)) if correlations else 0.0
