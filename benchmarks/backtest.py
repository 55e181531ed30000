"""Backtester benchmark (``make bench``): 1,000,000 bars x 4 assets of random target weights.

Baselines in the same run: the obviously-correct share-and-cash loop the tests check
against (on a slice, reported as bars/s), and vectorbt's ``Portfolio.from_orders`` with the
same semantics (targets decided at bar t filled at open[t+1] with the same fee on traded
value, marked at the close), whose returns are also compared with ours. vectorbt is a
benchmark-only dependency (``pip install -e .[bench]``); its first call JIT-compiles, so
the best of several timed runs is reported.
"""

from __future__ import annotations

import time

import numpy as np

from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR
from trade_agent.market.backtest import backtest

RATE_BPS = 7.0


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
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_bars, n_assets)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.003, close.shape))
    weights = rng.uniform(-1, 1, (n_bars - 1, n_assets)) / n_assets

    def ours() -> np.ndarray:
        return backtest(weights, open_, close, 0, RATE_BPS, 0.0, 1.0, periods_per_year=DAILY_PERIODS_PER_YEAR).returns

    fast = min(_timed(ours) for _ in range(repeat))
    small = slice(0, slow_bars)
    slow = _timed(lambda: slow_loop(weights[: slow_bars - 1], open_[small], close[small], RATE_BPS / 1e4))
    print(f"backtest: {n_bars:,} bars x {n_assets} assets, random targets, t+1 open fills, {RATE_BPS:g} bps")
    print(f"  trade-agent (vectorised):       {n_bars / fast:14,.0f} bars/s  ({fast:.2f} s)")
    print(f"  share-and-cash loop ({slow_bars:,} bars): {slow_bars / slow:10,.0f} bars/s")
    print(f"  ratio (ours / loop):            {(n_bars / fast) / (slow_bars / slow):10.1f}x")
    try:
        import vectorbt  # noqa: F401
    except ImportError:
        print("  vectorbt is not installed; `pip install -e .[bench]` (make bench does)")
        return
    _vectorbt_returns(weights[:999], open_[:1000], close[:1000])  # JIT warm-up
    theirs = min(_timed(lambda: _vectorbt_returns(weights, open_, close)) for _ in range(repeat))
    # Same semantics: without fees both return series agree to rounding. With fees they
    # differ by the fee accounting (vectorbt pays the fee on top of the target notional; we
    # deduct it before applying the target weights): at most about fee x turnover per bar.
    head = slice(0, 20_000)
    no_fees = _vectorbt_returns(weights[head], open_[:20_001], close[:20_001], fee_bps=0.0)
    ours_no_fees = backtest(
        weights[head], open_[:20_001], close[:20_001], 0, 0.0, 0.0, 1.0, periods_per_year=DAILY_PERIODS_PER_YEAR
    ).returns
    print(f"  vectorbt from_orders:           {n_bars / theirs:14,.0f} bars/s  ({theirs:.2f} s)")
    print(f"  ratio (ours / vectorbt):        {theirs / fast:10.1f}x")
    print(f"  same returns as vectorbt without fees: max |difference| {np.abs(no_fees - ours_no_fees).max():.1e}")


def _timed(func) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    func()
    return time.perf_counter() - started
