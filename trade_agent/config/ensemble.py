"""Section ``ensemble``: stage 4, how members' target weights are combined."""

from __future__ import annotations

from dataclasses import dataclass

from trade_agent.errors import ConfigError

METHODS = ("sharpe_softmax", "majority_vote", "rolling_best")


@dataclass(frozen=True)
class EnsembleConfig:
    """Attributes:
    method: ``sharpe_softmax``, ``majority_vote`` or ``rolling_best`` (see ensemble/combine.py).
    temperature: softmax temperature over validation Sharpe ratios.
    lookback / rebalance_every: trailing window and re-pick period of ``rolling_best``, in bars.
    """

    method: str = "sharpe_softmax"
    temperature: float = 0.5
    lookback: int = 63
    rebalance_every: int = 21

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"ensemble.method: '{self.method}' is unknown; use one of {', '.join(METHODS)}")
        if self.temperature <= 0 or self.lookback < 2 or self.rebalance_every < 1:
            raise ConfigError("ensemble: temperature must be > 0, lookback >= 2 and rebalance_every >= 1")
