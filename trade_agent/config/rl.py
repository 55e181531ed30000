"""Section ``rl``: stage-2 agents. ``rl.common`` is shared; each algorithm has its own
subsection so a change to one re-runs only that algorithm's stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from trade_agent.errors import ConfigError

ALGOS = ("ppo", "sac", "td3")


@dataclass(frozen=True)
class RLCommonConfig:
    """Environment and evaluation settings shared by every algorithm.

    Attributes:
        window: bars of market features in each observation.
        max_leverage: gross exposure cap (sum of |weights|).
        cost_bps / slippage_bps: charged on traded notional at each fill (next bar's open).
        drawdown_penalty: reward -= penalty * drawdown from the running peak.
        episode_length: training episode length in bars (random starts).
        eval_freq: environment steps between validation evaluations (best by val Sharpe).
        discrete: short/flat/long actions instead of continuous weights (PPO only).
        checkpoint_freq: environment steps between resumable checkpoints (outside DVC outputs).
        features: market features observed in the window (empty: every feature).
        embedding: observe the CNN-LSTM embedding too (its class probabilities and
            predicted return are always observed).
        warm_start: behaviour-clone the policy to the stage-1 threshold policy
            (``evaluate.cnn_lstm_threshold``) before RL, so training starts where stage 1 is.
        selection_margin: a later policy replaces the selected one only if its validation
            Sharpe is higher by this many standard errors (Lo, 2002) of a Sharpe estimated
            on the validation bars, so validation noise is not what gets selected.
    """

    window: int = 1
    max_leverage: float = 1.0
    cost_bps: float = 5.0
    slippage_bps: float = 2.0
    drawdown_penalty: float = 0.0
    episode_length: int = 256
    eval_freq: int = 2000
    discrete: bool = False
    checkpoint_freq: int = 1000
    features: list[str] = field(default_factory=lambda: ["ret_1", "ret_5", "rvol_20"])
    embedding: bool = False
    warm_start: bool = True
    selection_margin: float = 1.0

    def __post_init__(self) -> None:
        if self.selection_margin < 0:
            raise ConfigError("rl.common.selection_margin must be >= 0 (standard errors of the validation Sharpe)")
        if min(self.window, self.episode_length, self.eval_freq, self.checkpoint_freq) < 1:
            raise ConfigError("rl.common: window, episode_length, eval_freq and checkpoint_freq must be >= 1")
        if self.max_leverage <= 0 or self.cost_bps < 0 or self.slippage_bps < 0 or self.drawdown_penalty < 0:
            raise ConfigError("rl.common: max_leverage must be > 0; costs and penalty >= 0")


@dataclass(frozen=True)
class PPOConfig:
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    learning_rate: float = 0.0003
    total_timesteps: int = 20000
    n_envs: int = 8
    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 5
    gamma: float = 0.99
    ent_coef: float = 0.0
    log_std_init: float = 0.0  # exploration noise of the Gaussian policy: std = exp(log_std_init)


@dataclass(frozen=True)
class OffPolicyConfig:
    """Settings SAC and TD3 share (replay buffer, update cadence)."""

    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    learning_rate: float = 0.0003
    total_timesteps: int = 3000
    n_envs: int = 1
    buffer_size: int = 50000
    learning_starts: int = 500
    batch_size: int = 128
    train_freq: int = 4
    gradient_steps: int = 1
    gamma: float = 0.99


@dataclass(frozen=True)
class SACConfig(OffPolicyConfig):
    pass


@dataclass(frozen=True)
class TD3Config(OffPolicyConfig):
    learning_rate: float = 0.001
    action_noise: float = 0.1  # std of Gaussian exploration noise, in action units


@dataclass(frozen=True)
class RLConfig:
    """All of ``rl``: which algorithms the ``rl`` matrix stage trains, and their settings."""

    algos: list[str] = field(default_factory=lambda: list(ALGOS))
    common: RLCommonConfig = field(default_factory=RLCommonConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    td3: TD3Config = field(default_factory=TD3Config)

    def __post_init__(self) -> None:
        unknown = [a for a in self.algos if a not in ALGOS]
        if unknown:
            raise ConfigError(f"rl.algos: '{unknown[0]}' is unknown; use any of {', '.join(ALGOS)}")
