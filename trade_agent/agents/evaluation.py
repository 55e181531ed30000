"""Deterministic evaluation of a policy over a whole split, and the val-Sharpe callback."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from trade_agent.market.simulator import MarketPanel, SimulatorConfig
from trade_agent.market.trading import trading_metrics
from trade_agent.market.trading_env import PortfolioEnv

log = logging.getLogger(__name__)
Predict = Callable[[np.ndarray], np.ndarray]


class Episode(NamedTuple):
    """One deterministic pass over a panel."""

    returns: np.ndarray  # simple returns after costs, per decision
    weights: np.ndarray  # (K, N) targets as executed
    total_reward: float
    turnover: np.ndarray  # traded notional per fill (what costs are charged on)
    next_target: np.ndarray | None = None  # (N,) the decision at the panel's last bar (``decide_last``)


def run_episode(
    predict: Predict, panel: MarketPanel, config: SimulatorConfig, discrete: bool = False, decide_last: bool = False
) -> Episode:
    """One pass over the whole panel.

    The observations are those of training (``episode_length`` still scales the time in
    position); only the episode's end moves to the panel's last bar. ``decide_last`` also
    asks the policy at the last bar, whose fill lies beyond the panel: the target for the
    next bar, as ``trade-agent predict`` reports it, from the state this run reached.
    """
    env = PortfolioEnv(panel, config, discrete=discrete)
    obs, _ = env.reset(options={"to_end": True})
    returns, weights, turnover, total, done = [], [], [], 0.0, False
    while not done:
        obs, reward, done, _, info = env.step(predict(obs))
        returns.append(float(np.expm1(info["growth"])))
        weights.append(info["target"])
        turnover.append(info["turnover"])
        total += reward
    next_target = np.array(env.decision(predict(obs))) if decide_last else None
    return Episode(np.array(returns), np.array(weights), total, np.array(turnover), next_target)


def evaluate(
    predict: Predict,
    panel: MarketPanel,
    config: SimulatorConfig,
    discrete: bool = False,
) -> dict[str, float]:
    """Trading metrics of a deterministic policy on ``panel`` (returns after costs),
    annualised with the panel's ``periods_per_year``."""
    return episode_metrics(run_episode(predict, panel, config, discrete), panel.periods_per_year)


def episode_metrics(episode: Episode, periods_per_year: float) -> dict[str, float]:
    """Trading metrics of ``episode``, annualised with ``periods_per_year`` bars a year."""
    return trading_metrics(
        episode.returns,
        episode.weights,
        periods_per_year=periods_per_year,
        episode_rewards=np.array([episode.total_reward]),
        traded=episode.turnover,
    )


def sharpe_standard_error(sharpe: float, n: int, periods_per_year: float) -> float:
    """Standard error of an annualised Sharpe ratio estimated from ``n`` i.i.d. periods (Lo, 2002)."""
    per_period = sharpe / np.sqrt(periods_per_year)
    return float(np.sqrt((1.0 + 0.5 * per_period**2) / max(n, 1)) * np.sqrt(periods_per_year))


class ValSharpeCallback(BaseCallback):
    """Every ``eval_freq`` steps, evaluate on the validation panel and keep the selected policy.

    A policy replaces the selected one only when its validation Sharpe is higher by
    ``margin`` standard errors (:func:`sharpe_standard_error` over the validation bars);
    with ``evaluate_at_start`` the starting policy (a warm start) is the first candidate, so
    training keeps it unless it finds something clearly better on validation.
    """

    def __init__(
        self,
        val_panel: MarketPanel,
        config: SimulatorConfig,
        eval_freq: int,
        discrete: bool = False,
        on_evaluate: Callable[[int, float], None] | None = None,
        margin: float = 0.0,
        evaluate_at_start: bool = False,
    ):
        super().__init__()
        self.on_evaluate = on_evaluate  # (step, val Sharpe), e.g. an Optuna pruner
        self.val_panel, self.sim_config, self.eval_freq, self.discrete = val_panel, config, eval_freq, discrete
        self.margin, self.evaluate_at_start = margin, evaluate_at_start
        self.best_sharpe = -np.inf
        self.best_step = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self.next_evaluation = eval_freq

    def _predict(self, obs: np.ndarray) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(action)

    def evaluate_now(self) -> None:
        metrics = evaluate(self._predict, self.val_panel, self.sim_config, self.discrete)
        self.history.append({"step": float(self.num_timesteps), **{f"val/{k}": v for k, v in metrics.items()}})
        bars = self.val_panel.n_bars - self.sim_config.window
        required = self.best_sharpe + self.margin * sharpe_standard_error(
            metrics["sharpe"], bars, self.val_panel.periods_per_year
        )
        if self.best_state is None or metrics["sharpe"] > required:
            self.best_sharpe, self.best_step = metrics["sharpe"], self.num_timesteps
            self.best_state = copy.deepcopy(self.model.policy.state_dict())
        log.info("step %d val/sharpe %.3f (best %.3f)", self.num_timesteps, metrics["sharpe"], self.best_sharpe)
        if self.on_evaluate is not None:
            self.on_evaluate(self.num_timesteps, metrics["sharpe"])

    def _on_training_start(self) -> None:
        if self.evaluate_at_start and self.best_state is None:
            self.evaluate_now()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_evaluation:
            self.next_evaluation += self.eval_freq
            self.evaluate_now()
        return True

    def _on_training_end(self) -> None:
        self.evaluate_now()  # the final policy competes too
