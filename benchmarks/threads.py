"""The thread plan's evidence: 1 vs 2 intra-op threads on the work each stage does.

For each kind of work in :data:`trade_agent.threads.AUTO_PLAN` (a CNN-LSTM training step at
batch 256, stage-1 inference over a split, and for SB3 policies SB3 SAC training on our env
and a hybrid's batch-1 encoder call), the same operation is timed with 1 and with 2 threads,
alternated call by call, median of ``--pairs`` pairs. Twice: on the machine as it is
(idle when nothing else runs), and with a background load of 2 busy processes, which is
what a shared workstation or a parallel test run looks like. Reported: ms per call and the
gain of 2 threads (> 1: 2 threads faster).

    python benchmarks/threads.py [--pairs 7]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.nn import functional as F

from trade_agent.cnn_lstm.model import CNNLSTM, CNNLSTMSpec
from trade_agent.config import CnnLstmConfig
from trade_agent.threads import AUTO_PLAN

SEQUENCE, FEATURES = 30, 35


def _busy() -> None:
    while True:
        pass


@contextmanager
def background_load(processes: int) -> Iterator[None]:
    """``processes`` spinning Python processes for the duration of the block."""
    workers = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # let them get scheduled
    try:
        yield
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def _cnn_lstm() -> CNNLSTM:
    spec = CNNLSTMSpec.from_config(CnnLstmConfig(), FEATURES, SEQUENCE)
    torch.manual_seed(0)
    return CNNLSTM(spec)


def cnn_lstm_step() -> Callable[[], None]:
    """One default CNN-LSTM training step at batch 256 (the cnn_lstm stage's inner loop)."""
    model = _cnn_lstm().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    x, y = torch.randn(256, SEQUENCE, FEATURES), torch.randint(0, 3, (256,))

    def step() -> None:
        logits, _ = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def embed_split() -> Callable[[], None]:
    """Stage-1 inference over 2,048 windows in batches of 1,024 (the embed stage, a table)."""
    model = _cnn_lstm().eval()
    x = torch.randn(2048, SEQUENCE, FEATURES)

    def run() -> None:
        with torch.no_grad():
            for chunk in x.split(1024):
                model.encode(chunk)

    return run


def sac_learn() -> Callable[[], None]:
    """SB3 SAC on our env: 100 env steps with a gradient step each (batch 256, [256, 256])."""
    from stable_baselines3 import SAC

    from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR
    from trade_agent.market.simulator import MarketPanel, SimulatorConfig
    from trade_agent.market.trading_env import VecPortfolioEnv

    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (2000, 4)), axis=0))
    panel = MarketPanel(
        rng.standard_normal((2000, 4, 3)).astype(np.float32),
        rng.standard_normal((2000, 4, 4)).astype(np.float32),
        close,
        close,
        DAILY_PERIODS_PER_YEAR,
    )
    env = VecPortfolioEnv(panel, SimulatorConfig(window=10, episode_length=256), n_envs=1, seed=0)
    model = SAC("MlpPolicy", env, batch_size=256, learning_starts=256, seed=0, device="cpu")
    model.learn(300)  # past learning_starts: every later step trains

    def run() -> None:
        model.learn(100, reset_num_timesteps=False)

    return run


def hybrid_step() -> Callable[[], None]:
    """The hybrid's encoder on one observation (4 assets): a live batch-1 evaluation step."""
    model = _cnn_lstm().eval()
    x = torch.randn(4, SEQUENCE, FEATURES)

    def run() -> None:
        with torch.no_grad():
            model.encode(x)

    return run


WORK: dict[str, tuple[str, Callable[[], Callable[[], None]]]] = {
    "CNN-LSTM train step (batch 256)": ("cnn_lstm", cnn_lstm_step),
    "stage-1 inference (2,048 windows)": ("embed", embed_split),
    "SB3 SAC, 100 steps + updates": ("policy", sac_learn),
    "hybrid encoder, batch-1 step": ("policy", hybrid_step),
}


def one_vs_two(func: Callable[[], None], pairs: int) -> tuple[float, float]:
    """Median seconds per call with 1 and with 2 threads, alternated call by call."""
    times: dict[int, list[float]] = {1: [], 2: []}
    for threads in (1, 2):  # warm-up at both counts
        torch.set_num_threads(threads)
        func()
    for _ in range(pairs):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            func()
            times[threads].append(time.perf_counter() - start)
    return statistics.median(times[1]), statistics.median(times[2])


def bench_threads(pairs: int) -> None:
    print(f"threads: 1 vs 2 intra-op threads, alternated, median of {pairs} pairs; 2 cores")
    made = {name: make() for name, (_, make) in WORK.items()}
    for label, load in (("idle", 0), ("2 busy processes", 2)):
        print(f"  {label}:")
        with background_load(load):
            for name, (work, _) in WORK.items():
                one, two = one_vs_two(made[name], pairs)
                print(
                    f"    {name:36s} 1 thread {1e3 * one:8.1f} ms   2 threads {1e3 * two:8.1f} ms   "
                    f"gain of 2 threads {one / two:5.2f}x   plan ({work}): {AUTO_PLAN[work]}"  # type: ignore[index]
                )
    torch.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args()
    bench_threads(max(args.pairs, 5))


if __name__ == "__main__":
    main()
