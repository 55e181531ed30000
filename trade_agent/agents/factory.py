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


def build_agent(
    algo: str,
    env: VecEnv,
    config: RLConfig,
    seed: int,
    tensorboard: str | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    learning_rate: float | None = None,
) -> BaseAlgorithm:
    """A fresh PPO/SAC/TD3 on ``env`` with the algorithm's params (CPU, seeded).

    ``policy_kwargs`` are added to the policy's (e.g. a features extractor for hybrids);
    ``learning_rate`` overrides the algorithm's.

    Raises:
        ConfigError: unknown algorithm, or a discrete action space for SAC/TD3.
    """
    common: dict[str, Any] = {"seed": seed, "device": "cpu", "verbose": 0, "tensorboard_log": tensorboard}
    extra = dict(policy_kwargs or {})
    if algo == "ppo":
        c = config.ppo
        return PPO(
            "MlpPolicy",
            env,
            learning_rate=learning_rate or c.learning_rate,
            n_steps=c.n_steps,
            batch_size=c.batch_size,
            n_epochs=c.n_epochs,
            gamma=c.gamma,
            ent_coef=c.ent_coef,
            policy_kwargs={"net_arch": list(c.net_arch), "log_std_init": c.log_std_init, **extra},
            **common,
        )
    if config.common.discrete:
        raise ConfigError(f"rl.common.discrete is true but {algo} needs continuous actions; use ppo or set it false")
    if algo in ("sac", "td3"):
        c = getattr(config, algo)
        off_policy: dict[str, Any] = {
            "learning_rate": learning_rate or c.learning_rate,
            "buffer_size": c.buffer_size,
            "learning_starts": c.learning_starts,
            "batch_size": c.batch_size,
            "train_freq": c.train_freq,
            "gradient_steps": c.gradient_steps,
            "gamma": c.gamma,
            "policy_kwargs": {"net_arch": list(c.net_arch), **extra},
        }
        if algo == "sac":
            return SAC("MlpPolicy", env, **off_policy, **common)
        n = env.action_space.shape[0]  # type: ignore[index]
        noise = NormalActionNoise(np.zeros(n), c.action_noise * np.ones(n)) if c.action_noise > 0 else None
        return TD3("MlpPolicy", env, action_noise=noise, **off_policy, **common)
    raise ConfigError(f"algorithm '{algo}' is unknown; use ppo, sac or td3")
