"""Backtester benchmark (``make bench``): 1,000,000 bars x 4 assets of random target weights.

Baselines in the same run: the obviously-correct share-and-cash loop the tests check
against (on a slice, reported as bars/s), and vectorbt's ``Portfolio.from_orders`` with the
same semantics (targets decided at bar t filled at open[t+1] with the same fee on traded
value, marked at the close), whose returns are also compared with ours. vectorbt is a
benchmark-only dependency (``pip install -e .[bench]``); its first call JIT-compiles, so it
is warmed up on a small slice first.

Each baseline is timed alternately with ours, run by run (``repeat`` pairs, at least 5), and
the medians are reported, so background load hits both alike; the loop runs on its slice in
each pair.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR
from trade_agent.market.backtest import backtest

RATE_BPS = 7.0
MIN_PAIRS = 5  # every benchmark reports the median of at least 5 alternated pairs


def slow_loop(weights: np.ndarray, open_: np.ndarray, close: np.ndarray, rate: float) -> np.ndarray:
    cash, shares, previous = 1.0, np.zeros(open_.shape[1]), 1.0
    returns = np.empty(len(weights))
    for t, target in enumerate(weights):
        value = cash + shares @ open_[t + 1]
        value -= rate * np.abs(target * value - shares * open_[t + 1]).sum()
        shares = target * value / open_[t + 1]
        cash = value - target.sum() * value
        marked = cash + shares @ close[t + 1]
        returns[t] = marked / previous - 1.0
        previous = marked
    return returns


def _vectorbt_returns(
    weights: np.ndarray, open_: np.ndarray, close: np.ndarray, fee_bps: float = RATE_BPS
) -> np.ndarray:
    import pandas as pd
    import vectorbt as vbt

    # Row t+1 trades to the target decided at t, at that bar's open; valued at its close.
    size = np.vstack([np.full((1, weights.shape[1]), np.nan), weights])
    portfolio = vbt.Portfolio.from_orders(
        pd.DataFrame(close),
        pd.DataFrame(size),
        size_type="targetpercent",
        price=pd.DataFrame(open_),
        fees=fee_bps / 1e4,
        group_by=True,
        cash_sharing=True,
        call_seq="auto",
        init_cash=1.0,
        freq="1D",
    )
    return np.asarray(portfolio.returns())[1:]


def bench_backtest(n_bars: int, n_assets: int, slow_bars: int, repeat: int) -> None:
    pairs = max(repeat, MIN_PAIRS)
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_bars, n_assets)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.003, close.shape))
    weights = rng.uniform(-1, 1, (n_bars - 1, n_assets)) / n_assets

    def ours() -> np.ndarray:
        return backtest(weights, open_, close, 0, RATE_BPS, 0.0, 1.0, periods_per_year=DAILY_PERIODS_PER_YEAR).returns

    def loop() -> np.ndarray:
        small = slice(0, slow_bars)
        return slow_loop(weights[: slow_bars - 1], open_[small], close[small], RATE_BPS / 1e4)

    ours()  # warm-up
    fast, slow = _alternate(ours, loop, pairs)
    ratios = [(n_bars / f) / (slow_bars / s) for f, s in zip(fast, slow, strict=True)]
    fast_s, slow_s = statistics.median(fast), statistics.median(slow)
    print(f"backtest: {n_bars:,} bars x {n_assets} assets, random targets, t+1 open fills, {RATE_BPS:g} bps")
    print(f"  medians of {pairs} pairs, ours and the baseline alternated run by run")
    print(f"  trade-agent (vectorised):       {n_bars / fast_s:14,.0f} bars/s  ({fast_s:.3f} s)")
    print(f"  share-and-cash loop ({slow_bars:,} bars): {slow_bars / slow_s:10,.0f} bars/s  ({slow_s:.2f} s)")
    print(
        f"  ratio (ours / loop):            {(n_bars / fast_s) / (slow_bars / slow_s):10.1f}x"
        f"  (pairs {min(ratios):.0f}-{max(ratios):.0f}x)"
    )
    try:
        import vectorbt  # noqa: F401
    except ImportError:
        print("  vectorbt is not installed; `pip install -e .[bench]` (make bench does)")
        return
    _vectorbt_returns(weights[:999], open_[:1000], close[:1000])  # JIT warm-up
    fast, theirs = _alternate(ours, lambda: _vectorbt_returns(weights, open_, close), pairs)
    fast_s, theirs_s = statistics.median(fast), statistics.median(theirs)
    # Same semantics: without fees both return series agree to rounding. With fees they
    # differ by the fee accounting (vectorbt pays the fee on top of the target notional; we
    # deduct it before applying the target weights): at most about fee x turnover per bar.
    head = slice(0, 20_000)
    no_fees = _vectorbt_returns(weights[head], open_[:20_001], close[:20_001], fee_bps=0.0)
    ours_no_fees = backtest(
        weights[head], open_[:20_001], close[:20_001], 0, 0.0, 0.0, 1.0, periods_per_year=DAILY_PERIODS_PER_YEAR
    ).returns
    print(f"  vectorbt from_orders:           {n_bars / theirs_s:14,.0f} bars/s  ({theirs_s:.2f} s)")
    print(f"  ratio (ours / vectorbt):        {theirs_s / fast_s:10.1f}x  (ours {n_bars / fast_s:,.0f} bars/s here)")
    print(f"  same returns as vectorbt without fees: max |difference| {np.abs(no_fees - ours_no_fees).max():.1e}")


def _alternate(
    ours: Callable[[], object], baseline: Callable[[], object], pairs: int
) -> tuple[list[float], list[float]]:
    """Wall times of ``pairs`` runs of each, alternated run by run."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(pairs):
        times[0].append(_timed(ours))
        times[1].append(_timed(baseline))
    return times


def _timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started
