"""The seed design's programmatic training API.

``UnifiedTrainingManager().train_model(TrainingConfig(...))`` runs the same library code as
the DVC stages (prepare -> features -> model) in a working directory of its own and returns
a :class:`TrainingResult` with the real metrics of the trained model. Errors never escape
as exceptions: the result has ``status == "failed"`` and the error's message.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trade_agent.agents.train import checkpoint_dir_for, load_panels, register_agent, train_agent
from trade_agent.cnn_lstm.distributed.launch import check_before_data, launch_cnn_lstm
from trade_agent.cnn_lstm.embed import run_embed_stage
from trade_agent.cnn_lstm.registration import register_cnn_lstm
from trade_agent.cnn_lstm.stage import train_cnn_lstm
from trade_agent.cnn_lstm.store import PREPROCESSOR_DIR, load_cnn_lstm
from trade_agent.config import Params, load_params_or_defaults, params_from_dict, to_plain
from trade_agent.config.rl import ALGOS
from trade_agent.data.ingest import prepare, resolve_data
from trade_agent.errors import ConfigError, InputError
from trade_agent.features.build import check_enough_bars, run_features_stage
from trade_agent.log import setup_logging
from trade_agent.progress import ProgressCallback, reporting_to
from trade_agent.registry import ModelRegistry
from trade_agent.tuning import SearchSpec, search, study_name

if TYPE_CHECKING:
    from trade_agent.cnn_lstm.distributed.launch import DistributedRun
    from trade_agent.cnn_lstm.stage import CnnLstmRun

log = logging.getLogger(__name__)

AGENT_TYPES = ALGOS
NEW = "new"  # cnn_lstm_model=NEW: train a CNN-LSTM on the same data first
SUPPORTED_MODEL_TYPES = ("cnn_lstm", *AGENT_TYPES)
# Built from registered models, not from a TrainingConfig: `trade-agent train hybrid|ensemble`.
PLANNED_MODEL_TYPES = ("hybrid", "ensemble")
# TrainingConfig extras that map to params.yaml keys (section, key).
EXTRA_KEYS: dict[str, tuple[str, str]] = {
    "sequence_length": ("features", "sequence_length"),
    "seed": ("base", "seed"),
    "threads": ("base", "threads"),
    **{
        key: ("cnn_lstm", key)
        for key in (
            "conv_filters",
            "kernel_sizes",
            "norm",
            "dropout",
            "residual",
            "lstm_hidden",
            "lstm_layers",
            "attention_heads",
            "gradient_checkpointing",
            "weight_decay",
            "lr_schedule",
            "warmup_epochs",
            "patience",
            "grad_clip",
            "class_weighting",
            "regression_weight",
            "precision",
            "fallback_to_cpu",
            "min_batch_size",
            "max_batch_size",
        )
    },
}


EXTRA_KEYS |= {
    key: ("distributed", key)
    for key in (
        "backend",
        "nproc",
        "threads_per_process",
        "zero_stage",
        "micro_batch_per_device",
        "gradient_accumulation",
        "offload",
        "deepspeed_config",
        "nnodes",
        "node_rank",
        "master_addr",
        "master_port",
        "hostfile",
        "no_ssh",
        "retries",
        "retry_backoff_s",
    )
}


# TrainingConfig extras that steer the run rather than the model.
RUN_OPTIONS = (
    "params_file",
    "params",
    "resume",
    "keep_checkpoints",
    "cnn_lstm_model",
    "tensorboard",
    # --optimize: Optuna storage URL, seconds, worker processes, study name override
    "storage",
    "timeout",
    "n_jobs",
    "study_name",
)
# Extras of the RL agents, mapped into the agent's own ``rl.<algo>`` section.
AGENT_KEYS = {"timesteps": "total_timesteps", "n_envs": "n_envs"}
# TrainingConfig fields that are params keys too.
FIELD_KEYS: dict[str, tuple[str, str]] = {
    "epochs": ("cnn_lstm", "epochs"),
    "batch_size": ("cnn_lstm", "batch_size"),
    "learning_rate": ("cnn_lstm", "learning_rate"),
    "device": ("base", "device"),
}


def option_params(model_type: str, options: dict[str, Any]) -> dict[str, Any]:
    """Dotted params keys (``cnn_lstm.epochs``) for a request's options: the one table used by
    in-process runs (:func:`build_params`) and DVC experiments (``-S`` overrides) alike.

    ``None`` values are left out; run options (``resume``, ``storage``...) are not params.

    Raises:
        ConfigError: an option no params key or run option matches.
    """
    keys: dict[str, str] = {}
    for key, value in options.items():
        if value is None or key in RUN_OPTIONS:
            continue
        if key in AGENT_KEYS and model_type in AGENT_TYPES:
            keys[f"rl.{model_type}.{AGENT_KEYS[key]}"] = value
        elif key in FIELD_KEYS or key in EXTRA_KEYS:
            section, name = FIELD_KEYS.get(key) or EXTRA_KEYS[key]
            keys[f"{section}.{name}"] = value
        else:
            valid = sorted({*FIELD_KEYS, *EXTRA_KEYS, *RUN_OPTIONS, *AGENT_KEYS} - {"params"})
            raise ConfigError(f"TrainingConfig: unknown option '{key}'; valid extras: {', '.join(valid)}")
    return keys


_TRAINING_LOCK = threading.Lock()


class FeatureNotAvailableError(InputError):
    """A documented option whose implementation has not landed yet."""


@dataclass(init=False)
class TrainingConfig:
    """What to train, on which data, where to put it.

    Args:
        model_type: ``cnn_lstm``, ``ppo``, ``sac`` or ``td3`` (stages 3-4 land with their issues).
        data_path: a CSV/Parquet file, a ``data pipeline -r`` dataset directory, ``sample``
            or ``synthetic``.
        output_dir: working directory; the model lands in ``<output_dir>/model``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (default: params ``base.device``).
        resume_from: checkpoint directory to resume (default: the automatic one for the
            same inputs under ``models/temp``).
        base_model_path: a model directory whose weights initialise this run (fine-tuning).
        progress: called with a :class:`trade_agent.progress.ProgressEvent` on every
            update (CNN-LSTM batches, RL timesteps, Optuna trials); runs in this process only
            (a ``distributed`` run's ranks log their own lines).
        **extra: further params, e.g. ``sequence_length=20``, ``precision="bf16"``,
            ``params_file="params.yaml"`` (or ``params=Params(...)``), ``resume=False``;
            for agents ``cnn_lstm_model=ID`` (default ``"new"``: train one on the same
            data first), ``timesteps=N``, ``n_envs=N``, ``tensorboard=DIR``. The
            ``epochs``/``batch_size``/``learning_rate`` fields are the CNN-LSTM's.
            Unknown keys are an error.
    """

    model_type: str
    data_path: str
    output_dir: str
    epochs: int
    batch_size: int | str
    learning_rate: float
    device: str | None
    distributed: bool
    optimize_hyperparams: bool
    n_trials: int
    resume_from: str | None
    base_model_path: str | None
    progress: ProgressCallback | None
    extra: dict[str, Any]

    def __init__(
        self,
        model_type: str,
        data_path: str,
        output_dir: str,
        epochs: int = 100,
        batch_size: int | str = 32,
        learning_rate: float = 1e-3,
        device: str | None = None,
        distributed: bool = False,
        optimize_hyperparams: bool = False,
        n_trials: int = 50,
        resume_from: str | None = None,
        base_model_path: str | None = None,
        progress: ProgressCallback | None = None,
        **extra: Any,
    ) -> None:
        self.model_type, self.data_path, self.output_dir = model_type, str(data_path), str(output_dir)
        self.epochs, self.batch_size, self.learning_rate, self.device = epochs, batch_size, learning_rate, device
        self.distributed, self.optimize_hyperparams, self.n_trials = distributed, optimize_hyperparams, n_trials
        self.resume_from, self.base_model_path, self.progress = resume_from, base_model_path, progress
        self.extra = dict(extra)


@dataclass
class TrainingResult:
    """Outcome of one :meth:`UnifiedTrainingManager.train_model` call.

    ``model_id`` and ``performance_grade`` come from the model registry, which every
    completed training registers into. ``checkpoints`` lists checkpoint files still on
    disk: none after a success unless ``keep_checkpoints=True`` was passed.
    """

    training_id: str
    model_type: str
    status: str
    model_path: str | None = None
    preprocessor_path: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    performance_grade: str | None = None
    error_message: str | None = None
    model_id: str | None = None
    checkpoints: list[str] = field(default_factory=list)
    duration: float = 0.0
    exception: BaseException | None = field(default=None, repr=False, compare=False)


def build_params(config: TrainingConfig) -> Params:
    """Base params (``params=`` object, ``params_file=``, ./params.yaml or defaults) with the
    data source and the config's overrides applied."""
    base = config.extra.get("params")
    if not isinstance(base, Params):
        base = load_params_or_defaults(config.extra.get("params_file"))
    raw = to_plain(base)
    chosen = resolve_data(config.data_path)
    # The data source comes from DATA; how to read and clean it (date_format, max_gap,
    # symbol, align, synthetic_*) still comes from params.
    raw["data"].update(source=chosen.source, path=chosen.path)
    fields = {"epochs": config.epochs, "batch_size": config.batch_size, "learning_rate": config.learning_rate}
    for key, value in option_params(config.model_type, fields | {"device": config.device} | config.extra).items():
        *sections, name = key.split(".")
        target = raw
        for section in sections:
            target = target[section]
        target[name] = value
    return params_from_dict(raw)


class UnifiedTrainingManager:
    """Run trainings and track their status (thread-safe)."""

    def __init__(self, checkpoint_root: str | Path = "models/temp", registry_root: str | Path = "models") -> None:
        self.checkpoint_root = Path(checkpoint_root)
        self.registry_root = Path(registry_root)
        self._lock = threading.Lock()
        self._trainings: dict[str, dict[str, Any]] = {}

    def train_model(self, config: TrainingConfig) -> TrainingResult:
        """Train ``config.model_type`` and return its result (never raises for bad input)."""
        training_id = f"{config.model_type}_{datetime.now(UTC):%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:6]}"
        self._set(training_id, status="queued", model_type=config.model_type, started_at=time.time())
        started = time.perf_counter()
        setup_logging()  # API users see progress and get logs/training.log, as CLI users do
        try:
            # torch's RNG and thread count are process-wide: one training at a time keeps
            # every run deterministic (parallel runs belong in separate processes).
            with _TRAINING_LOCK, reporting_to(config.progress):
                self._set(training_id, status="running")
                result = self._train(training_id, config)
        except Exception as exc:  # the API contract: report, don't raise
            # Reported in the result (and by the CLI); the stack goes to logs/training.log.
            log.debug("training %s failed: %s", training_id, exc, exc_info=True)
            result = TrainingResult(training_id, config.model_type, "failed", error_message=str(exc), exception=exc)
        except BaseException:
            self._set(training_id, status="interrupted", finished_at=time.time())
            raise
        result.duration = time.perf_counter() - started
        self._set(training_id, status=result.status, finished_at=time.time(), error_message=result.error_message)
        return result

    def get_training_status(self, training_id: str) -> dict[str, Any]:
        """Status record of one training (``running``, ``completed`` or ``failed``).

        Raises:
            InputError: unknown id.
        """
        with self._lock:
            if training_id not in self._trainings:
                raise InputError(f"training '{training_id}' is unknown to this manager")
            return dict(self._trainings[training_id])

    def list_active_trainings(self) -> list[dict[str, Any]]:
        """Trainings still running."""
        with self._lock:
            return [{"training_id": k, **v} for k, v in self._trainings.items() if v["status"] in ("queued", "running")]

    # -- internals ------------------------------------------------------------------

    def _set(self, training_id: str, **values: Any) -> None:
        with self._lock:
            self._trainings.setdefault(training_id, {}).update(values)

    def _train(self, training_id: str, config: TrainingConfig) -> TrainingResult:
        if config.model_type in PLANNED_MODEL_TYPES:
            raise FeatureNotAvailableError(
                f"training '{config.model_type}' is not available yet through TrainingConfig; use "
                f"`trade-agent train {config.model_type}` with registered models (available here: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"model type '{config.model_type}' is unknown; use one of {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        upstream = config.extra.get("cnn_lstm_model")
        if config.distributed and config.model_type != "cnn_lstm" and upstream not in (None, "new"):
            raise ConfigError(
                f"--distributed trains the CNN-LSTM (stage 1) and {upstream} is already trained; "
                f"{config.model_type} itself trains in one process (stable-baselines3); drop --distributed"
            )
        params = build_params(config)
        if config.distributed:
            check_before_data(params)  # settings errors before any data work or search
        out = Path(config.output_dir)
        registry = ModelRegistry(self.registry_root, grading=params.grading)
        if config.model_type in AGENT_TYPES and upstream and upstream != "new":
            registry.check_upstream([str(upstream)])  # before any data work or training
        prepare(
            params.data,
            out / "data" / "prepared",
            params.base.seed,
            check=lambda bars, source: check_enough_bars(bars, params, source),
            train_fraction=params.splits.train,
        )
        if config.model_type in AGENT_TYPES:
            return self._train_agent(training_id, config, params, out, registry)
        market = out / "data" / "prepared" / "market.parquet"
        study_tags: list[str] = []
        if config.optimize_hyperparams:
            params, study_tags = self._search("cnn_lstm", config, params, out, market)
        run_features_stage(params, market, out / "data" / "features")
        model_dir = out / "model"
        if config.distributed:
            launched = self._launch_cnn_lstm(config, params, out / "data" / "features", model_dir, out)
            if not launched.model_id:  # a multi-node run's other nodes: node 0 registers
                return TrainingResult(training_id, config.model_type, "completed", metrics={})
            model_id, metrics, checkpoints = launched.model_id, launched.metrics, []
            registry = ModelRegistry(self.registry_root, grading=params.grading)  # rank 0 registered it
        else:
            run = self._train_cnn_lstm(config, params, out / "data" / "features", model_dir, out)
            model_id = register_cnn_lstm(model_dir, params, registry, run.duration_s, tags=study_tags)
            metrics, checkpoints = run.metrics, run.checkpoints
        preprocessors = sorted((model_dir / PREPROCESSOR_DIR).iterdir())
        return TrainingResult(
            training_id,
            config.model_type,
            "completed",
            model_path=str(model_dir),
            preprocessor_path=str(preprocessors[0]) if preprocessors else None,
            metrics=metrics,
            performance_grade=registry.get_model(model_id).performance_grade,
            checkpoints=[str(p) for p in checkpoints],
            model_id=model_id,
        )

    def _launch_cnn_lstm(
        self, config: TrainingConfig, params: Params, features_dir: Path, model_dir: Path, run_dir: Path
    ) -> DistributedRun:

        if config.resume_from or config.base_model_path:
            raise ConfigError("--distributed resumes from its own checkpoint directory; drop resume_from/base_model")
        return launch_cnn_lstm(
            params,
            features_dir,
            model_dir,
            run_dir=run_dir / "distributed",
            registry_root=self.registry_root,
            metrics_path=run_dir / "metrics.json",
            live_dir=run_dir / "dvclive",
            checkpoint_root=self.checkpoint_root,
            resume=bool(config.extra.get("resume", True)),
            keep_checkpoints=bool(config.extra.get("keep_checkpoints", False)),
        )

    def _train_cnn_lstm(
        self, config: TrainingConfig, params: Params, features_dir: Path, model_dir: Path, run_dir: Path
    ) -> CnnLstmRun:

        return train_cnn_lstm(
            params,
            features_dir,
            model_dir,
            metrics_path=run_dir / "metrics.json",
            live_dir=run_dir / "dvclive",
            checkpoint_root=self.checkpoint_root,
            checkpoint_dir=Path(config.resume_from) if config.resume_from else None,
            init_from=Path(config.base_model_path) if config.base_model_path else None,
            resume=bool(config.extra.get("resume", True)),
            keep_checkpoints=bool(config.extra.get("keep_checkpoints", False)),
        )

    def _train_agent(
        self, training_id: str, config: TrainingConfig, params: Params, out: Path, registry: ModelRegistry
    ) -> TrainingResult:
        """Stage 2 on DATA: the chosen (or a new) CNN-LSTM's features and embeddings, then the agent."""

        algo = config.model_type
        market = out / "data" / "prepared" / "market.parquet"
        features_dir = out / "data" / "features"
        embeddings = out / "data" / "embeddings" / "embeddings.parquet"
        upstream = str(config.extra.get("cnn_lstm_model") or NEW)
        if upstream == NEW:
            run_features_stage(params, market, features_dir)
            cnn_lstm_dir = out / "cnn_lstm"
            if config.distributed:  # the new CNN-LSTM on several ranks; the agent then in this process
                self._launch_cnn_lstm(config, params, features_dir, cnn_lstm_dir, out / "cnn_lstm_run")
            else:
                cnn_run = self._train_cnn_lstm(config, params, features_dir, cnn_lstm_dir, out / "cnn_lstm_run")
                register_cnn_lstm(cnn_lstm_dir, params, registry, cnn_run.duration_s)
        else:
            cnn_lstm_dir, params = self._restore_cnn_lstm(upstream, params, out, registry)
            # The chosen model's own fitted preprocessor scales this data (no refit).
            preprocessor = sorted((cnn_lstm_dir / PREPROCESSOR_DIR).iterdir())[0]
            run_features_stage(params, market, features_dir, fitted_preprocessor=preprocessor)
        run_embed_stage(cnn_lstm_dir, features_dir, embeddings)
        study_tags: list[str] = []
        if config.optimize_hyperparams:
            params, study_tags = self._search(algo, config, params, out, market, features_dir, embeddings)
        panels = load_panels(params, features_dir, embeddings, market)
        run = train_agent(
            algo,
            params,
            panels,
            out / "model",
            out / "metrics.json",
            plots_path=out / "equity.tsv",
            checkpoint_dir=checkpoint_dir_for(self.checkpoint_root, algo, params, [market, embeddings]),
            resume=bool(config.extra.get("resume", True)),
            keep_checkpoints=bool(config.extra.get("keep_checkpoints", False)),
            tensorboard=config.extra.get("tensorboard"),
        )
        model_id = register_agent(run, params, cnn_lstm_dir, registry, tags=study_tags)
        return TrainingResult(
            training_id,
            algo,
            "completed",
            model_path=str(run.agent_dir),
            metrics=run.metrics,
            performance_grade=registry.get_model(model_id).performance_grade,
            model_id=model_id,
        )

    @staticmethod
    def _search(
        stage: str,
        config: TrainingConfig,
        params: Params,
        out: Path,
        market: Path,
        features_dir: Path | None = None,
        embeddings: Path | None = None,
    ) -> tuple[Params, list[str]]:
        """Optuna search on the validation split; returns params with the best trial's values
        and the registry tag ``optimize:<study>:<trials>`` (every trial counts toward the
        deflated Sharpe ratio's N). The study summary goes to ``<output_dir>/optuna/``
        (best_params.json, trials.csv)."""

        inputs = [market, *([embeddings] if embeddings is not None else [])]
        timeout = config.extra.get("timeout")
        spec = SearchSpec(
            stage=stage,
            params=to_plain(params),
            market=str(market),
            work_dir=str(out / "optuna" / "work"),
            study_name=str(config.extra.get("study_name") or study_name(stage, params, inputs)),
            storage=config.extra.get("storage"),
            n_trials=config.n_trials,
            timeout=float(timeout) if timeout is not None else None,
            features_dir=str(features_dir) if features_dir is not None else None,
            embeddings=str(embeddings) if embeddings is not None else None,
        )
        best, summary = search(spec, n_jobs=int(config.extra.get("n_jobs", 1)), out_dir=out / "optuna")
        return best, [f"optimize:{spec.study_name}:{int(summary['trials'])}"]

    @staticmethod
    def _restore_cnn_lstm(model_id: str, params: Params, out: Path, registry: ModelRegistry) -> tuple[Path, Params]:
        """Verified copy of a registered CNN-LSTM, and params whose window matches it."""

        entry = registry.get_model(model_id)
        if entry.model_type != "cnn_lstm":
            raise InputError(
                f"--cnn-lstm-model {model_id}: is a {entry.model_type} model; pass a cnn_lstm id "
                "(`trade-agent train list --type cnn_lstm`) or 'new'"
            )
        target = out / "upstream" / entry.model_id
        if target.exists():
            shutil.rmtree(target)
        registry.restore(entry.model_id, target)
        model, _ = load_cnn_lstm(target)
        length = model.spec.sequence_length
        if length != params.features.sequence_length:
            log.info(
                "features.sequence_length %d -> %d (the chosen CNN-LSTM's window)",
                params.features.sequence_length,
                length,
            )
            raw = to_plain(params)
            raw["features"]["sequence_length"] = length
            params = params_from_dict(raw)
        return target, params
