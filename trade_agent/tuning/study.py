"""Optuna studies for ``--optimize``: storage, sampler, pruner, and how trials become params.

* Storage: SQLite at ``models/optuna/studies.db`` by default (outside DVC outputs), any
  Optuna RDB URL (``postgresql://...``), or ``journal:///path.log`` (Optuna's journal file
  storage, for NFS-only sites). The study name is derived from the stage and its inputs, so
  the same command again - on this machine or another - joins the same study.
* ``n_trials`` is the study's target, met exactly however many workers join: the process
  that creates the study enqueues ``n_trials`` waiting trials (its *slots*), and workers
  only ever claim a waiting trial (the storage hands each to one worker) - they never
  create one. A study resumed with a larger target gets the missing slots (grow a study
  from one process at a time: concurrent growers may each add them).
* A dead worker: each running trial records a heartbeat every ``optimize.heartbeat_s``.
  Every worker, before it claims a trial and while it waits for the study to finish, fails
  trials silent for ``optimize.stale_after_s`` (Optuna's ``fail_stale_trials``), and
  ``RetryHeartbeatStaleTrialCallback`` re-queues each with the same params (up to
  ``optimize.retries`` times) for the next free worker. The journal storage gets the same
  heartbeat through :class:`HeartbeatJournalStorage` (Optuna's has none).
* A worker out of slots waits until no trial is running, so every worker sees the same
  finished study (and picks the same best trial).
* TPE sampler seeded from ``base.seed`` plus the trial's number (so workers started together
  on several machines do not propose the same points); median pruner.
* A trial is fully described by its params: :func:`apply_trial_params` turns them into a
  ``Params`` whose training (seeded, deterministic on CPU) reproduces the trial.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the interface fail_stale_trials reads
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import TrialState

from trade_agent.config import Params, params_from_dict, to_plain
from trade_agent.config.optimize import Distribution, OptimizeConfig
from trade_agent.errors import ConfigError
from trade_agent.io import atomic_path, write_json
from trade_agent.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_STORAGE_FILE = Path("models/optuna/studies.db")
JOURNAL_SCHEME = "journal://"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SLOTS_ATTR = "trade_agent:slots"  # study system attr: how many slots have been enqueued
WORKER_ATTR = "trade_agent:worker"  # trial system attr: host:pid of the worker that claimed it
HEARTBEAT_ATTR = "trade_agent:heartbeat"  # trial system attr (journal storage): last heartbeat, epoch seconds
CREATOR_WAIT_S = 60.0  # how long a joining worker waits for the creator to enqueue the slots


class StudyStorageError(ConfigError):
    """The storage URL cannot be opened (unknown scheme, server down, missing driver)."""


def storage_url(storage: str | None) -> str:
    if storage:
        return storage
    DEFAULT_STORAGE_FILE.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORAGE_FILE.resolve()}"


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the RDB storage's heartbeat: the beat is a trial system attr
    (one journal line per beat), so ``fail_stale_trials`` and the retry callback work alike.
    Staleness compares wall clocks of different machines: keep them in sync (NTP)."""

    def __init__(
        self,
        backend: BaseJournalBackend,
        heartbeat_interval: int,
        grace_period: int,
        stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None,
    ) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - float(trial.system_attrs.get(HEARTBEAT_ATTR, started)) > self._grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None:
        return self._stale_trial_callback


def _rdb_storage(
    url: str,
    engine_kwargs: dict[str, Any],
    config: OptimizeConfig,
    retry: optuna.storages.RetryHeartbeatStaleTrialCallback,
    attempts: int = 5,
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage. Workers starting together on a new database race to create its
    tables, and PostgreSQL refuses the loser's ``CREATE`` (a unique violation on its catalog):
    by then the winner has made them, so the loser opens again."""
    import sqlalchemy.exc

    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=config.heartbeat_s,
                grace_period=config.stale_after_s,
                heartbeat_stale_trial_callback=retry,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts:
                raise
            log.debug("optimize storage: tables created concurrently by another worker; opening again")
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def open_storage(url: str, config: OptimizeConfig) -> optuna.storages.BaseStorage:
    """The storage behind ``url``, with heartbeats and the stale-trial retry.

    Raises:
        StudyStorageError: one line naming the URL and what to fix.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat, retry: stable in use
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=config.retries)
    try:
        if url.startswith(JOURNAL_SCHEME):
            path = Path(url[len(JOURNAL_SCHEME) :])
            if not str(path) or not path.parent.is_dir():
                raise StudyStorageError(
                    f"optimize storage {url!r}: the folder {path.parent} does not exist; "
                    "use journal:///<existing shared folder>/<name>.log"
                )
            backend = JournalFileBackend(str(path))
            return HeartbeatJournalStorage(backend, config.heartbeat_s, config.stale_after_s, retry)
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):  # several processes on one file: wait for the lock instead of failing
            engine_kwargs = {"connect_args": {"timeout": 60}}
        return _rdb_storage(url, engine_kwargs, config, retry)
    except StudyStorageError:
        raise
    except ImportError as exc:  # Optuna re-raises the driver's ModuleNotFoundError with a generic message
        driver = getattr(exc.__cause__, "name", None) or "for this URL"
        raise StudyStorageError(
            f"optimize storage {url!r}: the database driver {driver} is not installed "
            "(PostgreSQL: pip install 'trade-agent[scale]', which brings psycopg)"
        ) from None
    except Exception as exc:  # sqlalchemy's errors (bad URL, server down, auth) carry a multi-line message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyStorageError(
            f"optimize storage {url!r} cannot be opened: {first}; check the URL, that the server runs "
            "and accepts this user (or use journal:///<shared folder>/<name>.log)"
        ) from None


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
    name: str, direction: Literal["minimize", "maximize"], params: Params, storage: str | None
) -> optuna.Study:
    """Join (create if needed) the study, with the pruner; the sampler is set per trial (:func:`_run_trial`)."""
    config = params.optimize
    url = storage_url(storage or config.storage or None)
    return optuna.create_study(
        study_name=name,
        storage=open_storage(url, config),
        direction=direction,
        load_if_exists=True,
        sampler=trial_sampler(params, 0),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
        ),
    )


def trial_sampler(params: Params, number: int) -> optuna.samplers.TPESampler:
    """TPE seeded with ``base.seed`` + the trial's number: whichever worker claims trial k draws
    the same start-up point, and workers started together never draw the same one."""
    return optuna.samplers.TPESampler(seed=params.base.seed + number, n_startup_trials=params.optimize.n_startup_trials)


def create_slots(
    name: str, direction: Literal["minimize", "maximize"], params: Params, storage: str | None, n_trials: int
) -> None:
    """Create the study with ``n_trials`` waiting trials, or join it and wait for its creator to
    have enqueued them; a study resumed with a larger target gets the missing slots."""
    config = params.optimize
    backend = open_storage(storage_url(storage or config.storage or None), config)
    try:
        study = optuna.create_study(study_name=name, storage=backend, direction=direction)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=backend)
        deadline = time.monotonic() + CREATOR_WAIT_S
        while SLOTS_ATTR not in _study_attrs(study) and time.monotonic() < deadline:
            time.sleep(0.2)  # the creator is enqueueing; counting now would enqueue them twice
    else:
        log.info("study %s created in %s with %d trials to run", name, type(backend).__name__, n_trials)
    trials = study.get_trials(deepcopy=False)
    counted = sum(t.state in (*FINISHED, TrialState.RUNNING, TrialState.WAITING) for t in trials)
    for _ in range(n_trials - counted):
        study.enqueue_trial({})
    slots = max(n_trials, int(_study_attrs(study).get(SLOTS_ATTR, 0)))
    study._storage.set_study_system_attr(study._study_id, SLOTS_ATTR, slots)


def _study_attrs(study: optuna.Study) -> dict[str, Any]:
    return dict(study._storage.get_study_system_attrs(study._study_id))


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _claim(study: optuna.Study) -> int | None:
    """A waiting trial, now RUNNING and this worker's (the storage lets exactly one worker switch
    it), tagged with who runs it, its first heartbeat recorded at once (a trial with none is
    never found stale)."""
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished by another worker in the meantime
        if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
            storage.record_heartbeat(trial._trial_id)
        storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        return int(trial._trial_id)
    return None


class _Heartbeat:
    """Beats for one trial in a thread while the objective runs (the storage's own beat)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
        self.thread = threading.Thread(target=self._beat, args=(interval,), daemon=True) if interval else None

    def _beat(self, interval: int) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)  # type: ignore[attr-defined]
            except Exception as exc:  # a lost connection: the trial goes on; the next beat retries
                log.debug("heartbeat of trial %d failed: %s", self.trial_id, exc)
            if self.stop.wait(interval):
                return

    def __enter__(self) -> _Heartbeat:
        if self.thread:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()


def _run_trial(study: optuna.Study, trial_id: int, objective: Callable[[optuna.Trial], float], params: Params) -> None:
    study.sampler = trial_sampler(params, study._storage.get_trial(trial_id).number)
    trial = optuna.Trial(study, trial_id)
    state, value = TrialState.COMPLETE, None
    try:
        with _Heartbeat(study._storage, trial_id):
            value = objective(trial)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except Exception:
        if _taken_over(study, trial_id):
            return  # e.g. its pruner report was refused: the trial is no longer this worker's
        study.tell(trial, state=TrialState.FAIL)
        raise
    except BaseException:  # Ctrl-C, SystemExit: the trial fails with the worker
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    if _taken_over(study, trial_id):
        return
    study.tell(trial, value, state=state if state == TrialState.PRUNED else None, skip_if_finished=True)


def _taken_over(study: optuna.Study, trial_id: int) -> bool:
    """Whether another worker failed this (live but silent: starved of CPU past ``stale_after_s``)
    trial as stale; its retry runs the same params, so this worker drops its result."""
    frozen = study._storage.get_trial(trial_id)
    if frozen.state.is_finished():
        log.warning(
            "trial %d was marked %s by another worker while this one ran it (no heartbeat for "
            "optimize.stale_after_s); its retry carries on, this result is dropped",
            frozen.number,
            frozen.state.name,
        )
        return True
    return False


def run_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    params: Params,
    n_trials: int,
    timeout: float | None = None,
    poll_s: float = 1.0,
) -> None:
    """Claim and run waiting trials until none is left and none runs (or ``timeout`` passes)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    deadline = time.monotonic() + timeout if timeout is not None else None
    done = finished_trials(study)
    if done >= n_trials:
        log.info("study %s already has %d finished trials", study.study_name, done)
    with Progress("optimize", n_trials, "trials", done=min(done, n_trials), interval=0.0) as progress:
        while deadline is None or time.monotonic() < deadline:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, re-queued with its params
            trial_id = _claim(study)
            if trial_id is None:
                if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    break
                time.sleep(poll_s)  # others still run: one may die, and its retry needs a worker
                continue
            _run_trial(study, trial_id, objective, params)
            frozen = study._storage.get_trial(trial_id)
            completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})" if completed else "no value yet"
            progress.update(
                min(finished_trials(study), n_trials), f"trial {frozen.number} {frozen.state.name.lower()}, {best}"
            )


def write_study(study: optuna.Study, out_dir: Path) -> dict[str, Any]:
    """``best_params.json`` and ``trials.csv`` (number, state, value, params; failed and retried
    trials included) under ``out_dir``."""
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
        # Finished trials: the configurations evaluated (a killed trial's retry is the same one).
        "trials": finished_trials(study),
        "pruned": int((frame["state"] == "PRUNED").sum()) if not frame.empty else 0,
        "failed": int((frame["state"] == "FAIL").sum()) if not frame.empty else 0,
    }
    write_json(out_dir / "best_params.json", best)
    return best
