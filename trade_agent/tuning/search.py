"""Run a stage's hyperparameter search: one or several worker processes on one study.

``--n-jobs K`` starts K - 1 extra processes (spawned: each has its own torch state, which
threads would share) that open the same study; each claims the study's waiting trials
(:mod:`trade_agent.tuning.study`) until none is left. Processes on other machines running
the same command with the same ``--storage`` join the same study the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from trade_agent.config import Params, params_from_dict, to_plain
from trade_agent.errors import TradeAgentError
from trade_agent.failures import report_error
from trade_agent.io import canonical_json, sha256_file, sha256_text
from trade_agent.log import setup_logging
from trade_agent.tuning.objectives import agent_objective, cnn_lstm_objective
from trade_agent.tuning.study import apply_trial_params, create_slots, open_study, run_study, write_study

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSpec:
    """Everything a worker process needs (plain data, so it crosses the process boundary)."""

    stage: str  # cnn_lstm | ppo | sac | td3
    params: dict[str, Any]
    market: str
    work_dir: str
    study_name: str
    storage: str | None
    n_trials: int
    timeout: float | None = None
    features_dir: str | None = None  # agents: the fixed upstream outputs
    embeddings: str | None = None

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "minimize" if self.stage == "cnn_lstm" else "maximize"


def study_name(stage: str, params: Params, inputs: list[Path]) -> str:
    """Same stage + data + fixed params + search space -> same study (re-runs continue it)."""
    searched = set(params.optimize.search(stage).space)
    raw = {f: to_plain(getattr(params, f)) for f in ("base", "features", "labels", "splits", "cnn_lstm", "rl")}
    fixed = {
        k: v for k, v in _flatten(raw).items() if k not in searched and not k.endswith(("epochs", "total_timesteps"))
    }
    identity = {
        "stage": stage,
        "data": [sha256_file(p) for p in inputs],
        "fixed": fixed,
        "space": {k: asdict(v) for k, v in params.optimize.search(stage).space.items()},
        "budget": params.optimize.search(stage).budget,
    }
    return f"{stage}-{sha256_text(canonical_json(identity))[:12]}"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _objective(spec: SearchSpec, params: Params) -> Any:

    work_dir = Path(spec.work_dir)
    if spec.stage == "cnn_lstm":
        return cnn_lstm_objective(params, Path(spec.market), work_dir)
    assert spec.features_dir is not None and spec.embeddings is not None
    return agent_objective(
        spec.stage, params, Path(spec.features_dir), Path(spec.embeddings), Path(spec.market), work_dir
    )


def work(spec: SearchSpec) -> None:
    """One worker: open the study and run trials until it holds ``n_trials``."""
    params = params_from_dict(spec.params)
    study = open_study(spec.study_name, spec.direction, params, spec.storage)
    run_study(study, _objective(spec, params), params, spec.n_trials, spec.timeout)


def _helper(spec: SearchSpec, worker: int) -> None:
    """Entry of a spawned worker: its log goes to logs/training.log, its error to one line."""
    import sys

    setup_logging()
    try:
        work(spec)
    except Exception as exc:
        log.debug("search worker %d failed", worker, exc_info=True)
        sys.exit(report_error(exc))


def search(spec: SearchSpec, n_jobs: int = 1, out_dir: Path | None = None) -> tuple[Params, dict[str, Any]]:
    """Run the search with ``n_jobs`` processes; returns the params with the best trial's
    values and the summary written to ``out_dir`` (``best_params.json``, ``trials.csv``).

    Raises:
        TradeAgentError: a worker process failed, or no trial completed.
    """
    # The study and its n_trials slots, before this machine's workers start claiming them.
    create_slots(spec.study_name, spec.direction, params_from_dict(spec.params), spec.storage, spec.n_trials)
    context = multiprocessing.get_context("spawn")
    helpers = [context.Process(target=_helper, args=(spec, k), daemon=True) for k in range(1, n_jobs)]
    for process in helpers:
        process.start()
    try:
        work(spec)
    finally:
        for process in helpers:
            process.join()
    failed = [p.exitcode for p in helpers if p.exitcode != 0]
    if failed:
        raise TradeAgentError(f"{len(failed)} search worker(s) failed (exit {failed[0]}); see logs/training.log")
    params = params_from_dict(spec.params)
    study = open_study(spec.study_name, spec.direction, params, spec.storage)
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        raise TradeAgentError(f"study {spec.study_name}: no trial completed; raise --n-trials or the budget")
    summary = write_study(study, out_dir or Path(spec.work_dir))
    log.info(
        "study %s: best trial %d, value %.4f, params %s (%d trials, %d pruned)",
        spec.study_name,
        summary["best_trial"],
        summary["best_value"],
        summary["best_params"],
        summary["trials"],
        summary["pruned"],
    )
    return apply_trial_params(params, study.best_params), summary
