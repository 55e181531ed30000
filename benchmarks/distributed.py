"""Data-parallel CNN-LSTM training: 2 processes x 1 thread against 1 process x 2 threads.

Same data, model, global batch and epochs; the processes split each batch (gloo on CPU).
On a GPU machine the same comparison is N GPUs against one:
``python benchmarks/run.py --only distributed --device cuda --nproc <GPUs>``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from trade_agent.config import params_from_dict
from trade_agent.data.ingest import prepare
from trade_agent.features.build import run_features_stage
from trade_agent.io import read_json
from trade_agent.training.cnn_lstm import load_window_data, train_cnn_lstm
from trade_agent.training.launch import launch_cnn_lstm

ROOT = Path(__file__).resolve().parents[1]


def _params(bars: int, epochs: int, device: str, backend: str, nproc: int, threads: int) -> dict:
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="synthetic", synthetic_symbols=4, synthetic_bars=bars)
    raw["base"]["device"] = device
    raw["cnn_lstm"].update(epochs=epochs, patience=epochs, threads=threads, batch_size=256)
    raw["distributed"].update(backend=backend, nproc=nproc, threads_per_process=1, retries=0)
    return raw


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
        train_cnn_lstm(params, root / "features", root / "single", checkpoint_root=None)
        single = time.perf_counter() - start
        print(f"  1 process x 2 threads:          {single:7.2f} s  {samples / single:9,.0f} samples/s")
        torch.set_num_threads(1)  # leave the cores to the ranks

        for backend in ("torchrun", "deepspeed"):
            params = params_from_dict(_params(bars, epochs, device, backend, nproc, 1))
            start = time.perf_counter()
            launch_cnn_lstm(
                params,
                root / "features",
                root / backend,
                run_dir=root / f"run-{backend}",
                registry_root=root / "models",
                checkpoint_root=root / "temp",
            )
            wall = time.perf_counter() - start
            inside = read_json(root / f"run-{backend}" / "result.json")["duration_s"]
            print(
                f"  {nproc} processes x 1 thread ({backend + '):':11s} {wall:7.2f} s  {samples / wall:9,.0f} samples/s"
                f"  (ranks' own time {inside:.2f} s: {samples / inside:,.0f} samples/s)"
            )
            print(
                f"    speed-up vs 1 process x 2 threads: {single / wall:5.2f}x end to end, "
                f"{single / inside:5.2f}x in the ranks"
            )
