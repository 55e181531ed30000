"""Stage-2 agents: PPO, SAC, TD3 (stable-baselines3) on the trading environments."""

from trade_agent.agents.evaluation import ValSharpeCallback, evaluate, run_episode
from trade_agent.agents.factory import build_agent
from trade_agent.agents.policy_io import load_policy, load_sb3_model, save_policy

__all__ = [
    "ValSharpeCallback",
    "build_agent",
    "evaluate",
    "load_policy",
    "load_sb3_model",
    "run_episode",
    "save_policy",
]
