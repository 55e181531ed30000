"""One portfolio stepped with Python floats: :class:`PortfolioSimulator`'s dynamics at batch size 1.

With a single portfolio every numpy call works on a handful of numbers and its fixed
overhead (~1 us per call, ~30 calls per step) dominates; plain floats over the N assets
are several times faster. The timing and costs are exactly those documented in
:mod:`trade_agent.market.simulator`, and a test steps both side by side.
"""

from __future__ import annotations

import math

import numpy as np

from trade_agent.market.simulator import MarketPanel, SimulatorConfig


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


class SinglePortfolio:
    """State and dynamics of one portfolio over a panel."""

    def __init__(self, panel: MarketPanel, config: SimulatorConfig) -> None:
        if panel.n_bars < config.window + 1:
            raise ValueError(f"{panel.n_bars} bars cannot hold a window of {config.window} plus one step")
        self.panel, self.config = panel, config
        self.n_assets = panel.n_assets
        self.rate = (config.cost_bps + config.slippage_bps) / 1e4
        # Row-major per bar, so the window for bar t is one contiguous slice.
        self._features = np.ascontiguousarray(panel.features.reshape(panel.n_bars, -1), dtype=np.float32)
        self._context = np.ascontiguousarray(panel.context.reshape(panel.n_bars, -1), dtype=np.float32)
        self._open: list[list[float]] = np.asarray(panel.open, dtype=np.float64).tolist()
        self._close: list[list[float]] = np.asarray(panel.close, dtype=np.float64).tolist()
        self._window_size = self._features.shape[1] * config.window
        self.observation_size = self._window_size + self._context.shape[1] + 3 * self.n_assets
        self.reset(config.window - 1)

    @property
    def first_start(self) -> int:
        return self.config.window - 1

    @property
    def last_decision(self) -> int:
        return self.panel.n_bars - 2

    def reset(self, start: int, to_end: bool = False) -> None:
        """Start flat at bar ``start``; the episode runs ``episode_length`` bars, or to the
        panel's last decision with ``to_end`` (evaluation; observations are unchanged)."""
        n = self.n_assets
        self.t = self.start = start
        self.end = self.last_decision + 1 if to_end else min(start + self.config.episode_length, self.last_decision + 1)
        self.weights, self.entry, self.held = [0.0] * n, [1.0] * n, [0.0] * n
        self.value = self.peak = 1.0

    def observe(self) -> np.ndarray:
        t, k = self.t, self._window_size
        obs = np.empty(self.observation_size, dtype=np.float32)
        obs[:k] = self._features[t - self.config.window + 1 : t + 1].reshape(-1)
        k2 = k + self._context.shape[1]
        obs[k:k2] = self._context[t]
        close = self._close[t]
        n = self.n_assets
        obs[k2 : k2 + n] = self.weights
        obs[k2 + n : k2 + 2 * n] = [_sign(w) * math.log(c / e) for w, c, e in zip(self.weights, close, self.entry)]
        obs[k2 + 2 * n :] = [h / self.config.episode_length for h in self.held]
        return obs

    def target_weights(self, action: np.ndarray) -> list[float]:
        a = [min(max(x, -1.0), 1.0) for x in np.ravel(action).tolist()]
        if len(a) != self.n_assets:  # every zip below relies on N values
            raise ValueError(f"action has {len(a)} values for {self.n_assets} assets")
        gross = sum(map(abs, a))
        cap = self.config.max_leverage
        return [x * (cap / max(gross, 1e-12)) for x in a] if gross > cap else a

    def step(self, action: np.ndarray) -> tuple[float, bool, dict[str, float | np.ndarray]]:
        t = self.t
        target = self.target_weights(action)
        open1, close0, close1 = self._open[t + 1], self._close[t], self._close[t + 1]
        # Overnight on the held weights, fill at open[t+1] with costs, intraday on the target.
        gaps = [o / c - 1.0 for o, c in zip(open1, close0)]
        gap_return = sum([w * g for w, g in zip(self.weights, gaps)])
        drifted = [w * (1.0 + g) / (1.0 + gap_return) for w, g in zip(self.weights, gaps)]
        value = self.value * (1.0 + gap_return)
        turnover = sum([abs(a - b) for a, b in zip(target, drifted)])
        cost = value * turnover * self.rate
        value -= cost
        days = [c / o - 1.0 for c, o in zip(close1, open1)]
        day_return = sum([w * d for w, d in zip(target, days)])
        new_value = value * (1.0 + day_return)
        for i, (new, old) in enumerate(zip(target, drifted)):
            flipped = _sign(new) != _sign(old)
            if flipped:
                self.entry[i] = open1[i]
            self.held[i] = (0.0 if flipped else self.held[i] + 1.0) if new != 0 else 0.0
        self.weights = [w * (1.0 + d) / (1.0 + day_return) for w, d in zip(target, days)]
        growth = math.log(new_value / self.value)
        self.peak = max(self.peak, new_value)
        reward = growth - self.config.drawdown_penalty * (1.0 - new_value / self.peak)
        self.value = new_value
        self.t = t + 1
        details: dict[str, float | np.ndarray] = {
            "cost": cost,
            "turnover": turnover,
            "growth": growth,
            "portfolio_value": new_value,
            "target": np.array(target),
        }
        return reward, self.t >= self.end, details
