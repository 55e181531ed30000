"""Benchmarks, each reported as a ratio against a baseline measured in the same run.

Run with ``make bench``. Targets live here, not in timed tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from trade_agent.cnn_lstm.model import CNNLSTM, CNNLSTMSpec
from trade_agent.cnn_lstm.trainer import CNNLSTMTrainer
from trade_agent.cnn_lstm.windows import WindowData
from trade_agent.config import CnnLstmConfig

# The benchmarks' own modules are imported when selected: `--only trainer,distributed --device
# cuda` runs on a GPU machine without TA-Lib, SB3 or gymnasium (`make gpu-check`).
BENCHMARKS = ("timestamps", "features", "trainer", "env", "ppo", "backtest", "distributed")


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
    from benchmarks.reference_features import reference_features
    from trade_agent.config import FeaturesConfig
    from trade_agent.data.synthetic import SyntheticSpec, generate_synthetic
    from trade_agent.features.indicators import compute_features

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


def _plain_epoch(spec: CNNLSTMSpec, data: WindowData, batch_size: int, device: torch.device) -> Callable[[], None]:
    """The textbook loop: windows pre-built as one (N, L, F) tensor on ``device``, AdamW, fp32."""
    torch.manual_seed(0)
    plain_model = CNNLSTM(spec).to(device)
    windows = data.windows(data.ends["train"]).to(device)  # the TensorDataset way
    direction = data.direction[data.ends["train"]].to(device)
    target = (data.returns[data.ends["train"]] / 0.01).to(device)
    optimizer = torch.optim.AdamW(plain_model.parameters(), lr=1e-3, weight_decay=1e-4)

    def plain_epoch() -> None:
        plain_model.train()
        for batch in torch.randperm(len(windows), device=device).split(batch_size):
            logits, predicted = plain_model(windows[batch])
            loss = F.cross_entropy(logits, direction[batch]) + 0.5 * F.huber_loss(predicted, target[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return plain_epoch


def _synced(func: Callable[[], object]) -> Callable[[], None]:
    """``func`` timed to the end of its GPU work (kernels run asynchronously)."""

    def run() -> None:
        func()
        torch.cuda.synchronize()

    return run


def bench_trainer(
    rows: int, repeat: int, threads: int, device: str = "cpu", batch_sizes: tuple[int, ...] = (256,)
) -> dict[str, Any]:
    """Our trainer's epoch vs a plain PyTorch loop: same model, batch, loss, optimiser, threads.

    On ``cuda``: fp32 against bf16 autocast (alternated run by run), per batch size, and the
    plain loop in fp32 with its windows already on the GPU."""
    torch.set_num_threads(threads)
    if device == "cuda":
        return _bench_trainer_cuda(rows, repeat, batch_sizes)
    data = _window_data(rows, 35, 30)
    data.ends["val"] = data.ends["train"][:256]
    samples = len(data.ends["train"])
    figures: dict[str, Any] = {"device": "cpu", "threads": threads, "windows": samples, "batches": {}}
    for batch_size in batch_sizes:
        config = CnnLstmConfig(epochs=1, batch_size=batch_size, patience=100)
        spec = CNNLSTMSpec.from_config(config, data.n_features, data.sequence_length)
        torch.manual_seed(0)
        trainer = CNNLSTMTrainer(CNNLSTM(spec), data, config, torch.device("cpu"), seed=0)
        plain_epoch = _plain_epoch(spec, data, batch_size, torch.device("cpu"))
        ours, baseline = best_of_pair(trainer._train_epoch, plain_epoch, repeat)
        print(
            f"trainer: {samples:,} windows (30 x 35) per epoch, batch {batch_size}, {threads} threads, default CNN-LSTM"
        )
        print(f"  trade-agent trainer:  {ours:7.2f} s/epoch  {samples / ours:10,.0f} samples/s")
        print(f"  plain PyTorch loop:   {baseline:7.2f} s/epoch  {samples / baseline:10,.0f} samples/s")
        print(f"  throughput ratio (ours / plain, target >= 0.95): {baseline / ours:5.2f}")
        figures["batches"][str(batch_size)] = {
            "fp32_samples_s": samples / ours,
            "plain_fp32_samples_s": samples / baseline,
            "ours_over_plain": baseline / ours,
        }
    return figures


def _bench_trainer_cuda(
    rows: int, repeat: int, batch_sizes: tuple[int, ...], device: torch.device | None = None
) -> dict[str, Any]:
    """fp32 vs bf16 on the GPU (``device``: another one for the tests of this function on CPU)."""
    device = device or torch.device("cuda")
    data = _window_data(rows, 35, 30)
    data.ends["val"] = data.ends["train"][:256]
    samples = len(data.ends["train"])
    name = torch.cuda.get_device_name(device)
    precisions = ("fp32", "bf16") if torch.cuda.is_bf16_supported() else ("fp32",)
    print(f"trainer: {samples:,} windows (30 x 35) per epoch, default CNN-LSTM, cuda ({name}), best of {repeat}")
    if "bf16" not in precisions:
        print(f"  {name} has no bf16: fp32 only")
    figures: dict[str, Any] = {"device": name, "windows": samples, "repeat": repeat, "batches": {}}
    for batch_size in batch_sizes:
        epochs: dict[str, Callable[[], None]] = {}
        for precision in precisions:
            config = CnnLstmConfig(epochs=1, batch_size=batch_size, patience=100, precision=precision)
            spec = CNNLSTMSpec.from_config(config, data.n_features, data.sequence_length)
            torch.manual_seed(0)
            trainer = CNNLSTMTrainer(CNNLSTM(spec).to(device), data, config, device, seed=0)
            epochs[precision] = _synced(trainer._train_epoch)
        fp32_s, bf16_s = best_of_pair(epochs["fp32"], epochs.get("bf16"), repeat)
        plain_s = best_of(_synced(_plain_epoch(spec, data, batch_size, device)), repeat)
        row: dict[str, float | None] = {"fp32_samples_s": samples / fp32_s, "bf16_samples_s": None}
        line = f"  batch {batch_size:>5}  fp32: {fp32_s:7.3f} s/epoch {samples / fp32_s:10,.0f} samples/s"
        if "bf16" in epochs:
            row |= {"bf16_samples_s": samples / bf16_s, "bf16_over_fp32": fp32_s / bf16_s}
            line += f"   bf16: {bf16_s:7.3f} s/epoch {samples / bf16_s:10,.0f} samples/s   "
            line += f"bf16 / fp32: {fp32_s / bf16_s:5.2f}x"
        print(line)
        print(
            f"  batch {batch_size:>5}  plain PyTorch loop, fp32, windows pre-built on the GPU: "
            f"{samples / plain_s:10,.0f} samples/s (trainer / plain: {plain_s / fp32_s:5.2f})"
        )
        figures["batches"][str(batch_size)] = row | {
            "plain_fp32_samples_s": samples / plain_s,
            "ours_over_plain_fp32": plain_s / fp32_s,
        }
        torch.cuda.empty_cache()
    return figures


def parse_only(text: str) -> tuple[str, ...]:
    """``--only``: one benchmark name or a comma-separated list of them (they run in the usual order)."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        shown = repr(unknown[0]) if unknown else "nothing"
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {shown}; choose from {', '.join(BENCHMARKS)} (comma-separated)"
        )
    return names


def parse_sizes(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers (``--train-batch 256,4096``)."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument(
        "--train-batch", type=parse_sizes, default=(256,), help="batch size(s) of the trainer benchmark, e.g. 256,4096"
    )
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
    parser.add_argument(
        "--dist-features",
        choices=["stages", "synthetic"],
        default=None,
        help="distributed benchmark's data: the prepare + features stages (needs TA-Lib; the default on cpu) "
        "or synthetic feature frames (the default on cuda)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda on a GPU machine: the trainer (fp32 vs bf16) and distributed (1 vs N GPUs) benchmarks",
    )
    parser.add_argument(
        "--nproc", type=int, default=0, help="processes of the distributed benchmark (0: 2 on cpu, every GPU on cuda)"
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        default=BENCHMARKS,
        metavar="NAME[,NAME...]",
        help=f"run only these ({', '.join(BENCHMARKS)}), e.g. --only trainer,distributed",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the trainer/distributed figures here")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: CUDA is not available to this torch ({torch.__version__})")
    only = set(args.only)
    figures: dict[str, Any] = {}
    if "timestamps" in only:
        from benchmarks.timestamps import bench_timestamps

        bench_timestamps(args.timestamp_rows, args.repeat)
    if "features" in only:
        bench_features(args.symbols, args.bars, args.repeat)
    if "trainer" in only:
        figures["trainer"] = bench_trainer(args.train_rows, args.repeat, args.threads, args.device, args.train_batch)
    if "env" in only:
        from benchmarks.rl_env import bench_env

        bench_env(args.bars, args.env_steps, args.n_envs)
    if "backtest" in only:
        from benchmarks.backtest import bench_backtest

        bench_backtest(args.backtest_bars, 4, args.loop_bars, args.repeat)
    if "ppo" in only:
        from benchmarks.rl_env import bench_ppo

        torch.set_num_threads(args.threads)
        bench_ppo(args.ppo_steps)
    if "distributed" in only:
        from benchmarks.distributed import bench_distributed

        figures["distributed"] = bench_distributed(
            args.dist_bars, args.dist_epochs, args.device, args.nproc, args.dist_features
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    failed = [name for name, result in figures.items() if result.get("errors")]
    if failed:
        raise SystemExit(f"benchmark {', '.join(failed)}: a run failed (see above)")
    return figures


if __name__ == "__main__":
    main()
