"""One portfolio stepped with Python floats: :class:`PortfolioSimulator`'s dynamics at batch size 1.

With a single portfolio every numpy call works on a handful of numbers and its fixed
overhead (~1 us per call, ~30 calls per step) dominates; plain floats over the N assets
are several times faster. The timing and costs are exactly those documented in
:mod:`trade_agent.market.simulator`, and a test steps both side by side.

The hot path does no per-step work that can be done once per panel (:class:`_Bars`,
shared by every portfolio over the same panel object and window): the per-bar moves
(overnight gap, intraday return, their ``1 +`` factors, the next open) are floats, and the
observation's feature window and context are one precomputed float32 row per bar
(:func:`~trade_agent.market.simulator.observation_prefix`; past its memory budget, a
strided view of the features). One asset, the single-instrument
case, is stepped on scalars. Every value is the same IEEE expression, in the same order,
as the plain per-step code: the sums over assets stay Python's ``sum`` (whose rounding
differs between Python versions), so nothing is re-associated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from trade_agent.market.simulator import MarketPanel, SimulatorConfig, observation_prefix, per_panel

Details = dict[str, float | np.ndarray]
_ONE_FLOAT = np.zeros(1)


class _Bars:
    """What a step and an observation read of each bar, computed once per panel and window."""

    def __init__(self, panel: MarketPanel, window: int) -> None:
        # Row-major per bar, so bar t's window is one contiguous slice.
        features = np.ascontiguousarray(panel.features.reshape(panel.n_bars, -1), dtype=np.float32)
        self.context = np.ascontiguousarray(panel.context.reshape(panel.n_bars, -1), dtype=np.float32)
        self.window_size = features.shape[1] * window
        self.state = self.window_size + self.context.shape[1]  # where the portfolio state starts
        self.observation_size = self.state + 3 * panel.n_assets
        # windows[j]: bar j + window - 1's feature window (a strided view, no copy)
        self.windows = np.lib.stride_tricks.as_strided(
            features,
            shape=(panel.n_bars - window + 1, self.window_size),
            strides=features.strides,
            writeable=False,
        )
        self.prefix = observation_prefix(panel, window)  # prefix[t]: bar t's, zero state (or None)
        # The step from decision bar t (index t), each value the expression the step
        # evaluates, on the same doubles (IEEE float64 operations: numpy's equal Python's).
        open_ = np.asarray(panel.open, dtype=np.float64)
        close = np.asarray(panel.close, dtype=np.float64)
        gap = open_[1:] / close[:-1] - 1.0  # overnight close[t] -> open[t+1]
        day = close[1:] / open_[1:] - 1.0  # intraday open[t+1] -> close[t+1]
        if panel.n_assets == 1:  # scalars: close[t], and (gap, 1 + gap, day, 1 + day, open[t+1])
            self.close1: list[float] = close[:, 0].tolist()
            self.moves1: list[tuple[float, ...]] = list(
                zip(*(x[:, 0].tolist() for x in (gap, 1.0 + gap, day, 1.0 + day, open_[1:])), strict=True)
            )
        else:
            self.close: list[list[float]] = close.tolist()
            self.open1: list[list[float]] = open_[1:].tolist()
            self.gap: list[list[float]] = gap.tolist()
            self.gap1: list[list[float]] = (1.0 + gap).tolist()
            self.day: list[list[float]] = day.tolist()
            self.day1: list[list[float]] = (1.0 + day).tolist()


class SinglePortfolio:
    """State and dynamics of one portfolio over a panel."""

    step_observe: Callable[[np.ndarray], tuple[np.ndarray, float, bool, Details]]
    """:meth:`step`, then :meth:`observe`: (observation, reward, done, details); fused, in
    one call, for one asset."""

    def __init__(self, panel: MarketPanel, config: SimulatorConfig) -> None:
        if panel.n_bars < config.window + 1:
            raise ValueError(f"{panel.n_bars} bars cannot hold a window of {config.window} plus one step")
        self.panel, self.config = panel, config
        self.n_assets = panel.n_assets
        self.rate = (config.cost_bps + config.slippage_bps) / 1e4
        self._penalty, self._cap, self._length = config.drawdown_penalty, config.max_leverage, config.episode_length
        self._bars = bars = per_panel(panel, ("single", config.window), lambda: _Bars(panel, config.window))
        self.observation_size = bars.observation_size
        self._one = self.n_assets == 1
        self.step_observe = self._step_observe_one if self._one else self._step_observe_many
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
        if not self.first_start <= start <= self.last_decision:
            raise ValueError(f"start {start} is outside the decision bars {self.first_start}..{self.last_decision}")
        n = self.n_assets
        self.t = self.start = start
        self.end = self.last_decision + 1 if to_end else min(start + self.config.episode_length, self.last_decision + 1)
        self.weights, self.entry, self.held = [0.0] * n, [1.0] * n, [0.0] * n
        self.value = self.peak = 1.0

    def _window(self, t: int) -> np.ndarray:
        """Bar t's observation, portfolio state not yet written."""
        bars = self._bars
        if bars.prefix is not None:
            return bars.prefix[t].copy()
        obs = np.empty(self.observation_size, dtype=np.float32)
        obs[: bars.window_size] = bars.windows[t - self.config.window + 1]
        obs[bars.window_size : bars.state] = bars.context[t]
        return obs

    def observe(self) -> np.ndarray:
        """Feature window, context, then weights, sign(w) * log(close / entry), time in
        position / episode_length (float32)."""
        t, k2 = self.t, self._bars.state
        obs = self._window(t)
        if self._one:
            w = self.weights[0]
            obs[k2] = w
            obs[k2 + 1] = ((w > 0) - (w < 0)) * math.log(self._bars.close1[t] / self.entry[0])
            obs[k2 + 2] = self.held[0] / self._length
            return obs
        weights, length = self.weights, self._length
        obs[k2:] = (
            weights
            + [((w > 0) - (w < 0)) * math.log(c / e) for w, c, e in zip(weights, self._bars.close[t], self.entry)]
            + [h / length for h in self.held]
        )
        return obs

    def _clipped(self, action: np.ndarray) -> list[float]:
        values = action.tolist() if type(action) is np.ndarray and action.ndim == 1 else np.ravel(action).tolist()
        if len(values) != self.n_assets:  # every zip below relies on N values
            raise ValueError(f"action has {len(values)} values for {self.n_assets} assets")
        return [min(max(x, -1.0), 1.0) for x in values]

    def target_weights(self, action: np.ndarray) -> list[float]:
        a = self._clipped(action)
        gross = sum(map(abs, a))
        cap = self._cap
        return [x * (cap / max(gross, 1e-12)) for x in a] if gross > cap else a

    def step(self, action: np.ndarray) -> tuple[float, bool, Details]:
        if self._one:
            _, reward, done, info = self._step_observe_one(action)
            return reward, done, info
        t, bars = self.t, self._bars
        target = self.target_weights(action)
        weights, entry, held = self.weights, self.entry, self.held
        # Overnight on the held weights, fill at open[t+1] with costs, intraday on the target.
        gap_return = sum([w * g for w, g in zip(weights, bars.gap[t])])
        overnight = 1.0 + gap_return
        drifted = [w * g1 / overnight for w, g1 in zip(weights, bars.gap1[t])]
        value = self.value * overnight
        turnover = sum([abs(a - b) for a, b in zip(target, drifted)])
        cost = value * turnover * self.rate
        value -= cost
        day_return = sum([w * d for w, d in zip(target, bars.day[t])])
        intraday = 1.0 + day_return
        new_value = value * intraday
        open1 = bars.open1[t]
        for i, (new, old) in enumerate(zip(target, drifted)):
            if ((new > 0) - (new < 0)) != ((old > 0) - (old < 0)):  # the sign flipped: a new entry
                entry[i] = open1[i]
                held[i] = 0.0
            else:
                held[i] = held[i] + 1.0 if new != 0 else 0.0
        self.weights = [w * d1 / intraday for w, d1 in zip(target, bars.day1[t])]
        growth = math.log(new_value / self.value)
        peak = self.peak
        if new_value > peak:  # max(peak, new_value)
            self.peak = peak = new_value
        reward = growth - self._penalty * (1.0 - new_value / peak)
        self.value = new_value
        self.t = t = t + 1
        details: Details = {
            "cost": cost,
            "turnover": turnover,
            "growth": growth,
            "portfolio_value": new_value,
            "target": np.array(target),
        }
        return reward, t >= self.end, details

    def _step_observe_many(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, Details]:
        reward, done, details = self.step(action)
        return self.observe(), reward, done, details

    def _step_observe_one(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, Details]:
        """:meth:`step_observe` for one asset, on scalars, in one frame.

        A sum of one term is ``0 + x``, which only turns -0.0 into 0.0: it is left out where
        the sum is only used as ``1 + sum`` or is an ``abs``.
        """
        if type(action) is np.ndarray and action.size == 1:
            x = action.item()
            if not -1.0 <= x <= 1.0:  # min(max(x, -1), 1), which keeps x itself when inside
                x = min(max(x, -1.0), 1.0)
        else:
            (x,) = self._clipped(action)
        cap = self._cap
        target = x * (cap / max(abs(x), 1e-12)) if abs(x) > cap else x
        bars, t = self._bars, self.t
        gap, gap1, day, day1, open1 = bars.moves1[t]
        w = self.weights[0]
        overnight = 1.0 + w * gap
        drifted = w * gap1 / overnight
        value = self.value * overnight
        turnover = abs(target - drifted)
        cost = value * turnover * self.rate
        value -= cost
        intraday = 1.0 + target * day
        new_value = value * intraday
        if (target > 0) != (drifted > 0) or (target < 0) != (drifted < 0):  # the sign flipped: a new entry
            self.entry[0] = open1
            held = self.held[0] = 0.0
        else:
            held = self.held[0] = self.held[0] + 1.0 if target != 0 else 0.0
        w = target * day1 / intraday
        self.weights = [w]
        growth = math.log(new_value / self.value)
        peak = self.peak
        if new_value > peak:  # max(peak, new_value)
            self.peak = peak = new_value
        reward = growth - self._penalty * (1.0 - new_value / peak)
        self.value = new_value
        self.t = t = t + 1
        if type(target) is float:  # np.array((target,)), from a float64 template
            target_array = _ONE_FLOAT.copy()
            target_array[0] = target
        else:
            target_array = np.array((target,))
        details: Details = {
            "cost": cost,
            "turnover": turnover,
            "growth": growth,
            "portfolio_value": new_value,
            "target": target_array,
        }
        k2 = bars.state
        prefix = bars.prefix
        obs = prefix[t].copy() if prefix is not None else self._window(t)
        obs[k2] = w
        obs[k2 + 1] = ((w > 0) - (w < 0)) * math.log(bars.close1[t] / self.entry[0])
        obs[k2 + 2] = held / self._length
        return obs, reward, t >= self.end, details
