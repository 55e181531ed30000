"""Build and register a stage-4 ensemble from model directories (library side of ``ensemble``).

Members are stage-2 agents and stage-3 hybrids. Each runs stand-alone over the validation
and test splits; validation Sharpe ratios (after costs, by the backtester) weight or seed
the combination (:mod:`trade_agent.ensemble.combine`); the combined targets are backtested
on test. The ensemble directory holds ``ensemble.json`` (method, members with their
registry ids and validation Sharpe, softmax weights) and ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trade_agent.agents.policy_io import policy_model_type
from trade_agent.config import Params
from trade_agent.config.ensemble import EnsembleConfig
from trade_agent.config.evaluation import EvaluateConfig
from trade_agent.config.rl import RLCommonConfig
from trade_agent.ensemble.combine import (
    ENSEMBLE_SPEC,
    MemberRuns,
    directional_accuracy,
    diversity,
    ensemble_targets,
    softmax_weights,
)
from trade_agent.errors import InputError
from trade_agent.evaluation.positions import policy_weights
from trade_agent.evaluation.suite import run_backtest, sharpe_bounds
from trade_agent.io import write_json
from trade_agent.market.backtest import BacktestResult
from trade_agent.market.panel import SplitData
from trade_agent.progress import Progress
from trade_agent.registry import ModelRegistry
from trade_agent.threads import apply_thread_plan, current_threads
from trade_agent.type_aliases import FloatArray

log = logging.getLogger(__name__)


@dataclass
class EnsembleRun:
    directory: Path
    metrics: dict[str, float]
    members: list[dict[str, Any]]  # name, model_type, model_id, val_sharpe, softmax_weight, test_sharpe
    duration_s: float


def run_members(directories: list[Path], data: SplitData, common: RLCommonConfig) -> MemberRuns:
    """Each member directory run stand-alone over ``data``."""
    open_, close, _, _ = data.prices()
    members = []
    with Progress(f"ensemble members ({data.split})", len(directories), "members", interval=0.0) as progress:
        for i, directory in enumerate(directories, 1):
            members.append(policy_weights(directory, data, common))
            progress.update(i, directory.name)
    return MemberRuns.backtested(members, open_, close, common, data.frequency.periods_per_year)


def ensemble_backtest(
    config: EnsembleConfig,
    runs: MemberRuns,
    val_sharpes: FloatArray,
    common: RLCommonConfig,
    evaluate: EvaluateConfig,
    seed: int,
) -> tuple[BacktestResult, dict[str, float]]:
    """Combine, backtest and add the bootstrap Sharpe interval (graded) and the ensemble's
    own measures (accuracy, diversity; reported, not graded), annualised with ``runs.periods_per_year``."""
    targets = ensemble_targets(runs, val_sharpes, config, common)
    result = run_backtest(targets, runs.open, runs.close, common, runs.periods_per_year)
    extra = sharpe_bounds(result.returns, evaluate, seed, runs.periods_per_year) | {
        "ensemble_accuracy": directional_accuracy(result.weights, runs.open, runs.close, 0),
        "diversity": diversity(runs.weights),
        "best_member_sharpe": max(r.metrics["sharpe"] for r in runs.results),
    }
    return result, extra


@dataclass
class Member:
    name: str
    model_type: str
    model_id: str | None


def build_ensemble(
    config: EnsembleConfig,
    members: list[Member],
    val: MemberRuns,
    test: MemberRuns,
    common: RLCommonConfig,
    out_dir: Path,
    metrics_path: Path | None = None,
    evaluate: EvaluateConfig | None = None,
    seed: int = 0,
) -> EnsembleRun:
    """Validation Sharpe per member, the combination on both splits, the ensemble directory.

    ``evaluate`` and ``seed`` set the bootstrap of the Sharpe interval (``params.evaluate``, ``params.base.seed``).
    The metrics are annualised with the data's bars per year, recorded as ``periods_per_year``.

    Raises:
        InputError: fewer than two members, or val and test annualised differently.
    """
    started = time.perf_counter()
    if len(members) < 2:
        raise InputError(f"an ensemble needs at least two members, got {len(members)}; train more agents first")
    if val.periods_per_year != test.periods_per_year:
        raise InputError(
            f"val and test are annualised with {val.periods_per_year:g} and {test.periods_per_year:g} bars/year; "
            "both splits must come from the same data"
        )
    val_sharpes = np.array([r.metrics["sharpe"] for r in val.results])
    evaluate = evaluate or EvaluateConfig()
    result, extra = ensemble_backtest(config, test, val_sharpes, common, evaluate, seed)
    val_result, val_extra = ensemble_backtest(config, val, val_sharpes, common, evaluate, seed)
    metrics = {f"val/{k}": v for k, v in (val_result.metrics | val_extra).items()} | {
        f"test/{k}": v for k, v in (result.metrics | extra).items()
    }
    metrics["periods_per_year"] = float(test.periods_per_year)
    metrics["threads"] = float(current_threads())  # how it ran (the thread plan), not a result
    alphas = softmax_weights(val_sharpes, config.temperature)
    described = [
        asdict(m) | {"val_sharpe": float(s), "softmax_weight": float(a), "test_sharpe": float(r.metrics["sharpe"])}
        for m, s, a, r in zip(members, val_sharpes, alphas, test.results, strict=True)
    ]
    write_json(out_dir / ENSEMBLE_SPEC, {"config": asdict(config), "members": described})
    write_json(out_dir / "metrics.json", metrics)
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    log.info(
        "ensemble (%s, %d members): test/sharpe %.3f (best member %.3f), diversity %.2f",
        config.method,
        len(members),
        metrics["test/sharpe"],
        extra["best_member_sharpe"],
        extra["diversity"],
    )
    return EnsembleRun(out_dir, metrics, described, time.perf_counter() - started)


def train_ensemble(
    params: Params,
    member_dirs: list[Path],
    features_dir: Path,
    embeddings_path: Path,
    market_path: Path,
    out_dir: Path,
    metrics_path: Path | None = None,
    registry: ModelRegistry | None = None,
) -> EnsembleRun:
    """The ``ensemble`` stage: pipeline member directories on the pipeline's val and test splits."""
    apply_thread_plan(params.base.threads, "policy")
    if len(member_dirs) < 2:
        raise InputError(f"an ensemble needs at least two members, got {len(member_dirs)}; train more agents first")
    common = params.rl.common
    runs = {
        split: run_members(member_dirs, SplitData.load(features_dir, embeddings_path, market_path, split), common)
        for split in ("val", "test")
    }
    members = [
        Member(d.name, policy_model_type(d), registry.id_of(policy_model_type(d), d) if registry else None)
        for d in member_dirs
    ]
    return build_ensemble(
        params.ensemble,
        members,
        runs["val"],
        runs["test"],
        common,
        out_dir,
        metrics_path,
        evaluate=params.evaluate,
        seed=params.base.seed,
    )


def register_ensemble(run: EnsembleRun, params: Params, registry: ModelRegistry) -> str:
    """Register with every member as a dependency (members must be registered)."""
    missing = [m["name"] for m in run.members if not m["model_id"]]
    if missing:
        raise InputError(f"ensemble members {', '.join(missing)} are not registered; register them first")
    ids = [str(m["model_id"]) for m in run.members]
    training_config = {
        "ensemble": asdict(params.ensemble),
        "members": ids,
        "seed": params.base.seed,
        "interface": {"members": len(ids), "method": params.ensemble.method},
    }
    return registry.register_model(
        "ensemble",
        run.directory,
        None,
        training_config,
        run.metrics,
        {"members": ids},
        dependencies=ids,
        training_duration=round(run.duration_s, 3),
    )
