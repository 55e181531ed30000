"""Behaviour cloning of a stage-2 policy to the stage-1 threshold policy, before RL.

An RL agent starting from random weights has to rediscover, from noisy after-cost rewards,
the signal that stage 1 already extracted. Cloning first makes stage 2 start where
stage 1 is: the policy's deterministic action is fitted (mean squared error; cross-entropy
for short/flat/long actions) to the targets that
:func:`trade_agent.cnn_lstm.model.threshold_weights` takes from the CNN-LSTM's class
probabilities, on observations the training environment produces while following those
targets. RL then fine-tunes from there (sizing, costs), and the validation selection keeps
the cloned policy unless a later one is clearly better (see
:class:`trade_agent.agents.evaluation.ValSharpeCallback`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch.nn import functional as F

from trade_agent.errors import ConfigError
from trade_agent.market.simulator import MarketPanel, SimulatorConfig
from trade_agent.market.trading_env import DISCRETE_WEIGHTS, VecPortfolioEnv

log = logging.getLogger(__name__)


def demonstrations(
    panel: MarketPanel, targets: np.ndarray, sim: SimulatorConfig, n_envs: int, steps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(observations, teacher targets) from ``n_envs`` portfolios following the teacher.

    The portfolio part of each observation is what holding the teacher's positions gives,
    so the clone sees the states it will meet when it acts like the teacher.
    """
    env = VecPortfolioEnv(panel, sim, n_envs=n_envs, seed=seed)
    observations: list[np.ndarray] = [np.asarray(env.reset())]
    actions = [targets[env.sim.t]]
    for _ in range(max(steps // n_envs, 1) - 1):
        obs, _, _, _ = env.step(actions[-1])
        observations.append(np.asarray(obs))
        actions.append(targets[env.sim.t])
    return np.concatenate(observations).astype(np.float32), np.concatenate(actions)


def _deterministic_action(policy: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The action ``predict(deterministic=True)`` takes, differentiably (continuous policies)."""
    if isinstance(policy, ActorCriticPolicy):
        distribution = policy.get_distribution(obs).distribution
        assert isinstance(distribution, torch.distributions.Normal)  # continuous actions
        return distribution.mean
    if isinstance(policy, SACPolicy):
        action: torch.Tensor = policy.actor(obs, deterministic=True)
        return action
    if isinstance(policy, TD3Policy):
        out: torch.Tensor = policy.actor.forward(obs)
        return out
    raise ConfigError(f"behaviour cloning does not support {type(policy).__name__}")


def clone_policy(
    model: BaseAlgorithm,
    observations: np.ndarray,
    targets: np.ndarray,
    *,
    discrete: bool = False,
    updates: int = 3000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> float:
    """Fit the policy's deterministic action to ``targets`` in ``updates`` Adam steps on
    shuffled mini-batches; returns the last mini-batch's loss.

    Only the actor is trained (critics learn from RL returns). TD3's target actor is synced.
    Short/flat/long policies are fitted by cross-entropy to the targets' signs.
    """
    policy = model.policy
    actor_params = _actor_parameters(policy)
    optimizer = torch.optim.Adam(actor_params, lr=learning_rate)
    obs = torch.as_tensor(observations, dtype=torch.float32)
    if discrete:
        target = torch.as_tensor(np.searchsorted(DISCRETE_WEIGHTS, np.sign(targets)), dtype=torch.long)
    else:
        target = torch.as_tensor(targets, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    policy.set_training_mode(True)
    loss = torch.zeros(())
    done = 0
    while done < updates:
        for index in torch.randperm(len(obs), generator=generator).split(batch_size)[: updates - done]:
            done += 1
            if discrete:
                assert isinstance(policy, ActorCriticPolicy)  # short/flat/long: PPO only
                loss = -policy.get_distribution(obs[index]).log_prob(target[index]).mean()
            else:
                loss = F.mse_loss(_deterministic_action(policy, obs[index]), target[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    policy.set_training_mode(False)
    if isinstance(policy, TD3Policy):
        policy.actor_target.load_state_dict(policy.actor.state_dict())
    final = float(loss.detach())
    log.info("warm start: behaviour cloning loss %.5f on %d demonstrations", final, len(obs))
    return final


def _actor_parameters(policy: torch.nn.Module) -> list[torch.nn.Parameter]:
    if isinstance(policy, (SACPolicy, TD3Policy)):
        return list(policy.actor.parameters())
    if isinstance(policy, ActorCriticPolicy):
        # Shared feature extractor + the actor's MLP and head; the value net is left alone.
        value = {id(p) for p in (*policy.mlp_extractor.value_net.parameters(), *policy.value_net.parameters())}
        return [p for p in policy.parameters() if id(p) not in value and p is not getattr(policy, "log_std", None)]
    raise ConfigError(f"behaviour cloning does not support {type(policy).__name__}")
