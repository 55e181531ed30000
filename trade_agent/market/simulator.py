"""Batched portfolio simulation on precomputed numpy panels (the environments' hot path).

Timing, per step (B sub-environments at once):

1. At decision bar ``t`` the agent has seen everything up to bar t's close.
2. The overnight move close[t] -> open[t+1] accrues to the weights it already holds.
3. It trades to the target weights **at open[t+1]**, paying ``cost_bps + slippage_bps`` on
   the traded notional (sum of absolute weight changes times portfolio value).
4. The new weights earn open[t+1] -> close[t+1]; the next decision is at bar t+1.

Reward = log(V[t+1] / V[t]) after costs, optionally minus ``drawdown_penalty`` times the
drawdown from the running peak. Without the penalty the rewards sum to the log growth of
the reported portfolio value, so reward and profit agree on costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trade_agent.type_aliases import FloatArray, IntArray

if TYPE_CHECKING:
    from trade_agent.config.rl import RLCommonConfig


@dataclass(frozen=True)
class MarketPanel:
    """Aligned arrays of one split: ``T`` bars x ``N`` assets.

    Attributes:
        features: ``(T, N, F)`` scaled market features (the observation window source).
        context: ``(T, N, E)`` stage-1 embedding + class probabilities of each bar.
        open / close: ``(T, N)`` prices.
        periods_per_year: bars per year of the data (its ``BarFrequency``): what every
            annualised metric of a run over this panel scales by.
        feature_names / context_names: the columns of ``features`` / ``context`` (empty
            when a panel is built by hand; observations then take every column).
    """

    features: np.ndarray
    context: np.ndarray
    open: FloatArray
    close: FloatArray
    periods_per_year: float
    feature_names: tuple[str, ...] = ()
    context_names: tuple[str, ...] = ()

    @property
    def n_bars(self) -> int:
        return int(self.open.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.open.shape[1])


@dataclass(frozen=True)
class SimulatorConfig:
    """Execution and reward settings (``rl.common`` in params.yaml)."""

    window: int = 10
    max_leverage: float = 1.0
    cost_bps: float = 5.0
    slippage_bps: float = 2.0
    drawdown_penalty: float = 0.0
    episode_length: int = 256

    @classmethod
    def from_common(cls, common: RLCommonConfig, window: int | None = None) -> SimulatorConfig:
        """The ``rl.common`` params (``window`` overrides, e.g. a hybrid's encoder length)."""
        return cls(
            window=window or common.window,
            max_leverage=common.max_leverage,
            cost_bps=common.cost_bps,
            slippage_bps=common.slippage_bps,
            drawdown_penalty=common.drawdown_penalty,
            episode_length=common.episode_length,
        )


class PortfolioSimulator:
    """State and dynamics of ``B`` portfolios over one :class:`MarketPanel`."""

    def __init__(self, panel: MarketPanel, config: SimulatorConfig, n_envs: int) -> None:
        if panel.n_bars < config.window + 1:
            raise ValueError(f"{panel.n_bars} bars cannot hold a window of {config.window} plus one step")
        self.panel, self.config, self.n_envs = panel, config, n_envs
        n = panel.n_assets
        self.t = np.zeros(n_envs, dtype=np.int64)
        self.end = np.zeros(n_envs, dtype=np.int64)
        self.start = np.zeros(n_envs, dtype=np.int64)
        self.weights = np.zeros((n_envs, n))
        self.value = np.ones(n_envs)
        self.peak = np.ones(n_envs)
        self.entry = np.ones((n_envs, n))
        self.held = np.zeros((n_envs, n))
        self._offsets = np.arange(-config.window + 1, 1)
        self.rate = (config.cost_bps + config.slippage_bps) / 1e4

    @property
    def first_start(self) -> int:
        return self.config.window - 1

    @property
    def last_decision(self) -> int:
        return self.panel.n_bars - 2  # a decision at t needs bar t+1 to fill and mark

    @property
    def observation_size(self) -> int:
        p = self.panel
        return self.config.window * p.n_assets * p.features.shape[2] + p.n_assets * (p.context.shape[2] + 3)

    def reset(self, envs: IntArray, starts: IntArray) -> None:
        """Start the given sub-environments flat with value 1 at bars ``starts``."""
        self.t[envs] = starts
        self.start[envs] = starts
        self.end[envs] = np.minimum(starts + self.config.episode_length, self.last_decision + 1)
        self.weights[envs] = 0.0
        self.value[envs] = 1.0
        self.peak[envs] = 1.0
        self.entry[envs] = 1.0
        self.held[envs] = 0.0

    def observe(self) -> np.ndarray:
        """``(B, observation_size)`` float32: feature window, context, portfolio state."""
        p = self.panel
        window = p.features[self.t[:, None] + self._offsets]  # (B, W, N, F): one gather
        close = p.close[self.t]
        unrealised = np.sign(self.weights) * np.log(close / self.entry)
        state = np.concatenate([self.weights, unrealised, self.held / self.config.episode_length], axis=1)
        return np.concatenate(
            [window.reshape(self.n_envs, -1), p.context[self.t].reshape(self.n_envs, -1), state], axis=1
        ).astype(np.float32)

    def target_weights(self, actions: np.ndarray) -> np.ndarray:
        """Clip to [-1, 1] and scale so gross exposure <= max_leverage."""
        a = np.clip(np.asarray(actions, dtype=np.float64).reshape(self.n_envs, -1), -1.0, 1.0)
        gross = np.abs(a).sum(axis=1)
        scale = np.where(gross > self.config.max_leverage, self.config.max_leverage / np.maximum(gross, 1e-12), 1.0)
        return a * scale[:, None]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance every sub-environment one bar; returns (rewards, done, details)."""
        p, t = self.panel, self.t
        target = self.target_weights(actions)
        # Overnight: close[t] -> open[t+1] on the weights held since the last fill.
        gap = p.open[t + 1] / p.close[t] - 1.0
        gap_return = (self.weights * gap).sum(axis=1)
        drifted = self.weights * (1.0 + gap) / (1.0 + gap_return)[:, None]
        value = self.value * (1.0 + gap_return)
        # Fill at open[t+1], paying costs on the traded notional.
        turnover = np.abs(target - drifted).sum(axis=1)
        cost = value * turnover * self.rate
        value = value - cost
        # Intraday: open[t+1] -> close[t+1] on the new weights.
        day = p.close[t + 1] / p.open[t + 1] - 1.0
        day_return = (target * day).sum(axis=1)
        new_value = value * (1.0 + day_return)
        flipped = np.sign(target) != np.sign(drifted)
        self.entry = np.where(flipped, p.open[t + 1], self.entry)
        self.held = np.where(flipped, 0.0, self.held + 1.0) * (target != 0)
        self.weights = target * (1.0 + day) / (1.0 + day_return)[:, None]
        growth = np.log(new_value / self.value)
        self.peak = np.maximum(self.peak, new_value)
        drawdown = 1.0 - new_value / self.peak
        rewards = growth - self.config.drawdown_penalty * drawdown
        self.value = new_value
        self.t = t + 1
        done = self.t >= self.end
        details = {"cost": cost, "turnover": turnover, "growth": growth, "portfolio_value": new_value, "target": target}
        return rewards, done, details
