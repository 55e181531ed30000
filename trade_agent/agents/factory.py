"""Build stable-baselines3 agents from the ``rl`` params."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecEnv

from trade_agent.config.rl import RLConfig
from trade_agent.errors import ConfigError


def net_arch(config: RLConfig, algo: str) -> list[int]:
    return list(getattr(config, algo).net_arch)


def build_agent(algo: str, env: VecEnv, config: RLConfig, seed: int, tensorboard: str | None = None) -> BaseAlgorithm:
    """A fresh PPO/SAC/TD3 on ``env`` with the algorithm's params (CPU, seeded).

    Raises:
        ConfigError: unknown algorithm, or a discrete action space for SAC/TD3.
    """
    common: dict[str, Any] = {"seed": seed, "device": "cpu", "verbose": 0, "tensorboard_log": tensorboard}
    if algo == "ppo":
        c = config.ppo
        return PPO(
            "MlpPolicy",
            env,
            learning_rate=c.learning_rate,
            n_steps=c.n_steps,
            batch_size=c.batch_size,
            n_epochs=c.n_epochs,
            gamma=c.gamma,
            ent_coef=c.ent_coef,
            policy_kwargs={"net_arch": list(c.net_arch)},
            **common,
        )
    if config.common.discrete:
        raise ConfigError(f"rl.common.discrete is true but {algo} needs continuous actions; use ppo or set it false")
    if algo == "sac":
        s = config.sac
        return SAC(
            "MlpPolicy",
            env,
            learning_rate=s.learning_rate,
            buffer_size=s.buffer_size,
            learning_starts=s.learning_starts,
            batch_size=s.batch_size,
            train_freq=s.train_freq,
            gradient_steps=s.gradient_steps,
            gamma=s.gamma,
            policy_kwargs={"net_arch": list(s.net_arch)},
            **common,
        )
    if algo == "td3":
        t = config.td3
        n = env.action_space.shape[0]  # type: ignore[index]
        noise = NormalActionNoise(np.zeros(n), t.action_noise * np.ones(n)) if t.action_noise > 0 else None
        return TD3(
            "MlpPolicy",
            env,
            learning_rate=t.learning_rate,
            buffer_size=t.buffer_size,
            learning_starts=t.learning_starts,
            batch_size=t.batch_size,
            train_freq=t.train_freq,
            gradient_steps=t.gradient_steps,
            gamma=t.gamma,
            action_noise=noise,
            policy_kwargs={"net_arch": list(t.net_arch)},
            **common,
        )
    raise ConfigError(f"algorithm '{algo}' is unknown; use ppo, sac or td3")
