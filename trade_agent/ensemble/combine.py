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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trade_agent.config.ensemble import EnsembleConfig
from trade_agent.config.loader import from_mapping
from trade_agent.config.rl import RLCommonConfig
from trade_agent.errors import ConfigError, DataSourceError
from trade_agent.evaluation.suite import run_backtest
from trade_agent.io import read_json
from trade_agent.market.backtest import BacktestResult
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


ENSEMBLE_SPEC = "ensemble.json"


@dataclass(frozen=True)
class EnsembleSpec:
    """``ensemble.json``: the combination as trained, which every later use must repeat.

    ``members``: name, model_type, model_id, val_sharpe, softmax_weight, test_sharpe.
    """

    config: EnsembleConfig
    members: list[dict[str, Any]]

    @property
    def val_sharpes(self) -> FloatArray:
        return np.array([float(m["val_sharpe"]) for m in self.members])

    @property
    def names(self) -> list[str]:
        return [str(m["name"]) for m in self.members]

    @classmethod
    def load(cls, directory: Path) -> EnsembleSpec:
        """Read and check ``directory/ensemble.json`` (untrusted: the config goes through the strict loader).

        Raises:
            DataSourceError: the file is missing or malformed.
        """
        path = directory / ENSEMBLE_SPEC
        if not path.is_file():
            raise DataSourceError(f"{path} not found; not an ensemble directory")
        raw = read_json(path)
        members = raw.get("members") if isinstance(raw, dict) else None
        if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members):
            raise DataSourceError(f"{path}: 'members' must list two or more members")
        for i, member in enumerate(members):
            if not isinstance(member.get("name"), str) or not isinstance(member.get("val_sharpe"), int | float):
                raise DataSourceError(f"{path}: members[{i}] needs a string 'name' and a numeric 'val_sharpe'")
        return cls(from_mapping(EnsembleConfig, raw.get("config", {}), "ensemble.json config"), members)


@dataclass
class MemberRuns:
    """Members' targets ``(M, K, N)`` on one split, their stand-alone backtests, the prices, and
    the data's bars per year (what the members' and the ensemble's metrics are annualised with)."""

    weights: FloatArray
    results: list[BacktestResult]
    open: FloatArray
    close: FloatArray
    periods_per_year: float

    @classmethod
    def backtested(
        cls,
        member_weights: list[FloatArray],
        open_: FloatArray,
        close: FloatArray,
        common: RLCommonConfig,
        periods_per_year: float,
    ) -> MemberRuns:
        """Each member's targets through the backtester on the same prices and execution settings."""
        weights = np.stack(member_weights)
        results = [run_backtest(w, open_, close, common, periods_per_year) for w in weights]
        return cls(weights, results, open_, close, periods_per_year)


def ensemble_targets(
    runs: MemberRuns,
    val_sharpes: FloatArray,
    config: EnsembleConfig,
    common: RLCommonConfig,
    next_weights: FloatArray | None = None,
) -> FloatArray:
    """The ensemble's targets ``(K, N)``: the one combination used by the stage, evaluation, inference and CLI.

    ``next_weights``: the members' ``(M, N)`` decisions at the bar after the runs' last decision
    (inference's target for the next bar); the result then has ``K + 1`` rows, the last one
    combined from the members' returns realised before it, like every other row.
    """
    member_returns = np.stack([r.returns for r in runs.results])
    weights = runs.weights if next_weights is None else np.concatenate([runs.weights, next_weights[:, None]], axis=1)
    combined, _ = combine(weights, val_sharpes, config, member_returns, common.max_leverage)
    return combined
