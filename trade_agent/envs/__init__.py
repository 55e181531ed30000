"""Trading environments over precomputed panels (stage 2 trains its agents here)."""

from trade_agent.envs.simulator import MarketPanel, PortfolioSimulator, SimulatorConfig
from trade_agent.envs.trading_env import PortfolioEnv, VecPortfolioEnv

__all__ = ["MarketPanel", "PortfolioEnv", "PortfolioSimulator", "SimulatorConfig", "VecPortfolioEnv"]
