"""Section ``evaluate``: the backtest of every model on a split, and its report."""

from __future__ import annotations

from dataclasses import dataclass, field

from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class EvaluateConfig:
    """Attributes:
    split: the split every model is evaluated on (``test``; ``val`` for model selection work).
    cnn_lstm_threshold: a CNN-LSTM goes long (short) an asset when its predicted probability
        of "up" ("down") exceeds this, else stays flat; positions are ``max_leverage / N``.
    cost_sensitivity_bps: total costs per side (commission + slippage) for the sensitivity table.
    bootstrap_samples / block_length: stationary block bootstrap of the Sharpe ratio's 95% interval.
    """

    split: str = "test"
    cnn_lstm_threshold: float = 0.45
    cost_sensitivity_bps: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 25.0])
    bootstrap_samples: int = 2000
    block_length: int = 10

    def __post_init__(self) -> None:
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"evaluate.split: '{self.split}' is unknown; use train, val or test")
        if not 0 < self.cnn_lstm_threshold < 1:
            raise ConfigError("evaluate.cnn_lstm_threshold must be in (0, 1)")
        if any(c < 0 for c in self.cost_sensitivity_bps) or self.bootstrap_samples < 100 or self.block_length < 1:
            raise ConfigError("evaluate: costs >= 0, bootstrap_samples >= 100, block_length >= 1")
