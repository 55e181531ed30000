"""Gymnasium and SB3-VecEnv faces of :class:`PortfolioSimulator`.

``PortfolioEnv`` is one portfolio (``check_env`` compliant). ``VecPortfolioEnv`` steps
``n_envs`` portfolios over the same panel in single numpy operations (different start
offsets), with SB3's auto-reset convention; it produces exactly the trajectories of the
same envs stepped one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from trade_agent.market.simulator import MarketPanel, PortfolioSimulator, SimulatorConfig
from trade_agent.market.single import SinglePortfolio

DISCRETE_WEIGHTS = np.array([-1.0, 0.0, 1.0])  # short / flat / long


def _spaces(sim: PortfolioSimulator | SinglePortfolio, discrete: bool) -> tuple[gym.Space[Any], gym.Space[Any]]:
    n = sim.panel.n_assets
    observation = gym.spaces.Box(-np.inf, np.inf, shape=(sim.observation_size,), dtype=np.float32)
    action: gym.Space[Any] = (
        gym.spaces.MultiDiscrete([3] * n) if discrete else gym.spaces.Box(-1.0, 1.0, shape=(n,), dtype=np.float32)
    )
    return observation, action


def _to_weights(actions: np.ndarray, discrete: bool) -> np.ndarray:
    return DISCRETE_WEIGHTS[np.asarray(actions, dtype=np.int64)] if discrete else np.asarray(actions)


class PortfolioEnv(gym.Env[np.ndarray, np.ndarray]):
    """One portfolio over a panel (stepped by :class:`SinglePortfolio`, plain floats).

    Args:
        panel: the split's arrays.
        config: execution/reward settings.
        random_start: draw the episode start uniformly (training); else start at the
            first bar with a full window (evaluation).
        discrete: ``MultiDiscrete`` short/flat/long per asset instead of ``Box(-1, 1)``.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self, panel: MarketPanel, config: SimulatorConfig, random_start: bool = False, discrete: bool = False
    ) -> None:
        super().__init__()
        self.sim = SinglePortfolio(panel, config)
        self.random_start, self.discrete = random_start, discrete
        self.observation_space, self.action_space = _spaces(self.sim, discrete)

    def _start(self) -> int:
        low, high = self.sim.first_start, self.sim.last_decision
        if not self.random_start or high <= low:
            return low
        latest = max(low, high - self.sim.config.episode_length + 1)
        return int(self.np_random.integers(low, latest + 1))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        start = int(options["start"]) if "start" in options else self._start()
        self.sim.reset(start, to_end=bool(options.get("to_end", False)))
        return self.sim.observe(), {"t": start}

    def decision(self, action: np.ndarray) -> list[float]:
        """The target weights ``action`` stands for (clipped, leverage-capped), without stepping."""
        return self.sim.target_weights(_to_weights(action, self.discrete))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        sim = self.sim
        obs, reward, done, info = sim.step_observe(_to_weights(action, True) if self.discrete else action)
        info["t"] = sim.t  # a fresh dict each step
        return obs, reward, done, False, info


class VecPortfolioEnv(VecEnv):
    """``n_envs`` portfolios stepped together (SB3 ``VecEnv``, auto-reset on episode end).

    Each step's infos hold SB3's keys only: ``TimeLimit.truncated`` (False: an episode's end
    is terminal) and, at an episode's end, ``terminal_observation``. The step's details
    (``cost``, ``turnover``, ``growth``, ``portfolio_value``, ``target``: row i is
    sub-env i, before any reset) are the arrays in :attr:`details`.

    Args:
        starts: fixed start bar per sub-env (deterministic), or None to draw them.
        seed: seeds the start draws.
    """

    def __init__(
        self,
        panel: MarketPanel,
        config: SimulatorConfig,
        n_envs: int,
        random_start: bool = True,
        discrete: bool = False,
        starts: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        self.sim = PortfolioSimulator(panel, config, n_envs)
        self.random_start, self.discrete = random_start, discrete
        self.fixed_starts = np.asarray(starts, dtype=np.int64) if starts is not None else None
        if self.fixed_starts is not None:
            low, high = self.sim.first_start, self.sim.last_decision
            if (
                self.fixed_starts.shape != (n_envs,)
                or not ((low <= self.fixed_starts) & (self.fixed_starts <= high)).all()
            ):
                raise ValueError(f"starts must be {n_envs} decision bars in {low}..{high}, not {list(starts or [])}")
        self.rng = np.random.default_rng(seed)
        observation, action = _spaces(self.sim, discrete)
        self.render_mode = None
        super().__init__(n_envs, observation, action)
        self._actions: np.ndarray | None = None
        self._envs = range(n_envs)
        self.details: dict[str, np.ndarray] = {}

    def _starts(self, envs: np.ndarray) -> np.ndarray:
        if self.fixed_starts is not None:
            return self.fixed_starts[envs]
        low, high = self.sim.first_start, self.sim.last_decision
        if not self.random_start or high <= low:
            return np.full(len(envs), low)
        latest = max(low, high - self.sim.config.episode_length + 1)
        return self.rng.integers(low, latest + 1, size=len(envs))

    def reset(self) -> VecEnvObs:
        envs = np.arange(self.num_envs)
        self.sim.reset(envs, self._starts(envs))
        return self.sim.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async must come first"
        rewards, done, self.details = self.sim.step(_to_weights(self._actions, self.discrete))
        observations = self.sim.observe()
        # SB3's keys only; the details stay arrays (``self.details``), not one dict per sub-env
        infos: list[dict[str, Any]] = [{"TimeLimit.truncated": False} for _ in self._envs]
        finished = done.nonzero()[0]
        if len(finished):
            terminal = observations[finished]
            for i, row in zip(finished.tolist(), terminal, strict=True):
                infos[i]["terminal_observation"] = row
            # the reset writes the restarted values into the state array these share
            self.details["portfolio_value"] = self.details["portfolio_value"].copy()
            self.sim.reset(finished, self._starts(finished))
            observations[finished] = self.sim.observe(finished)  # only the restarted rows change
        return observations, rewards.astype(np.float32), done, infos

    def close(self) -> None:
        return None

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(list(self._get_indices(indices)))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs) for _ in list(self._get_indices(indices))]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: Any = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))
