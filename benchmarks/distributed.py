"""Data-parallel CNN-LSTM training against one process.

On CPU: 2 processes x 1 thread against 1 process x 2 threads. Same data, model, global batch
and epochs; the processes split each batch (gloo). On CUDA: N GPUs, one process each (NCCL),
against one GPU in-process; N is every visible GPU unless ``--nproc`` says otherwise. With a
single GPU the launched runs have one process: they measure what the launcher, NCCL and the
sharded checkpoints cost, not scaling, and the output says so.
Reported: samples/s of the training passes (what data parallelism speeds up), and end to
end (process start, imports, evaluation, checkpoints and registration included).

    python benchmarks/run.py --only distributed --device cuda [--nproc <GPUs>]

On CUDA the data are synthetic feature frames (:mod:`trade_agent.devtools.synthetic_features`,
``--dist-features synthetic``): the GPU machine has no TA-Lib for the ``features`` stage.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from trade_agent.cnn_lstm.distributed.launch import launch_cnn_lstm
from trade_agent.cnn_lstm.stage import load_window_data, train_cnn_lstm
from trade_agent.config import Params, params_from_dict
from trade_agent.devtools.synthetic_features import write_synthetic_features

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torchrun", "deepspeed")


def _params(bars: int, epochs: int, device: str, backend: str, nproc: int, threads: int) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="synthetic", synthetic_symbols=4, synthetic_bars=bars)
    raw["base"].update(device=device, threads=threads)
    raw["cnn_lstm"].update(epochs=epochs, patience=epochs, batch_size=256)
    raw["distributed"].update(backend=backend, nproc=nproc, threads_per_process=1, retries=0)
    return raw


def features_dir(root: Path, params: Params, bars: int, features: str) -> Path:
    """The benchmark's ``features`` outputs: the real prepare + features stages, or synthetic frames."""
    if features == "synthetic":
        return write_synthetic_features(
            root / "features", symbols=4, bars=bars, n_features=35, sequence_length=params.features.sequence_length
        )
    from trade_agent.data.ingest import prepare
    from trade_agent.features.build import run_features_stage

    prepare(params.data, root / "prepared", params.base.seed)
    run_features_stage(params, root / "prepared" / "market.parquet", root / "features")
    return root / "features"


def _line(label: str, samples: int, train_s: float, wall_s: float) -> dict[str, float]:
    print(f"  {label:34s} {samples / train_s:9,.0f} samples/s training   {samples / wall_s:9,.0f} end to end")
    return {"train_samples_s": samples / train_s, "end_to_end_samples_s": samples / wall_s, "wall_s": wall_s}


def bench_distributed(
    bars: int, epochs: int, device: str = "cpu", nproc: int = 0, features: str | None = None
) -> dict[str, Any]:
    """Print the comparison; returns its figures (``errors`` names a launched run that failed)."""
    cuda = device == "cuda"
    features = features or ("synthetic" if cuda else "stages")
    gpus = torch.cuda.device_count() if cuda else 0
    nproc = nproc or (gpus if cuda else 2)
    figures: dict[str, Any] = {"device": device, "gpus": gpus, "nproc": nproc, "epochs": epochs, "features": features}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = params_from_dict(_params(bars, epochs, device, "torchrun", nproc, 2))
        features_path = features_dir(root, params, bars, features)
        windows = len(load_window_data(features_path)[0].ends["train"])
        samples = windows * epochs
        figures["windows"] = windows
        where = device
        if cuda:
            where = f"cuda ({torch.cuda.get_device_name(0)} x {gpus} visible)"
        if features == "synthetic":
            where += ", synthetic features"
        print(f"distributed: {windows:,} training windows x {epochs} epochs, batch 256, default CNN-LSTM, {where}")

        single_label = "1 GPU, in-process" if cuda else "1 process x 2 threads"
        start = time.perf_counter()
        run = train_cnn_lstm(params, features_path, root / "single", checkpoint_root=None)
        single_wall, single_train = time.perf_counter() - start, run.outcome.train_seconds
        figures["single"] = _line(f"{single_label}:", samples, single_train, single_wall)
        torch.set_num_threads(1)  # leave the cores to the ranks

        errors: dict[str, str] = {}
        for backend in BACKENDS:
            params = params_from_dict(_params(bars, epochs, device, backend, nproc, 1))
            if cuda:
                label = f"{nproc} GPU{'s' if nproc > 1 else ''} ({backend}):"
            else:
                label = f"{nproc} processes x 1 thread ({backend}):"
            start = time.perf_counter()
            try:
                launched = launch_cnn_lstm(
                    params,
                    features_path,
                    root / backend,
                    run_dir=root / f"run-{backend}",
                    registry_root=root / "models",
                    checkpoint_root=root / "temp",
                )
            except Exception as exc:  # report it and measure the other backend
                errors[backend] = f"{type(exc).__name__}: {exc}"
                print(f"  {label:34s} FAILED: {errors[backend]}")
                continue
            wall = time.perf_counter() - start
            figures[backend] = _line(label, samples, launched.train_seconds, wall)
            figures[backend] |= {
                "speedup_train": single_train / launched.train_seconds,
                "speedup_end_to_end": single_wall / wall,
            }
            print(
                f"    speed-up vs {single_label.replace(',', '')}: {single_train / launched.train_seconds:5.2f}x "
                f"training, {single_wall / wall:5.2f}x end to end"
            )
        if cuda and nproc == 1:
            figures["note"] = (
                "one GPU visible: the 1 vs N GPU comparison needs 2 or more; the launched runs above have one "
                "process each (launcher, NCCL and sharded-checkpoint overhead, not scaling)"
            )
            print(f"  note: {figures['note']}")
        if errors:
            figures["errors"] = errors
    return figures
