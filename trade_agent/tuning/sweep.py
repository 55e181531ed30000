"""Sweeps across machines (``trade-agent sweep``, ``trade-agent exp collect``; docs/scale-out.md).

Every worker is a clone of the same commit, on any machine, with the same ``--storage`` (an
Optuna RDB such as PostgreSQL, or a journal file on NFS) and the same DVC remote:

* it joins one study and claims its waiting trials (:mod:`trade_agent.tuning.study`: the
  storage hands each trial to exactly one worker, so no point runs twice, and a killed
  worker's trial is failed and re-queued);
* for each trial it trains a full model with the trial's params (the params file's budget,
  not ``optimize``'s per-trial one), registers it in its own registry, pushes the files of
  the model and its dependencies to the DVC remote, and publishes the registry entries in the
  trial (user attr ``trade_agent:models``); the trial's value is the model's validation
  score (CNN-LSTM: ``val/loss``, minimised; agents: ``val/sharpe``, maximised);
* afterwards it pushes its DVC run-cache too (``dvc push --run-cache``: the stages it ran
  with ``dvc repro``; the sweep's own trainings run in-process).

:func:`collect` then brings every trial's model into one clone's registry: each entry is
checked like any entry read from elsewhere, merged by content (so each model is listed once
however often it is collected; a version already taken here is renumbered), and restored
on demand from the remote with every sha256 verified.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import TrialState

from trade_agent.config import Params
from trade_agent.errors import ConfigError, InputError, TradeAgentError
from trade_agent.tuning.study import apply_trial_params, create_slots, open_storage, open_study, run_study, suggest

log = logging.getLogger(__name__)

MODELS_ATTR = "trade_agent:models"  # trial user attr: registry entries of its model, dependencies first
MODEL_ID_ATTR = "trade_agent:model_id"  # trial user attr: the model's id in the worker's registry
SWEEP_TYPES = ("cnn_lstm", "ppo", "sac", "td3")


def direction_of(model_type: str) -> Literal["minimize", "maximize"]:
    return "minimize" if model_type == "cnn_lstm" else "maximize"


def score_key(model_type: str) -> str:
    return "val/loss" if model_type == "cnn_lstm" else "val/sharpe"


@dataclass(frozen=True)
class SweepSpec:
    """One worker's share of a sweep."""

    model_type: str  # cnn_lstm | ppo | sac | td3
    data: str  # what `trade-agent train` takes: a file, a dataset folder, sample, synthetic
    storage: str
    study_name: str
    n_trials: int
    cnn_lstm_model: str = "new"  # agents: the upstream CNN-LSTM (an id, or "new": one per trial, deduplicated)
    push: bool = True  # models and run-cache to the DVC remote

    def check(self) -> None:
        if self.model_type not in SWEEP_TYPES:
            raise InputError(f"sweep: model type '{self.model_type}' is unknown; use one of {', '.join(SWEEP_TYPES)}")
        if self.n_trials < 1:
            raise InputError("sweep: --n-trials must be >= 1")


@dataclass(frozen=True)
class SweptModel:
    """A trial's model as this clone sees it."""

    trial: int
    value: float
    model_id: str  # here (renumbered if another model took the version)
    availability: str  # here | remote | missing


def _train_trial(spec: SweepSpec, params: Params, registry_root: Path, work_dir: Path) -> tuple[str, float]:
    from trade_agent.training import TrainingConfig, UnifiedTrainingManager

    extra: dict[str, Any] = {"params": params}
    if spec.model_type != "cnn_lstm":
        extra["cnn_lstm_model"] = spec.cnn_lstm_model
    config = TrainingConfig(
        spec.model_type,
        spec.data,
        str(work_dir),
        epochs=params.cnn_lstm.epochs,
        batch_size=params.cnn_lstm.batch_size,
        learning_rate=params.cnn_lstm.learning_rate,
        **extra,
    )
    result = UnifiedTrainingManager(registry_root=registry_root).train_model(config)
    if result.status != "completed" or result.model_id is None:
        raise result.exception or TradeAgentError(result.error_message or "training failed")
    return result.model_id, float(result.metrics[score_key(spec.model_type)])


def run_sweep(spec: SweepSpec, params: Params, registry_root: Path = Path("models")) -> list[SweptModel]:
    """Claim and train trials until the study has none left; returns this worker's models.

    Raises:
        InputError / ConfigError: bad spec or storage. TradeAgentError: a training or push failed.
    """
    from trade_agent.registry import ModelRegistry
    from trade_agent.registry.sharing import lineage_entries, push_model, push_run_cache

    spec.check()
    direction = direction_of(spec.model_type)
    space = params.optimize.search(spec.model_type).space
    if not space:
        raise ConfigError(f"sweep: params optimize.{spec.model_type}.space is empty; list the params to sweep")
    create_slots(spec.study_name, direction, params, spec.storage, spec.n_trials)
    study = open_study(spec.study_name, direction, params, spec.storage)
    mine: list[SweptModel] = []

    def objective(trial: optuna.Trial) -> float:
        trial_params = apply_trial_params(params, suggest(trial, space))
        work_dir = registry_root / "runs" / "sweep" / spec.study_name / str(trial.number)
        model_id, value = _train_trial(spec, trial_params, registry_root, work_dir)
        registry = ModelRegistry(registry_root)
        if spec.push:
            sent = push_model(registry, model_id)
            log.info(
                "sweep: trial %d -> %s (%s %.4f), %d files pushed",
                trial.number,
                model_id,
                score_key(spec.model_type),
                value,
                sent,
            )
        trial.set_user_attr(MODELS_ATTR, lineage_entries(registry, model_id))
        trial.set_user_attr(MODEL_ID_ATTR, model_id)
        mine.append(SweptModel(trial.number, value, model_id, "here"))
        return value

    run_study(study, objective, params, spec.n_trials)
    if spec.push:
        push_run_cache(registry_root)
    return mine


def collect(
    storage: str, study_name: str, params: Params, registry_root: Path = Path("models"), verify: bool = True
) -> list[SweptModel]:
    """Every completed trial's model into this clone's registry, best first by the study's value.

    With ``verify``, each model is restored into a temp folder (pulled from the DVC remote
    where this clone lacks its files) with every file's sha256 checked.

    Raises:
        InputError: no such study. RegistryCorruptError: a trial carries a malformed entry.
        IntegrityError: ``verify`` and a model cannot be restored intact.
    """
    from trade_agent.registry import ModelRegistry
    from trade_agent.registry.sharing import import_entries
    from trade_agent.registry.store import check_entry

    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage, params.optimize))
    except KeyError:
        raise InputError(f"exp collect: no study '{study_name}' in {storage}; check --study") from None
    registry = ModelRegistry(registry_root)
    published: list[tuple[optuna.trial.FrozenTrial, list[dict[str, Any]]]] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        entries = trial.user_attrs.get(MODELS_ATTR)
        if entries is None:
            continue  # an --optimize trial (budget run, no model) sharing the study
        where = f"study {study_name} trial {trial.number} {MODELS_ATTR}"
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{where} is not a list of registry entries")
        published.append((trial, [check_entry(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]))
    # One merge for all trials: importing trial by trial could renumber a model an earlier
    # trial's import had already been mapped to (the older of two same-version models keeps it).
    ids = import_entries(registry, [e for _, entries in published for e in entries], f"study {study_name}")
    collected: list[SweptModel] = []
    for trial, entries in published:
        own = (entries[-1]["model_type"], entries[-1]["checksum"])
        if own not in ids:
            continue  # deleted here: not brought back
        assert trial.value is not None
        collected.append(SweptModel(trial.number, float(trial.value), ids[own], ""))
    availability = registry.availabilities([m.model_id for m in collected])
    if verify:
        with tempfile.TemporaryDirectory(prefix="collect-verify-") as tmp:
            for model_id in sorted({m.model_id for m in collected}):  # two trials may train one model
                registry.restore(model_id, Path(tmp) / model_id)  # pulls, checks every sha256
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    collected.sort(key=lambda m: (sign * m.value, m.trial))
    return [SweptModel(m.trial, m.value, m.model_id, "here" if verify else availability[m.model_id]) for m in collected]
