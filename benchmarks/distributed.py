"""Data-parallel CNN-LSTM training: 2 processes x 1 thread against 1 process x 2 threads.

Same data, model, global batch and epochs; the processes split each batch (gloo on CPU).
Reported: samples/s of the training passes (what data parallelism speeds up), and end to
end (process start, imports, evaluation, checkpoints and registration included).
On a GPU machine the same comparison is N GPUs against one:
``python benchmarks/run.py --only distributed --device cuda --nproc <GPUs>``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import yaml

from trade_agent.cnn_lstm.distributed.launch import launch_cnn_lstm
from trade_agent.cnn_lstm.stage import load_window_data, train_cnn_lstm
from trade_agent.config import params_from_dict
from trade_agent.data.ingest import prepare
from trade_agent.features.build import run_features_stage

ROOT = Path(__file__).resolve().parents[1]


def _params(bars: int, epochs: int, device: str, backend: str, nproc: int, threads: int) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="synthetic", synthetic_symbols=4, synthetic_bars=bars)
    raw["base"]["device"] = device
    raw["cnn_lstm"].update(epochs=epochs, patience=epochs, threads=threads, batch_size=256)
    raw["distributed"].update(backend=backend, nproc=nproc, threads_per_process=1, retries=0)
    return raw


def _line(label: str, samples: int, train_s: float, wall_s: float) -> None:
    print(f"  {label:34s} {samples / train_s:9,.0f} samples/s training   {samples / wall_s:9,.0f} end to end")


def bench_distributed(bars: int, epochs: int, device: str = "cpu", nproc: int = 2) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = params_from_dict(_params(bars, epochs, device, "torchrun", nproc, 2))
        prepare(params.data, root / "prepared", params.base.seed)
        run_features_stage(params, root / "prepared" / "market.parquet", root / "features")
        windows = len(load_window_data(root / "features")[0].ends["train"])
        samples = windows * epochs
        print(f"distributed: {windows:,} training windows x {epochs} epochs, batch 256, default CNN-LSTM, {device}")

        start = time.perf_counter()
        run = train_cnn_lstm(params, root / "features", root / "single", checkpoint_root=None)
        single_wall, single_train = time.perf_counter() - start, run.outcome.train_seconds
        _line("1 process x 2 threads:", samples, single_train, single_wall)
        torch.set_num_threads(1)  # leave the cores to the ranks

        for backend in ("torchrun", "deepspeed"):
            params = params_from_dict(_params(bars, epochs, device, backend, nproc, 1))
            start = time.perf_counter()
            launched = launch_cnn_lstm(
                params,
                root / "features",
                root / backend,
                run_dir=root / f"run-{backend}",
                registry_root=root / "models",
                checkpoint_root=root / "temp",
            )
            wall = time.perf_counter() - start
            _line(f"{nproc} processes x 1 thread ({backend}):", samples, launched.train_seconds, wall)
            print(
                f"    speed-up vs 1 process x 2 threads: {single_train / launched.train_seconds:5.2f}x training, "
                f"{single_wall / wall:5.2f}x end to end"
            )
