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

from benchmarks.reference_features import reference_features
from trade_agent.config import FeaturesConfig
from trade_agent.data import SyntheticSpec, generate_synthetic
from trade_agent.features import compute_features


def best_of(func: Callable[[], object], repeat: int) -> float:
    """Fastest wall time of ``repeat`` runs (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_features(n_symbols: int, n_bars: int, repeat: int) -> None:
    market = generate_synthetic(SyntheticSpec(n_symbols=n_symbols, n_bars=n_bars, seed=0))
    config = FeaturesConfig()
    rows = len(market)
    ours = best_of(lambda: compute_features(market, config), repeat)
    baseline = best_of(lambda: reference_features(market, config), repeat)
    print(f"features: {rows:,} rows ({n_symbols} symbols x {n_bars:,} bars), {len(market.columns)} inputs -> "
          f"35 features")
    print(f"  trade-agent (TA-Lib per symbol): {ours:7.2f} s  {rows / ours:12,.0f} rows/s")
    print(f"  pandas rolling/ewm baseline:     {baseline:7.2f} s  {rows / baseline:12,.0f} rows/s")
    print(f"  speed-up vs pandas baseline:     {baseline / ours:7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bench_features(args.symbols, args.bars, args.repeat)


if __name__ == "__main__":
    main()
