"""``trade-agent paper run``: a model trades a paper account bar by bar.

Each run takes the bars of FILE newer than the ledger's last bar, in order, and for each:

1. fills the targets decided at the previous bar's close at this bar's open, paying
   ``(cost_bps + slippage_bps) / 1e4`` of the traded notional, as the backtester does
   (quantities and cash here, weights there: the same arithmetic, so the account's returns
   equal the backtest's to float precision; ``paper report`` shows the difference);
2. marks the positions at this bar's close;
3. records the model's targets decided at this close (filled on the next bar).

All of that is one SQLite transaction per bar. The decisions come from
:meth:`~trade_agent.inference.Predictor.positions`: one replay of the model from its track
start over FILE, so a run over three chunks of bars decides exactly what one run over all of
them does. A different ``--model`` than the account's current one is a switch: recorded in
``models``, it decides from the next new bar on, its own track starting flat at the
account's last bar (its positions there are its own, not the old model's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trade_agent.cnn_lstm.faults import before_paper_commit
from trade_agent.config import Params
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.errors import InputError
from trade_agent.inference import Predictor
from trade_agent.market.backtest import cap_leverage
from trade_agent.paper.ledger import AccountInfo, BarRecord, BarState, Ledger, ModelSegment, ledger_path
from trade_agent.registry import ModelRegistry


@dataclass(frozen=True)
class RunSummary:
    """What one ``paper run`` did."""

    path: Path
    model_id: str
    new_bars: int
    first: str | None
    last: str | None
    equity: float | None
    switched_from: str | None


def fill_and_mark(
    state: BarState,
    targets: dict[str, float],
    open_: dict[str, float],
    close: dict[str, float],
    rate: float,
) -> tuple[float, dict[str, float], float, float, float, dict[str, tuple[float, float, float, float]]]:
    """Fill ``targets`` at ``open_``, then mark at ``close``.

    Returns cash, quantities, equity, turnover, cost and the fills (quantity, price,
    notional, cost per symbol). Turnover is the backtester's: the sum of absolute weight
    changes against the holdings drifted to the open, valued before costs.
    """
    symbols = sorted(targets)
    value = state.cash + sum(state.quantities.get(s, 0.0) * open_[s] for s in symbols)
    drifted = {s: state.quantities.get(s, 0.0) * open_[s] / value for s in symbols}
    traded = {s: abs(targets[s] - drifted[s]) for s in symbols}
    turnover = sum(traded.values())
    cost = value * turnover * rate
    after_cost = value - cost
    quantities = {s: targets[s] * after_cost / open_[s] for s in symbols}
    cash = after_cost - sum(quantities[s] * open_[s] for s in symbols)
    equity = cash + sum(quantities[s] * close[s] for s in symbols)
    fills = {
        s: (
            quantities[s] - state.quantities.get(s, 0.0),
            open_[s],
            (quantities[s] - state.quantities.get(s, 0.0)) * open_[s],
            value * traded[s] * rate,
        )
        for s in symbols
    }
    return cash, quantities, equity, turnover, cost, fills


def run_paper(
    model_id: str,
    data: str,
    account: str,
    cash: float = 1e6,
    start: str | None = None,
    params: Params | None = None,
    registry: ModelRegistry | None = None,
    root: Path = Path("paper"),
) -> RunSummary:
    """Process FILE's new bars into the account (see the module docstring).

    ``start`` (a new account only): the first bar it decides on; default the first bar the
    model can decide on (its warm-up and windows filled).

    Raises:
        InputError: a bad cash amount, ``--start`` on an existing account, FILE missing bars
        the account needs, or bars that differ from those the account already processed.
    """
    path = ledger_path(account, root)
    if not np.isfinite(cash) or cash <= 0:
        raise InputError(f"--cash {cash}: give a positive amount")
    with Predictor(model_id, registry, params) as predictor:
        bars, _ = predictor.check_bars(predictor.load_bars(data), None, data)  # symbols, interval, history
        if not path.is_file():
            return _run(predictor, bars, None, path, cash, start, data)
        with Ledger.open(path) as ledger:
            if start is not None and ledger.last_bar() is not None:
                raise InputError(f"--start: account {path.stem} already runs; drop --start to continue it")
            return _run(predictor, bars, ledger, path, cash, start, data)


def _run(
    predictor: Predictor,
    bars: pd.DataFrame,
    ledger: Ledger | None,
    path: Path,
    cash: float,
    start: str | None,
    data: str,
) -> RunSummary:
    times = pd.DatetimeIndex(np.sort(bars[TIMESTAMP].unique()))
    last = ledger.last_bar() if ledger is not None else None
    segments = ledger.segments() if ledger is not None else []
    if last is None:
        track_start, switched_from = predictor.track_start(bars, start, data), None
        new = times[times >= track_start]
    else:
        _check_continuity(ledger, last, bars, data)  # type: ignore[arg-type]
        new = times[times > pd.Timestamp(last.timestamp)]
        current = segments[-1]
        if current.model_id == predictor.model_id:
            track_start, switched_from = pd.Timestamp(current.track_start), None
        else:  # a switch: the new model's own track starts flat at the account's last bar
            track_start, switched_from = pd.Timestamp(last.timestamp), current.model_id
    if len(new) == 0:  # nothing to do: the file is not even opened for writing
        return RunSummary(path, predictor.model_id, 0, None, None, last.equity if last else None, None)
    if track_start < times[0]:
        raise InputError(
            f"{data}: the bars start at {times[0]}, after {track_start}, where this account's model track starts; "
            "pass the full history (the model's features use every bar since)"
        )
    predictor.track_start(bars, track_start, data)  # enough warm-up before it, or one line naming the range
    positions = predictor.positions(bars, track_start)
    row_of = {t: i for i, t in enumerate(positions.times)}
    symbols = positions.symbols
    if last is not None and switched_from is None:
        # The replay must reproduce what the account decided at its last bar: a file with other
        # history (revised, gaps, a later first bar) would give other features, so other decisions.
        again = positions.weights[row_of[pd.Timestamp(last.timestamp)]]
        before = np.array([last.targets.get(s, np.nan) for s in symbols])
        if not np.allclose(again, before, rtol=0.0, atol=1e-9):
            raise InputError(
                f"{data}: replayed on these bars, {predictor.model_id} decides {np.round(again, 6).tolist()} at "
                f"{last.timestamp} where the account recorded {np.round(before, 6).tolist()}: the history before "
                "it differs from the account's; pass the same full history the account was run on"
            )
    common = positions.common
    info = (
        ledger.info()
        if ledger is not None
        else AccountInfo(
            path.stem,
            cash,
            common.cost_bps,
            common.slippage_bps,
            common.max_leverage,
            symbols,
            positions.frequency.periods_per_year,
        )
    )
    if info.symbols != symbols:
        raise InputError(
            f"{data}: symbols {', '.join(symbols)}; account {path.stem} trades {', '.join(info.symbols)}: "
            "pass bars of those symbols or start a new account"
        )
    rate = (info.cost_bps + info.slippage_bps) / 1e4
    targets = cap_leverage(positions.weights, info.max_leverage)
    segment = None
    if not segments or switched_from is not None:
        segment = ModelSegment(predictor.model_id, str(new[0]), str(track_start))
    state, equity = last, last.equity if last is not None else info.cash
    try:
        for n, t in enumerate(new, 1):
            k = row_of[t]
            open_ = dict(zip(symbols, positions.open[k].tolist(), strict=True))
            close = dict(zip(symbols, positions.close[k].tolist(), strict=True))
            decided = dict(zip(symbols, targets[k].tolist(), strict=True))
            fills: dict[str, tuple[float, float, float, float]] = {}
            if state is None:  # the account's first bar: nothing to fill yet
                cash_now, equity, turnover, cost, bar_return = info.cash, info.cash, 0.0, 0.0, None
                quantities = dict.fromkeys(symbols, 0.0)
            else:
                cash_now, quantities, equity, turnover, cost, fills = fill_and_mark(
                    state, state.targets, open_, close, rate
                )
                bar_return = equity / state.equity - 1.0
            record = BarRecord(
                timestamp=str(t),
                model_id=predictor.model_id,
                cash=cash_now,
                equity=equity,
                bar_return=bar_return,
                turnover=turnover,
                cost=cost,
                prices={s: (open_[s], close[s]) for s in symbols},
                fills=fills,
                positions={s: (quantities[s], quantities[s] * close[s] / equity) for s in symbols},
                targets=decided,
                new_segment=segment if n == 1 else None,
            )
            hook = lambda n=n: before_paper_commit(n)  # noqa: E731
            if ledger is None:  # a new account: its file appears with its first bar, or not at all
                ledger = Ledger.create(path, info, record, before_commit=hook)
            else:
                ledger.write_bar(record, state.timestamp if state is not None else None, before_commit=hook)
            state = BarState(str(t), predictor.model_id, cash_now, equity, quantities, decided)
    finally:
        if ledger is not None and last is None:
            ledger.close()
    return RunSummary(path, predictor.model_id, len(new), str(new[0]), str(new[-1]), equity, switched_from)


def _check_continuity(ledger: Ledger, last: BarState, bars: pd.DataFrame, data: str) -> None:
    """FILE must hold the account's last bar with the prices it was marked at (no revised history)."""
    stamp = pd.Timestamp(last.timestamp)
    rows = bars[bars[TIMESTAMP] == stamp].set_index(SYMBOL)["close"].astype(float)
    if rows.empty:
        raise InputError(
            f"{data}: no bar at {last.timestamp}, the account's last bar; pass bars that continue the account"
        )
    marked = ledger.connection.execute("SELECT symbol, close FROM prices WHERE timestamp = ?", (last.timestamp,))
    for symbol, close in marked:
        given = float(rows[symbol]) if symbol in rows.index else float("nan")
        if not np.isclose(given, close, rtol=1e-12, atol=0.0):
            raise InputError(
                f"{data}: {symbol} closes at {given} at {last.timestamp}, where the account marked it at {close}; "
                "the history changed: start a new account"
            )
