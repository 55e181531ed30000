"""``paper status`` and ``paper report``: what a paper account holds and how it has done.

The report puts the account beside the backtester run on the same decisions and prices
(the ledger's ``targets`` and ``prices``, its execution settings): "backtest drift" is the
largest per-bar difference between the two return series. Zero up to float rounding means
the ledger's fills, costs and marks are the backtester's; anything larger is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.data.frequency import infer_frequency
from trade_agent.errors import InsufficientDataError
from trade_agent.io import atomic_path
from trade_agent.market.backtest import backtest
from trade_agent.market.trading import trading_metrics
from trade_agent.paper.ledger import Ledger


@dataclass(frozen=True)
class AccountStatus:
    name: str
    path: str
    bars: int
    first: str | None
    last: str | None
    cash: float
    equity: float
    total_return: float
    models: list[dict[str, str]]
    positions: dict[str, dict[str, float]]  # symbol -> quantity, weight at the last close
    pending: dict[str, float]  # targets decided at the last close, filled at the next open


def account_status(ledger: Ledger) -> AccountStatus:
    info = ledger.info()
    bars = ledger.bars()
    last = ledger.last_bar()
    positions: dict[str, dict[str, float]] = {}
    if last is not None:
        rows = ledger.connection.execute(
            "SELECT symbol, quantity, weight FROM positions WHERE timestamp = ? ORDER BY symbol", (last.timestamp,)
        )
        positions = {str(s): {"quantity": float(q), "weight": float(w)} for s, q, w in rows}
    equity = last.equity if last is not None else info.cash
    return AccountStatus(
        name=info.name,
        path=str(ledger.path),
        bars=len(bars),
        first=bars[0]["timestamp"] if bars else None,
        last=last.timestamp if last is not None else None,
        cash=last.cash if last is not None else info.cash,
        equity=equity,
        total_return=equity / info.cash - 1.0,
        models=[
            {"model_id": s.model_id, "from": s.from_timestamp, "track_start": s.track_start} for s in ledger.segments()
        ],
        positions=positions,
        pending=dict(sorted(last.targets.items())) if last is not None else {},
    )


@dataclass(frozen=True)
class AccountSeries:
    """The ledger as arrays: ``n`` bars, ``N`` symbols (sorted)."""

    times: pd.DatetimeIndex
    symbols: list[str]
    open: np.ndarray  # (n, N)
    close: np.ndarray
    targets: np.ndarray  # (n, N), decided at each bar's close
    equity: np.ndarray  # (n,)
    returns: np.ndarray  # (n - 1,), bar 1 onwards
    turnover: np.ndarray  # (n - 1,)


def account_series(ledger: Ledger) -> AccountSeries:
    bars = ledger.bars()
    symbols = ledger.info().symbols
    times = [b["timestamp"] for b in bars]

    def cube(table: str, column: str) -> np.ndarray:
        rows = ledger.connection.execute(f"SELECT timestamp, symbol, {column} FROM {table}")
        frame = pd.DataFrame(rows.fetchall(), columns=["timestamp", "symbol", column])
        wide = frame.pivot(index="timestamp", columns="symbol", values=column)
        return wide.reindex(index=times, columns=symbols).to_numpy(np.float64)

    return AccountSeries(
        times=pd.DatetimeIndex(pd.to_datetime(times)),
        symbols=symbols,
        open=cube("prices", "open"),
        close=cube("prices", "close"),
        targets=cube("targets", "weight"),
        equity=np.array([b["equity"] for b in bars], dtype=np.float64),
        returns=np.array([b["bar_return"] for b in bars[1:]], dtype=np.float64),
        turnover=np.array([b["turnover"] for b in bars[1:]], dtype=np.float64),
    )


def account_report(ledger: Ledger, out_dir: Path) -> tuple[dict[str, Any], Path, Path]:
    """Metrics + backtest drift, written as ``out_dir/NAME.md`` and ``out_dir/NAME.png``.

    Raises:
        InsufficientDataError: fewer than 3 bars (no return series to judge yet).
    """
    info = ledger.info()
    series = account_series(ledger)
    if len(series.times) < 3:
        raise InsufficientDataError(
            f"{ledger.path}: {len(series.times)} bars processed; a report needs at least 3 (run `paper run` on more)"
        )
    periods = info.periods_per_year
    interval = infer_frequency(series.times.to_numpy(), 1.0).bar_interval
    reference = backtest(
        series.targets[:-1],
        series.open,
        series.close,
        0,
        info.cost_bps,
        info.slippage_bps,
        info.max_leverage,
        periods_per_year=periods,
    )
    drift = np.abs(series.returns - reference.returns)
    metrics = trading_metrics(series.returns, series.targets[:-1], periods_per_year=periods, traded=series.turnover)
    summary: dict[str, Any] = {
        "account": info.name,
        "bars": len(series.times),
        "first": str(series.times[0]),
        "last": str(series.times[-1]),
        "starting_cash": info.cash,
        "equity": float(series.equity[-1]),
        "sharpe": metrics["sharpe"],
        "total_return": float(series.equity[-1] / info.cash - 1.0),
        "max_drawdown": metrics["max_drawdown"],
        "turnover": metrics["turnover"],
        "costs_paid": float(sum(b["cost"] for b in ledger.bars())),
        "backtest_total_return": reference.metrics["total_return"],
        "backtest_drift_max": float(drift.max()),
        "backtest_drift_total_return": float(series.equity[-1] / info.cash - 1.0 - reference.metrics["total_return"]),
        "periods_per_year": periods,
        "models": [s.model_id for s in ledger.segments()],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    name = ledger.path.stem  # the file's own name: the ledger's contents never choose a path
    markdown = out_dir / f"{name}.md"
    png = out_dir / f"{name}.png"
    with atomic_path(markdown) as tmp:
        tmp.write_text(_markdown(summary, f"annualised with {periods:.0f} bars/year of {interval} bars"))
    _plot(series, reference.equity * info.cash, png, info.name)
    return summary, markdown, png


def _markdown(summary: dict[str, Any], annualisation: str) -> str:
    rows = [
        ("bars", f"{summary['bars']} ({summary['first']} .. {summary['last']})"),
        ("models", ", ".join(summary["models"])),
        ("equity", f"{summary['equity']:,.2f} (from {summary['starting_cash']:,.2f})"),
        ("total return", f"{summary['total_return']:.4%}"),
        ("Sharpe", f"{summary['sharpe']:.3f}"),
        ("max drawdown", f"{summary['max_drawdown']:.4%}"),
        ("turnover per bar", f"{summary['turnover']:.4f}"),
        ("costs paid", f"{summary['costs_paid']:,.2f}"),
        ("backtest total return", f"{summary['backtest_total_return']:.4%}"),
        ("backtest drift (max per bar)", f"{summary['backtest_drift_max']:.3e}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"# Paper account {summary['account']}\n\n| | |\n|---|---|\n{table}\n\n"
        f"Sharpe is {annualisation}. Backtest drift: the largest difference between a bar's return in the ledger "
        "and the backtester's on the same targets and prices.\n"
    )


def _plot(series: AccountSeries, backtest_equity: np.ndarray, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, height_ratios=(3, 1))
    top.plot(series.times, series.equity, label="paper account", linewidth=1.6)
    top.plot(series.times[1:], backtest_equity, label="backtester, same targets", linestyle="--", linewidth=1.0)
    top.set_ylabel("equity")
    top.set_title(f"paper account {name}")
    top.legend(loc="upper left")
    peak = np.maximum.accumulate(series.equity)
    bottom.fill_between(series.times, series.equity / peak - 1.0, 0.0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
