"""Stage 1 end to end: features -> trained CNN-LSTM model directory (+ metrics, curves).

Used by the ``cnn_lstm`` DVC stage, ``UnifiedTrainingManager`` and the CLI alike.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trade_agent import paths
from trade_agent.cnn_lstm.device import DeviceChoice, check_precision, select_device
from trade_agent.cnn_lstm.distributed.process_group import Ranks
from trade_agent.cnn_lstm.model import CNNLSTM, CNNLSTMSpec
from trade_agent.cnn_lstm.store import load_cnn_lstm, save_cnn_lstm
from trade_agent.cnn_lstm.trainer import CHECKPOINT_FILE, CNNLSTMTrainer, Parallelism, TrainOutcome
from trade_agent.cnn_lstm.windows import WindowData
from trade_agent.config import Params
from trade_agent.errors import ConfigError, DataSourceError
from trade_agent.io import host_platform, read_json, run_key, sha256_file, write_json
from trade_agent.paths import FEATURES_FILE, SCHEMA_FILE
from trade_agent.threads import planned_threads, use_threads

log = logging.getLogger(__name__)

DEEPSPEED_CONFIG_FILE = "deepspeed_config.json"


@dataclass
class CnnLstmRun:
    """Result of :func:`train_cnn_lstm`."""

    model: CNNLSTM
    outcome: TrainOutcome
    metrics: dict[str, float]
    model_dir: Path
    device: DeviceChoice
    duration_s: float
    checkpoints: list[Path]


def seed_everything(seed: int, threads: int = 0) -> None:
    """Seed torch and numpy and make CPU kernels deterministic."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    if threads:  # 0: leave the process's count as it is
        use_threads(threads)
    # cuBLAS is deterministic only with a fixed workspace, read when CUDA first initialises
    # (PyTorch's reproducibility notes); a no-op on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every torch.empty with NaN; correct code never reads
    # uninitialised memory, and DeepSpeed allocates 2 GB ZeRO buckets with torch.empty.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]


def run_settings(params: Params, features_dir: Path) -> dict[str, Any]:
    """What shapes a CNN-LSTM run besides the features' content: schema, stage params, seed, device."""
    return {
        "schema": read_json(features_dir / SCHEMA_FILE),
        "cnn_lstm": asdict(params.cnn_lstm),
        "seed": params.base.seed,
        "device": params.base.device,
    }


def load_window_data(features_dir: Path) -> tuple[WindowData, dict[str, Any]]:
    """Read the ``features`` stage outputs into tensors.

    Raises:
        DataSourceError: the features outputs are missing.
    """
    for name in (FEATURES_FILE, SCHEMA_FILE):
        if not (features_dir / name).is_file():
            raise DataSourceError(f"{features_dir / name} not found; run `dvc repro features` first")
    schema = read_json(features_dir / SCHEMA_FILE)
    frame = pd.read_parquet(features_dir / FEATURES_FILE)
    return WindowData.from_frame(frame, schema["feature_names"], schema["sequence_length"]), schema


def train_cnn_lstm(
    params: Params,
    features_dir: Path,
    model_dir: Path,
    *,
    metrics_path: Path | None = None,
    live_dir: Path | None = None,
    checkpoint_root: Path | None = paths.CHECKPOINTS,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    init_from: Path | None = None,
    keep_checkpoints: bool = False,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    evaluate_test: bool = True,
    ranks: Ranks | None = None,
    parallelism: Parallelism | None = None,
    distributed_info: dict[str, Any] | None = None,
) -> CnnLstmRun:
    """Train stage 1 and write the model directory (see :mod:`trade_agent.cnn_lstm.store`).

    Checkpoints go to ``<checkpoint_root>/cnn_lstm/<inputs hash>/`` (or ``checkpoint_dir``)
    every epoch; a re-run with the same inputs resumes there (unless ``resume`` is false)
    and the directory is removed after success unless ``keep_checkpoints``.
    ``init_from`` warm-starts from another model directory of the same architecture.
    ``on_epoch`` also receives each epoch's metrics (e.g. an Optuna pruner);
    ``evaluate_test=False`` leaves the test split untouched (hyperparameter search).
    On several processes (``ranks``/``parallelism``, see :mod:`trade_agent.cnn_lstm.distributed.worker`)
    every rank trains and evaluates its shard; rank 0 alone writes the model directory,
    metrics and curves, and ``distributed_info`` goes into its metadata.
    """
    config = params.cnn_lstm
    ranks = ranks or Ranks.single()
    started = time.perf_counter()
    seed_everything(params.base.seed, planned_threads(params.base.threads, "cnn_lstm"))
    choice = select_device(params.base.device, config.fallback_to_cpu)
    if ranks.distributed and choice.device.type == "cuda":
        choice = DeviceChoice(torch.device("cuda", ranks.local_rank), choice.requested)
    check_precision((parallelism and parallelism.precision) or config.precision, choice.device)
    data, schema = load_window_data(features_dir)
    spec = CNNLSTMSpec.from_config(config, data.n_features, data.sequence_length)
    model = CNNLSTM(spec).to(choice.device)
    if ranks.distributed:  # same initial weights everywhere; each rank its own dropout masks
        torch.manual_seed(params.base.seed + ranks.rank)
    if init_from is not None:
        _warm_start(model, init_from)

    if checkpoint_dir is None and checkpoint_root is not None:
        checkpoint_dir = (
            checkpoint_root / "cnn_lstm" / run_key(run_settings(params, features_dir), [features_dir / FEATURES_FILE])
        )
    if checkpoint_dir is not None and not resume:
        (checkpoint_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    live = _open_live(live_dir) if ranks.is_main else None
    trainer = CNNLSTMTrainer(
        model,
        data,
        config,
        choice.device,
        seed=params.base.seed,
        checkpoint_dir=checkpoint_dir,
        on_epoch=_chain(live.log_epoch if live else None, on_epoch),
        ranks=ranks,
        parallelism=parallelism,
    )
    outcome = trainer.fit()
    model = trainer.model
    metrics = {**trainer.evaluate("val"), "best_epoch": float(outcome.best_epoch)}
    if evaluate_test:
        metrics |= trainer.evaluate("test")
    duration = time.perf_counter() - started

    preprocessor_id = schema["preprocessor_id"]
    metadata = {
        "model_type": "cnn_lstm",
        "metrics": metrics,
        "params": asdict(config),
        "seed": params.base.seed,
        "data": {
            "features_sha256": sha256_file(features_dir / FEATURES_FILE),
            "symbols": schema["symbols"],
            "splits": schema["splits"],
            "rows": schema["rows"],
            # What inference checks new bars against (a daily model refuses hourly bars).
            "frequency": schema.get("frequency"),
        },
        "preprocessor_id": preprocessor_id,
        "device": choice.to_dict(),
        "warnings": [f"trained on CPU: {choice.fallback_reason}"] if choice.fallback_reason else [],
        "training": {
            "epochs_run": len(outcome.history),
            "best_epoch": outcome.best_epoch,
            "stopped_early": outcome.stopped_early,
            "resumed_from_epoch": outcome.resumed_from_epoch,
            "batch": outcome.batch,
        },
        # No wall-clock values here: the model directory (a DVC output) is byte-identical
        # across runs with the same inputs. The duration goes to the registry entry.
        "hardware": {"platform": host_platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    model_config = {
        "model_type": "cnn_lstm",
        "feature_names": schema["feature_names"],
        "return_scale": trainer.return_scale,
        "classes": ["down", "flat", "up"],
        "horizon": schema["horizon"],
        "preprocessor_id": preprocessor_id,
    }
    if distributed_info is not None:
        metadata["distributed"] = distributed_info
    metrics["threads"] = float(torch.get_num_threads())  # how it ran (the thread plan), not a result
    if ranks.is_main:
        extra = {DEEPSPEED_CONFIG_FILE: trainer.deepspeed_config} if trainer.deepspeed_config else {}
        save_cnn_lstm(model_dir, model, model_config, metadata, features_dir / "preprocessor" / preprocessor_id, extra)
        if metrics_path is not None:
            write_json(metrics_path, metrics)
    if live is not None:
        live.close(metrics)
    ranks.barrier()  # nobody removes checkpoints before the model is safely written
    if checkpoint_dir is not None and not keep_checkpoints:
        # Success: nothing to resume any more. Only our files go; the directory too if
        # that leaves it empty (it may be a user's resume_from directory).
        trainer.clear_checkpoints()
    checkpoints = sorted(checkpoint_dir.glob("*.pt")) if checkpoint_dir is not None and checkpoint_dir.exists() else []
    shown = "test" if evaluate_test else "val"
    log.info(
        "cnn_lstm: best epoch %d, %s/accuracy %.3f, %s/ic %.3f (%.1f s on %s)",
        outcome.best_epoch,
        shown,
        metrics[f"{shown}/accuracy"],
        shown,
        metrics[f"{shown}/ic"],
        duration,
        choice.device,
    )
    return CnnLstmRun(model, outcome, metrics, model_dir, choice, duration, checkpoints)


def _warm_start(model: CNNLSTM, model_dir: Path) -> None:
    """Initialise ``model`` from a saved model of the same architecture.

    Raises:
        ConfigError: the saved model's architecture differs.
    """

    base, _ = load_cnn_lstm(model_dir)
    if base.spec != model.spec:
        raise ConfigError(
            f"{model_dir}: base model architecture {base.spec.to_dict()} differs from this run's "
            f"{model.spec.to_dict()}; use matching cnn_lstm params or drop the base model"
        )
    model.load_state_dict(base.state_dict())
    log.info("warm start from %s", model_dir)


class _LiveLog:
    """dvclive per-epoch curves, written without touching dvc.yaml (``dvcyaml=False``)."""

    def __init__(self, directory: Path) -> None:
        from dvclive import Live

        # Live clears only its own files (plots, metrics.json), which a resumed run replays
        # from the checkpoint; removing the folder would delete DVC's tracked plots/.gitignore.
        self.live = Live(dir=str(directory), dvcyaml=False, save_dvc_exp=False)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.live.step = epoch
        for name, value in metrics.items():
            if name != "epoch":
                self.live.log_metric(name, float(value))
        self.live.next_step()

    def close(self, final: dict[str, float]) -> None:
        self.live.end()


def _chain(*hooks: Callable[[int, dict[str, float]], None] | None) -> Callable[[int, dict[str, float]], None] | None:
    active = [h for h in hooks if h is not None]
    if not active:
        return None

    def call(epoch: int, metrics: dict[str, float]) -> None:
        for hook in active:
            hook(epoch, metrics)

    return call


def _open_live(directory: Path | None) -> _LiveLog | None:
    return _LiveLog(directory) if directory is not None else None
