"""Section ``hybrid``: stage 3, the CNN-LSTM encoder inside an RL policy, fine-tuned end to end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trade_agent.config.rl import ALGOS
from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class HybridConfig:
    """Attributes:
    algos: which stage-2 agents get a hybrid (the ``hybrid`` matrix stage); default PPO.
    total_timesteps: fine-tuning steps.
    learning_rate: policy/value heads (the encoder's is ``encoder_learning_rate``).
    freeze_encoder_steps: the encoder stays fixed for the first K steps (heads adapt first).
    off_policy_encoder: SAC/TD3 run the encoder in every critic update: ``frozen`` keeps it
        fixed throughout, ``shared`` lets actor and critic share one (trained by the critic).
    """

    algos: list[str] = field(default_factory=lambda: ["ppo"])
    total_timesteps: int = 8192
    learning_rate: float = 0.0001
    encoder_learning_rate: float = 0.00003
    freeze_encoder_steps: int = 2048
    off_policy_encoder: Literal["frozen", "shared"] = "frozen"

    def __post_init__(self) -> None:
        unknown = [a for a in self.algos if a not in ALGOS]
        if unknown:
            raise ConfigError(f"hybrid.algos: '{unknown[0]}' is unknown; use any of {', '.join(ALGOS)}")
        if self.total_timesteps < 1 or self.learning_rate <= 0 or self.encoder_learning_rate < 0:
            raise ConfigError("hybrid: total_timesteps >= 1, learning_rate > 0, encoder_learning_rate >= 0")
        if self.freeze_encoder_steps < 0:
            raise ConfigError("hybrid.freeze_encoder_steps must be >= 0")
        if 0 < self.total_timesteps <= self.freeze_encoder_steps:
            raise ConfigError(
                f"hybrid.freeze_encoder_steps ({self.freeze_encoder_steps}) is not below hybrid.total_timesteps "
                f"({self.total_timesteps}), so the encoder would never train; lower freeze_encoder_steps "
                "(0 trains it from the start) or raise total_timesteps"
            )
