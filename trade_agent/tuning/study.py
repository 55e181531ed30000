"""Optuna studies for ``--optimize``: storage, sampler, pruner, and how trials become params.

* Storage: SQLite at ``models/optuna/studies.db`` by default (outside DVC outputs) or any
  Optuna storage URL. The study name is derived from the stage and its inputs, so running
  the same command again continues the same study.
* ``n_trials`` is the study's target: a run stops when the study holds that many finished
  (complete or pruned) trials, whoever ran them - a resumed study continues its count, and
  several processes on one study stop once it holds ``n_trials`` finished trials (trials
  already running in other workers then still finish: at most ``n_trials + workers - 1``).
* TPE sampler seeded from ``base.seed`` plus the number of trials the study held when this
  worker started (so concurrent workers do not propose the same points); median pruner.
* A trial is fully described by its params: :func:`apply_trial_params` turns them into a
  ``Params`` whose training (seeded, deterministic on CPU) reproduces the trial.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import optuna

from trade_agent.config import Params, params_from_dict, to_plain
from trade_agent.config.optimize import Distribution
from trade_agent.errors import ConfigError
from trade_agent.io import atomic_path, write_json
from trade_agent.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_STORAGE_FILE = Path("models/optuna/studies.db")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def storage_url(storage: str | None) -> str:
    if storage:
        return storage
    DEFAULT_STORAGE_FILE.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORAGE_FILE.resolve()}"


def _storage(url: str) -> optuna.storages.BaseStorage | str:
    if url.startswith("sqlite"):
        # Several processes on one file: wait for the lock instead of failing.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return url


def suggest(trial: optuna.Trial, space: dict[str, Distribution]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, d in space.items():
        if d.type == "float":
            values[key] = trial.suggest_float(key, d.low, d.high, log=d.log, step=d.step)
        elif d.type == "int":
            values[key] = trial.suggest_int(key, int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
        else:
            values[key] = trial.suggest_categorical(key, d.choices)
    return values


def apply_trial_params(params: Params, values: dict[str, Any]) -> Params:
    """``params`` with dotted keys (``cnn_lstm.dropout``, ``rl.ppo.gamma``) replaced.

    Raises:
        ConfigError: a key that is not a params entry.
    """
    raw = to_plain(params)
    for key, value in values.items():
        node = raw
        *path, leaf = key.split(".")
        for part in path:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"optimize space: '{key}' is not a params key (no '{part}')")
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"optimize space: '{key}' is not a params key (no '{leaf}')")
        node[leaf] = value
    return params_from_dict(raw)


def open_study(
    name: str, direction: Literal["minimize", "maximize"], params: Params, storage: str | None, worker: int = 0
) -> optuna.Study:
    config = params.optimize
    url = storage_url(storage or config.storage or None)
    probe = optuna.create_study(study_name=name, storage=_storage(url), direction=direction, load_if_exists=True)
    already = len(probe.get_trials(deepcopy=False))
    return optuna.load_study(
        study_name=name,
        storage=_storage(url),
        sampler=optuna.samplers.TPESampler(
            seed=params.base.seed + already + 1000 * worker, n_startup_trials=config.n_startup_trials
        ),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
        ),
    )


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    timeout: float | None = None,
) -> None:
    """Run until the study holds ``n_trials`` finished trials (or ``timeout`` seconds pass)."""
    remaining = n_trials - finished_trials(study)
    if remaining <= 0:
        log.info("study %s already has %d finished trials", study.study_name, finished_trials(study))
        return
    stop = optuna.study.MaxTrialsCallback(n_trials, states=FINISHED)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with Progress("optimize", n_trials, "trials", done=n_trials - remaining, interval=0.0) as progress:

        def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            completed = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})" if completed else "no value yet"
            progress.update(finished_trials(study), f"trial {trial.number} {trial.state.name.lower()}, {best}")

        study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[stop, report], catch=())


def write_study(study: optuna.Study, out_dir: Path) -> dict[str, Any]:
    """``best_params.json`` and ``trials.csv`` (number, state, value, params) under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    with atomic_path(out_dir / "trials.csv") as tmp:
        frame.to_csv(tmp, index=False)
    best = {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "best_trial": study.best_trial.number,
        "best_value": study.best_value,
        "best_params": study.best_params,
        "trials": len(frame),
        "pruned": int((frame["state"] == "PRUNED").sum()) if not frame.empty else 0,
    }
    write_json(out_dir / "best_params.json", best)
    return best
