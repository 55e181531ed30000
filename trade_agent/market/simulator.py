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

A step is ~30 numpy calls on ``(B, N)`` arrays, so their fixed cost is the time: what does
not depend on the portfolios is computed once per panel (:func:`per_panel`): the per-bar
moves, gathered for all sub-envs in one ``take``, and each bar's observation without the
portfolio state (:func:`observation_prefix`). Every value is the same IEEE expression on
the same operands as the plain per-step formulas (``tests/test_envs.py`` steps both), so
trajectories are bit-for-bit those of the straightforward code.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from trade_agent.type_aliases import Float32Array, FloatArray, IntArray

if TYPE_CHECKING:
    from trade_agent.config.rl import RLCommonConfig

_T = TypeVar("_T")
PREFIX_BUDGET_BYTES = 64 << 20  # per panel and window, for :func:`observation_prefix`


def _constant(value: float) -> np.ndarray:
    """A read-only float64 0-d array: an operand numpy takes ~40 % faster than a Python float
    in small-array arithmetic, with the same float64 result (every hot-path operand is float64)."""
    array = np.array(value, dtype=np.float64)
    array.flags.writeable = False
    return array


_ONE, _MINUS_ONE, _ZERO, _TINY = _constant(1.0), _constant(-1.0), _constant(0.0), _constant(1e-12)


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


_PER_PANEL: dict[int, dict[Hashable, Any]] = {}


def per_panel(panel: MarketPanel, key: Hashable, build: Callable[[], _T]) -> _T:
    """``build()``, computed once per panel object and ``key`` and shared by every env over
    that panel (panels are immutable). The entries go when the panel does; they must not
    refer to the panel itself."""
    entries = _PER_PANEL.get(id(panel))
    if entries is None:
        entries = _PER_PANEL[id(panel)] = {}
        weakref.finalize(panel, _PER_PANEL.pop, id(panel), None)
    if key not in entries:
        entries[key] = build()
    value: _T = entries[key]
    return value


def observation_prefix(panel: MarketPanel, window: int) -> Float32Array | None:
    """Row t: bar t's float32 observation with a zero portfolio state (feature window, then
    context; rows before ``window - 1`` are unused), so an observation is one row copy plus
    the state; None when it would take more than ``PREFIX_BUDGET_BYTES``. Rounding the
    features to float32 first gives the same floats as rounding the whole observation."""
    n_bars, n = panel.n_bars, panel.n_assets
    size = window * n * panel.features.shape[2] + n * (panel.context.shape[2] + 3)
    if n_bars * size * 4 > PREFIX_BUDGET_BYTES:
        return None

    def build() -> Float32Array:
        per_bar = np.ascontiguousarray(panel.features.reshape(n_bars, -1))
        k = window * per_bar.shape[1]
        windows = np.lib.stride_tricks.as_strided(per_bar, shape=(n_bars - window + 1, k), strides=per_bar.strides)
        prefix = np.zeros((n_bars, size), dtype=np.float32)
        prefix[window - 1 :, :k] = windows
        prefix[:, k : size - 3 * n] = panel.context.reshape(n_bars, -1)
        prefix.flags.writeable = False
        return prefix

    return per_panel(panel, ("observation prefix", window), build)


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
        self.rate = (config.cost_bps + config.slippage_bps) / 1e4
        # The step's per-bar arrays (index t: from decision bar t to bar t+1), each the same
        # elementwise expression a step would evaluate, stacked so one gather fetches them.
        self._moves = per_panel(panel, "moves", lambda: _moves(panel))  # (T-1, 5, N)
        self._close = np.ascontiguousarray(panel.close)
        self._prefix = observation_prefix(panel, config.window)
        if self._prefix is None:
            self._windows = per_panel(panel, ("windows", config.window), lambda: _windows(panel, config.window))
            self._context = panel.context.reshape(panel.n_bars, -1)
        self._n, self._state = n, self.observation_size - 3 * n  # the portfolio state's width and start
        self._ones = np.ones(n_envs, dtype=np.int64)
        # Clipped to [-1, 1], N weights sum to at most N in any order of float additions, so
        # with N <= max_leverage the cap never scales (the scale would be exactly 1).
        self._capped = n > config.max_leverage
        self._rate, self._cap = _constant(self.rate), _constant(config.max_leverage)
        self._penalty, self._length = _constant(config.drawdown_penalty), _constant(config.episode_length)

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

    def observe(self, envs: IntArray | None = None) -> np.ndarray:
        """``(B, observation_size)`` float32: feature window, context, portfolio state
        (of the sub-environments ``envs`` only, in that order, if given)."""
        if envs is None:
            t, weights, entry, held = self.t, self.weights, self.entry, self.held
        else:
            t, weights, entry, held = self.t[envs], self.weights[envs], self.entry[envs], self.held[envs]
        n, k2 = self._n, self._state
        if self._prefix is not None:
            obs = self._prefix.take(t, axis=0)  # one gather: windows and context
        else:
            obs = np.empty((len(t), self.observation_size), dtype=np.float32)
            obs[:, : self._windows.shape[1]] = self._windows[t]  # one gather of contiguous windows
            obs[:, self._windows.shape[1] : k2] = self._context[t]
        # The state in float64, rounded once to float32 as it is written.
        obs[:, k2 : k2 + n] = weights
        obs[:, k2 + n : k2 + 2 * n] = np.sign(weights) * np.log(self._close.take(t, axis=0) / entry)
        obs[:, k2 + 2 * n :] = held / self._length
        return obs

    def target_weights(self, actions: np.ndarray) -> np.ndarray:
        """Clip to [-1, 1] and scale so gross exposure <= max_leverage."""
        a = np.array(actions, dtype=np.float64).reshape(self.n_envs, -1)  # a copy, clipped in place
        np.maximum(a, _MINUS_ONE, out=a)
        np.minimum(a, _ONE, out=a)
        if not self._capped:
            return a
        gross = np.abs(a).sum(axis=1)
        scale = np.where(gross > self._cap, self._cap / np.maximum(gross, _TINY), _ONE)
        return a * scale[:, None]

    def _row_sums(self, x: np.ndarray) -> np.ndarray:
        """``x.sum(axis=1)``; with one asset the sum is the column itself (numpy's sum of one
        term only turns -0.0 into 0.0, and every sum here is used as ``1 + sum`` or is >= 0)."""
        return x[:, 0] if x.shape[1] == 1 else x.sum(axis=1)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance every sub-environment one bar; returns (rewards, done, details)."""
        t, weights = self.t, self.weights
        target = self.target_weights(actions)
        gap, gap1, day, day1, open1 = self._moves.take(t, axis=0).transpose(1, 0, 2)  # one gather: the bars' moves
        # Overnight: close[t] -> open[t+1] on the weights held since the last fill.
        overnight = _ONE + self._row_sums(weights * gap)
        drifted = weights * gap1 / overnight[:, None]
        value = self.value * overnight
        # Fill at open[t+1], paying costs on the traded notional.
        turnover = self._row_sums(np.abs(target - drifted))
        cost = value * turnover * self._rate
        value = value - cost
        # Intraday: open[t+1] -> close[t+1] on the new weights.
        intraday = _ONE + self._row_sums(target * day)
        new_value = value * intraday
        flipped = np.sign(target) != np.sign(drifted)
        self.entry = np.where(flipped, open1, self.entry)
        # where(flipped, 0, held + 1) * (target != 0): held + 1 (>= 1) or +0.0
        held = self.held + _ONE
        held[flipped | (target == _ZERO)] = 0.0
        self.held = held
        self.weights = target * day1 / intraday[:, None]
        growth = np.log(new_value / self.value)
        self.peak = np.maximum(self.peak, new_value)
        drawdown = _ONE - new_value / self.peak
        rewards = growth - self._penalty * drawdown
        self.value = new_value
        self.t = t + self._ones
        done = self.t >= self.end
        details = {"cost": cost, "turnover": turnover, "growth": growth, "portfolio_value": new_value, "target": target}
        return rewards, done, details


def _windows(panel: MarketPanel, window: int) -> np.ndarray:
    """Row t: bar t's flat feature window (bars t - window + 1 .. t), a strided view of the
    features behind window - 1 rows of padding (never observed)."""
    per_bar = panel.features.reshape(panel.n_bars, -1)
    flat = np.zeros((window - 1 + panel.n_bars, per_bar.shape[1]), dtype=per_bar.dtype)
    flat[window - 1 :] = per_bar
    shape = (panel.n_bars, window * flat.shape[1])
    return np.lib.stride_tricks.as_strided(flat, shape=shape, strides=flat.strides, writeable=False)


def _moves(panel: MarketPanel) -> np.ndarray:
    """``(T-1, 5, N)``: gap, 1 + gap, day, 1 + day and open[t+1] of the step from bar t."""
    gap = panel.open[1:] / panel.close[:-1] - 1.0  # overnight close[t] -> open[t+1]
    day = panel.close[1:] / panel.open[1:] - 1.0  # intraday open[t+1] -> close[t+1]
    moves = np.stack([gap, 1.0 + gap, day, 1.0 + day, panel.open[1:]], axis=1)
    moves.flags.writeable = False
    return moves
