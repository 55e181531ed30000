"""Stage-2 environment benchmarks (``make bench``; ratios measured in the same run).

1. Single-asset raw env steps/s: :class:`PortfolioEnv` against gym-anytrading's
   ``stocks-v0`` (``StocksEnv``) on the same prices, same window, random actions (drawn
   before the clock starts). Both unwrapped (no ``gym.make`` checker wrappers).
2. Env-steps/s of the native :class:`VecPortfolioEnv` at 64 envs against 64 ``StocksEnv``
   in SB3's ``DummyVecEnv`` (how one would vectorise it), and against 64 of our own
   single envs in ``DummyVecEnv``.
3. SB3 PPO steps/s on the default stage-2 observation (4 assets, window 10, 35 features
   + embedding context) against an env that returns a constant observation of the same
   shape: the share of PPO's time the environment costs. One torch thread (the thread plan
   for SB3 policies), restored afterwards.

Every comparison alternates ours and the baseline run by run (the first of each pair
alternates too), ``PAIRS`` pairs, and prints the median pair: the one whose ratio is the
median of the pair ratios, so background load that changes during the benchmark hits
both sides alike and the printed rates divide to the printed ratio.

gym-anytrading is a benchmark-only dependency (``pip install -e .[bench]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR
from trade_agent.data.synthetic import SyntheticSpec, generate_synthetic
from trade_agent.market.simulator import MarketPanel, SimulatorConfig
from trade_agent.market.trading_env import PortfolioEnv, VecPortfolioEnv

WINDOW = 10
PAIRS = 9  # alternated runs of ours and the baseline per comparison (odd: one median pair)


def alternated(runs: Sequence[Callable[[], float]], pairs: int = PAIRS) -> tuple[list[float], list[list[float]]]:
    """Rates of ``runs`` (ours first, then the baselines) measured in ``pairs`` rounds, the
    order reversed every other round; returns the median round (by ours / first baseline)
    and every round."""
    rounds = []
    for k in range(pairs):
        order = range(len(runs)) if k % 2 == 0 else reversed(range(len(runs)))
        rates = [0.0] * len(runs)
        for i in order:
            rates[i] = runs[i]()
        rounds.append(rates)
    ranked = sorted(rounds, key=lambda r: r[0] / r[1])
    return ranked[(len(ranked) - 1) // 2], rounds


def _spread(rounds: list[list[float]]) -> str:
    ratios = [r[0] / r[1] for r in rounds]
    return f"median of {len(ratios)} alternated pairs; pair ratios {min(ratios):.2f}-{max(ratios):.2f}"


def _prices(n_bars: int) -> pd.DataFrame:
    return generate_synthetic(SyntheticSpec(n_symbols=1, n_bars=n_bars, seed=0)).reset_index(drop=True)


def _panel_like_anytrading(bars: pd.DataFrame) -> MarketPanel:
    """Our panel with gym-anytrading's signal features: price and its first difference."""
    close = bars["close"].to_numpy()
    features = np.stack([close, np.diff(close, prepend=close[0])], axis=-1)[:, None, :].astype(np.float32)
    return MarketPanel(
        features=features,
        context=np.zeros((len(bars), 1, 0), np.float32),
        open=bars["open"].to_numpy()[:, None],
        close=close[:, None],
        periods_per_year=DAILY_PERIODS_PER_YEAR,  # synthetic business-day bars
    )


def _anytrading(bars: pd.DataFrame) -> Any:
    from gym_anytrading.envs import StocksEnv

    frame = bars.rename(columns={"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume"})
    return StocksEnv(df=frame, window_size=WINDOW, frame_bound=(WINDOW, len(frame)))


def _steps_per_second(env: Any, actions: Sequence[Any]) -> float:
    """Steps/s over ``actions`` (drawn beforehand: drawing them is not the env's time)."""
    env.reset(seed=0)
    started = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - started)


def _vec_steps_per_second(env: VecEnv, steps: int) -> float:
    env.seed(0)
    env.reset()
    rng = np.random.default_rng(0)
    space = env.action_space
    if hasattr(space, "n"):
        actions = rng.integers(0, space.n, (steps, env.num_envs))
    else:
        actions = rng.uniform(-1, 1, (steps, env.num_envs, *(space.shape or ()))).astype(np.float32)
    started = time.perf_counter()
    for k in range(steps):
        env.step(actions[k])
    return steps * env.num_envs / (time.perf_counter() - started)


def bench_env(n_bars: int, steps: int, n_envs: int) -> None:
    try:
        import gym_anytrading  # noqa: F401
    except ImportError:
        print("env: gym-anytrading is not installed; `pip install -e .[bench]` (make bench does)")
        return
    bars = _prices(n_bars)
    panel = _panel_like_anytrading(bars)
    config = SimulatorConfig(window=WINDOW, cost_bps=5.0, slippage_bps=2.0, episode_length=n_bars)
    ours = PortfolioEnv(panel, config)
    theirs = _anytrading(bars)
    rng = np.random.default_rng(0)
    weights = list(rng.uniform(-1, 1, (steps, 1)).astype(np.float32))  # (1,) arrays, as a policy gives
    buy_sell = rng.integers(0, 2, steps).tolist()
    (fast, slow), rounds = alternated(
        [lambda: _steps_per_second(ours, weights), lambda: _steps_per_second(theirs, buy_sell)]
    )
    print(f"env: one asset, {n_bars:,} bars, window {WINDOW}, random actions, {steps:,} steps")
    print(f"  trade-agent PortfolioEnv:      {fast:12,.0f} steps/s")
    print(f"  gym-anytrading stocks-v0:      {slow:12,.0f} steps/s")
    print(f"  ratio (ours / gym-anytrading): {fast / slow:7.2f}x  ({_spread(rounds)})")

    vec_steps = max(steps // n_envs, 200)
    short = SimulatorConfig(window=WINDOW, cost_bps=5.0, slippage_bps=2.0, episode_length=256)
    vec = VecPortfolioEnv(panel, short, n_envs=n_envs, seed=0)
    dummy_theirs = DummyVecEnv([lambda: _anytrading(bars)] * n_envs)
    dummy_ours = DummyVecEnv([lambda: PortfolioEnv(panel, short, random_start=True)] * n_envs)
    (native, baseline, one_by_one), rounds = alternated(
        [
            lambda: _vec_steps_per_second(vec, vec_steps),
            lambda: _vec_steps_per_second(dummy_theirs, vec_steps),
            lambda: _vec_steps_per_second(dummy_ours, vec_steps),
        ]
    )
    print(f"vec env: {n_envs} envs, {vec_steps:,} vector steps")
    print(f"  trade-agent VecPortfolioEnv:              {native:12,.0f} env-steps/s")
    print(f"  DummyVecEnv of gym-anytrading stocks-v0:  {baseline:12,.0f} env-steps/s")
    print(f"  DummyVecEnv of our PortfolioEnv:          {one_by_one:12,.0f} env-steps/s")
    print(f"  ratio (native / gym-anytrading):          {native / baseline:7.2f}x  ({_spread(rounds)})")


class ConstantVecEnv(VecEnv):
    """Same spaces as the real env, zero observations and rewards, fixed-length episodes."""

    def __init__(self, like: VecEnv, episode_length: int) -> None:
        super().__init__(like.num_envs, like.observation_space, like.action_space)
        self.obs = np.zeros((like.num_envs, *like.observation_space.shape), np.float32)  # type: ignore[misc]
        self.episode_length, self.t = episode_length, 0

    def reset(self) -> np.ndarray:
        self.t = 0
        return self.obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self.t += 1

    def step_wait(self) -> Any:
        done = self.t % self.episode_length == 0
        dones = np.full(self.num_envs, done)
        infos: list[dict[str, Any]] = [
            {"terminal_observation": self.obs[0]} if done else {} for _ in range(self.num_envs)
        ]
        return self.obs.copy(), np.zeros(self.num_envs, np.float32), dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [None] * self.num_envs

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        pass

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [None] * self.num_envs

    def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
        return [False] * self.num_envs


def bench_ppo(timesteps: int, n_assets: int = 4, n_features: int = 35, context: int = 20) -> None:
    rng = np.random.default_rng(0)
    bars = 2000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (bars, n_assets)), axis=0))
    panel = MarketPanel(
        features=rng.standard_normal((bars, n_assets, n_features)).astype(np.float32),
        context=rng.standard_normal((bars, n_assets, context)).astype(np.float32),
        open=close * np.exp(rng.normal(0, 0.002, close.shape)),
        close=close,
        periods_per_year=DAILY_PERIODS_PER_YEAR,
    )
    config = SimulatorConfig(window=WINDOW, episode_length=256)
    real = VecPortfolioEnv(panel, config, n_envs=8, seed=0)
    constant = ConstantVecEnv(real, 256)

    def speed(env: VecEnv) -> float:
        model = PPO("MlpPolicy", env, n_steps=256, batch_size=256, n_epochs=5, seed=0, device="cpu")
        started = time.perf_counter()
        model.learn(timesteps)
        return model.num_timesteps / (time.perf_counter() - started)  # whole rollouts: >= timesteps

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread plan for SB3 policies: one thread
    try:
        (ours, trivial), rounds = alternated([lambda: speed(real), lambda: speed(constant)])
    finally:
        torch.set_num_threads(threads)
    size = real.observation_space.shape[0]  # type: ignore[index]
    print(f"PPO: {timesteps:,} steps, 8 envs, {n_assets} assets x window {WINDOW} -> observation of {size}")
    print(f"  on VecPortfolioEnv:             {ours:10,.0f} steps/s")
    print(f"  on a constant-observation env:  {trivial:10,.0f} steps/s")
    print(
        f"  ratio (real / constant):        {ours / trivial:7.2f}  (env share of PPO time {1 - ours / trivial:.0%})"
        f"  ({_spread(rounds)}, 1 torch thread)"
    )
