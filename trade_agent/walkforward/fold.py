"""One walk-forward fold: train the hierarchy on the fold's past, select on its val window, trade its test window.

The fold's models mirror the pipeline's (``cnn_lstm``, ``ppo``/``sac``/``td3``,
``hybrid_<algo>``, ``ensemble`` under the fold's directory) and are trained by the same
functions as the pipeline's stages, with ``walkforward.budget`` instead of the full budgets.
They are evaluated by the evaluate stage's own function on the fold's test window, with the
baselines. ``returns.parquet`` holds every model's and baseline's per-bar returns after
costs, indexed by the bar each return is realised on; ``fold.json`` the window, frequency
and metrics. Fold models are not registered: they exist to be judged out of sample.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.agents.train import load_panels, train_agent
from trade_agent.cnn_lstm.embed import run_embed_stage
from trade_agent.cnn_lstm.stage import train_cnn_lstm
from trade_agent.config import Params
from trade_agent.ensemble.stage import train_ensemble
from trade_agent.evaluation.report import EvaluationInputs, evaluate_models
from trade_agent.hybrid.stage import train_hybrid
from trade_agent.io import read_json, write_json, write_parquet
from trade_agent.market.panel import SplitData
from trade_agent.paths import ENSEMBLE, FOLD_RETURNS, FOLD_SUMMARY, STAGE_1, ensemble_members, hybrid_name
from trade_agent.threads import apply_thread_plan
from trade_agent.walkforward.folds import WINDOW_FILE

log = logging.getLogger(__name__)


def fold_params(params: Params) -> Params:
    """``params`` with the per-fold budgets, and evaluation on the fold's test window."""
    budget = params.walkforward.budget
    rl = params.rl
    return replace(
        params,
        cnn_lstm=replace(params.cnn_lstm, epochs=budget.cnn_lstm_epochs),
        rl=replace(
            rl,
            ppo=replace(rl.ppo, total_timesteps=budget.ppo_timesteps),
            sac=replace(rl.sac, total_timesteps=budget.sac_timesteps),
            td3=replace(rl.td3, total_timesteps=budget.td3_timesteps),
        ),
        # The encoder stays frozen for the same share of the (shorter) fine-tuning.
        hybrid=replace(
            params.hybrid,
            total_timesteps=budget.hybrid_timesteps,
            freeze_encoder_steps=params.hybrid.freeze_encoder_steps
            * budget.hybrid_timesteps
            // params.hybrid.total_timesteps,
        ),
        evaluate=replace(params.evaluate, split="test"),
    )


def run_fold(params: Params, inputs_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Train, select and trade one fold; writes ``out_dir`` and returns the fold summary."""
    started = time.perf_counter()
    params = fold_params(params)
    apply_thread_plan(params.base.threads, "policy")
    stages = params.walkforward.stages
    market, window = inputs_dir / "market.parquet", read_json(inputs_dir / WINDOW_FILE)
    out_dir.mkdir(parents=True, exist_ok=True)
    cnn_lstm = out_dir / STAGE_1
    train_cnn_lstm(params, inputs_dir, cnn_lstm, checkpoint_root=None)
    embeddings = out_dir / "embeddings.parquet"
    run_embed_stage(cnn_lstm, inputs_dir, embeddings)
    if "rl" in stages:
        panels = load_panels(params, inputs_dir, embeddings, market)
        for algo in params.rl.algos:
            train_agent(algo, params, panels, out_dir / algo)
    if "hybrid" in stages:
        for algo in params.hybrid.algos:
            train_hybrid(algo, params, inputs_dir, market, cnn_lstm, out_dir / algo, out_dir / hybrid_name(algo))
    members = ensemble_members(params.rl.algos, params.hybrid.algos, out_dir)
    if "ensemble" in stages and len(members) >= 2:
        train_ensemble(params, members, inputs_dir, embeddings, market, out_dir / ENSEMBLE)
    inputs = EvaluationInputs(features_dir=inputs_dir, embeddings=embeddings, market=market, models_root=out_dir)
    reports, frequency = evaluate_models(params, inputs)
    _, _, times, symbols = SplitData.load(inputs_dir, None, market, "test").prices()
    # Return k is earned from the fill at bar k+1's open to bar k+1's close: dated by bar k+1.
    returns = pd.DataFrame({r.name: np.asarray(r.result.returns, dtype=np.float64) for r in reports})
    returns.insert(0, "timestamp", times[1 : len(returns) + 1])
    write_parquet(out_dir / FOLD_RETURNS, returns)
    summary = {
        "window": window,
        "symbols": symbols,
        "frequency": frequency.to_json(),
        "models": {r.name: {"kind": r.kind, **r.metrics} for r in reports},
        "val_sharpe": _val_sharpes(out_dir),
    }
    write_json(out_dir / FOLD_SUMMARY, summary)
    log.info(
        "walk-forward fold %d (%s..%s): %s (%.0f s)",
        window["fold"],
        window["test_start"],
        window["test_end"],
        ", ".join(f"{r.name} {r.metrics['sharpe']:.2f}" for r in reports),
        time.perf_counter() - started,
    )
    return summary


def _val_sharpes(out_dir: Path) -> dict[str, float]:
    """Each trained agent's validation Sharpe (what selected it), from its own metrics."""
    found = {}
    for metrics in sorted(out_dir.glob("*/metrics.json")):
        values = read_json(metrics)
        if isinstance(values, dict) and isinstance(values.get("val/sharpe"), int | float):
            found[metrics.parent.name] = float(values["val/sharpe"])
    return found
