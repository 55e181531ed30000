"""Benchmarks, each reported as a ratio against a baseline measured in the same run.

Run with ``make bench``. Targets live here, not in timed tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from benchmarks.backtest import bench_backtest
from benchmarks.distributed import bench_distributed
from benchmarks.reference_features import reference_features
from benchmarks.rl_env import bench_env, bench_ppo
from benchmarks.timestamps import bench_timestamps
from trade_agent.cnn_lstm.model import CNNLSTM, CNNLSTMSpec
from trade_agent.cnn_lstm.trainer import CNNLSTMTrainer
from trade_agent.cnn_lstm.windows import WindowData
from trade_agent.config import CnnLstmConfig, FeaturesConfig
from trade_agent.data.synthetic import SyntheticSpec, generate_synthetic
from trade_agent.features.indicators import compute_features


def best_of(func: Callable[[], object], repeat: int) -> float:
    """Fastest wall time of ``repeat`` runs (the least disturbed by other load)."""
    return best_of_pair(func, None, repeat)[0]


def best_of_pair(ours: Callable[[], object], baseline: Callable[[], object] | None, repeat: int) -> tuple[float, float]:
    """Fastest times of two functions run alternately, so background load hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for func, bucket in ((ours, times[0]), (baseline, times[1])):
            if func is None:
                continue
            start = time.perf_counter()
            func()
            bucket.append(time.perf_counter() - start)
    return min(times[0]), min(times[1]) if times[1] else float("nan")


def bench_features(n_symbols: int, n_bars: int, repeat: int) -> None:
    market = generate_synthetic(SyntheticSpec(n_symbols=n_symbols, n_bars=n_bars, seed=0))
    config = FeaturesConfig()
    rows = len(market)
    ours, baseline = best_of_pair(
        lambda: compute_features(market, config), lambda: reference_features(market, config), repeat
    )
    print(
        f"features: {rows:,} rows ({n_symbols} symbols x {n_bars:,} bars), {len(market.columns)} inputs -> 35 features"
    )
    print(f"  trade-agent (TA-Lib per symbol): {ours:7.2f} s  {rows / ours:12,.0f} rows/s")
    print(f"  pandas rolling/ewm baseline:     {baseline:7.2f} s  {rows / baseline:12,.0f} rows/s")
    print(f"  speed-up vs pandas baseline:     {baseline / ours:7.1f}x")


def _window_data(rows: int, n_features: int, sequence_length: int) -> WindowData:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        rng.standard_normal((rows, n_features)).astype(np.float32), columns=[f"f{i}" for i in range(n_features)]
    )
    frame.insert(0, "symbol", "S")
    frame.insert(0, "timestamp", pd.date_range("2000-01-03", periods=rows, freq="min"))
    frame["split"] = "train"
    frame["target_return"] = rng.normal(0, 0.01, rows)
    frame["target_direction"] = rng.integers(0, 3, rows)
    return WindowData.from_frame(frame, [f"f{i}" for i in range(n_features)], sequence_length)


def bench_trainer(rows: int, repeat: int, threads: int) -> None:
    """Our trainer's epoch vs a plain PyTorch loop: same model, batch, loss, optimiser, threads."""
    torch.set_num_threads(threads)
    config = CnnLstmConfig(epochs=1, batch_size=256, threads=threads, patience=100)
    data = _window_data(rows, 35, 30)
    data.ends["val"] = data.ends["train"][:256]
    spec = CNNLSTMSpec.from_config(config, data.n_features, data.sequence_length)

    torch.manual_seed(0)
    model = CNNLSTM(spec)
    trainer = CNNLSTMTrainer(model, data, config, torch.device("cpu"), seed=0)

    torch.manual_seed(0)
    plain_model = CNNLSTM(spec)
    windows = data.windows(data.ends["train"])  # pre-built (N, L, F): the textbook TensorDataset way
    direction, target = data.direction[data.ends["train"]], data.returns[data.ends["train"]] / 0.01
    optimizer = torch.optim.AdamW(plain_model.parameters(), lr=1e-3, weight_decay=1e-4)

    def plain_epoch() -> None:
        plain_model.train()
        for batch in torch.randperm(len(windows)).split(256):
            logits, predicted = plain_model(windows[batch])
            loss = F.cross_entropy(logits, direction[batch]) + 0.5 * F.huber_loss(predicted, target[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    ours, baseline = best_of_pair(trainer._train_epoch, plain_epoch, repeat)
    samples = len(data.ends["train"])
    print(f"trainer: {samples:,} windows (30 x 35) per epoch, batch 256, {threads} threads, default CNN-LSTM")
    print(f"  trade-agent trainer:  {ours:7.2f} s/epoch  {samples / ours:10,.0f} samples/s")
    print(f"  plain PyTorch loop:   {baseline:7.2f} s/epoch  {samples / baseline:10,.0f} samples/s")
    print(f"  throughput ratio (ours / plain, target >= 0.95): {baseline / ours:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--env-steps", type=int, default=50_000)
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--ppo-steps", type=int, default=8192)
    parser.add_argument("--backtest-bars", type=int, default=1_000_000)
    parser.add_argument("--loop-bars", type=int, default=50_000)
    parser.add_argument(
        "--dist-bars", type=int, default=4000, help="bars per symbol (4 symbols) for --only distributed"
    )
    parser.add_argument("--timestamp-rows", type=int, default=1_000_000)
    parser.add_argument("--dist-epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (distributed benchmark)")
    parser.add_argument("--nproc", type=int, default=2, help="processes (GPUs) of the distributed benchmark")
    parser.add_argument(
        "--only", choices=["timestamps", "features", "trainer", "env", "ppo", "backtest", "distributed"], default=None
    )
    args = parser.parse_args()
    if args.only in (None, "timestamps"):
        bench_timestamps(args.timestamp_rows, args.repeat)
    if args.only in (None, "features"):
        bench_features(args.symbols, args.bars, args.repeat)
    if args.only in (None, "trainer"):
        bench_trainer(args.train_rows, args.repeat, args.threads)
    if args.only in (None, "env"):
        bench_env(args.bars, args.env_steps, args.n_envs)
    if args.only in (None, "backtest"):
        bench_backtest(args.backtest_bars, 4, args.loop_bars, args.repeat)
    if args.only in (None, "ppo"):
        torch.set_num_threads(args.threads)
        bench_ppo(args.ppo_steps)
    if args.only in (None, "distributed"):
        bench_distributed(args.dist_bars, args.dist_epochs, args.device, args.nproc)


if __name__ == "__main__":
    main()
