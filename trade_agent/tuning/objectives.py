"""Trial objectives: train with a trial's params on a budget, report validation scores.

* CNN-LSTM: minimise the best validation loss; every epoch's ``val/loss`` goes to the
  pruner. Preprocessing params (e.g. ``features.sequence_length``) are searched too: the
  features are rebuilt for each distinct preprocessing setting (cached by its hash).
* Agents: maximise the validation Sharpe of the selected policy; every validation
  evaluation goes to the pruner. The upstream features and embeddings are fixed.

The test split is never evaluated inside a trial.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from trade_agent.agents.train import load_panels, train_agent
from trade_agent.cnn_lstm.stage import train_cnn_lstm
from trade_agent.config import Params
from trade_agent.features.build import cached_features
from trade_agent.tuning.study import apply_trial_params, suggest

log = logging.getLogger(__name__)
Objective = Callable[[optuna.Trial], float]


def _pruner_hook(trial: optuna.Trial) -> Callable[[int, float], None]:
    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (value {value:.4f})")

    return report


def cnn_lstm_objective(params: Params, market: Path, work_dir: Path) -> Objective:

    search = params.optimize.search("cnn_lstm")

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, search.space) | {"cnn_lstm.epochs": search.budget}
        trial_params = apply_trial_params(params, values)
        features_dir = cached_features(trial_params, market, work_dir / "features")
        report = _pruner_hook(trial)
        run = train_cnn_lstm(
            trial_params,
            features_dir,
            work_dir / "trials" / str(trial.number),
            checkpoint_root=None,
            on_epoch=lambda epoch, metrics: report(epoch, metrics["val/loss"]),
            evaluate_test=False,
        )
        return float(run.metrics["val/loss"])

    return objective


def agent_objective(
    algo: str, params: Params, features_dir: Path, embeddings: Path, market: Path, work_dir: Path
) -> Objective:

    search = params.optimize.search(algo)
    panels_by_window: dict[int, Any] = {}  # panels depend only on rl.common.window (frozen, shareable)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, search.space) | {f"rl.{algo}.total_timesteps": search.budget}
        trial_params = apply_trial_params(params, values)
        window = trial_params.rl.common.window
        if window not in panels_by_window:
            panels_by_window[window] = load_panels(trial_params, features_dir, embeddings, market)
        panels = panels_by_window[window]
        run = train_agent(
            algo,
            trial_params,
            panels,
            work_dir / "trials" / str(trial.number),
            on_evaluate=_pruner_hook(trial),
            evaluate_test=False,
        )
        return float(run.metrics["val/sharpe"])

    return objective
