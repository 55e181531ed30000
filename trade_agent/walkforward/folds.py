"""Calendar folds and their inputs: what each fold may see, fixed by dates, never by fractions.

Fold ``k`` trades ``[start + k x test_period, start + (k + 1) x test_period)``, selects on
the ``val_period`` before it and trains on everything before that (``expanding``) or on the
last ``train_period`` (``rolling``). ``start`` defaults to the data's first day plus
``train_period`` and ``val_period``, so appending bars at the end never moves a boundary.

Between train and val, and between val and test, the last ``embargo`` bars of the earlier
window are left out (``horizon + sequence_length`` by default, as in the single split):
the last training label looks ``horizon`` bars ahead, the first validation window reaches
``sequence_length`` bars back. Test windows keep every bar, so stitched they tile the
out-of-sample history.

A fold's inputs (:func:`write_fold_inputs`) are the bars up to its test end plus the
``horizon`` bars its last test labels look at, featurised and scaled by a preprocessor fitted
on its own training window, and annualised with the bars per year of that window. Nothing
in them depends on later bars: they are byte-identical whatever is appended, which is what
lets DVC skip every fold whose window did not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.config import Params
from trade_agent.config.walkforward import WalkForwardConfig
from trade_agent.data.frequency import infer_frequency
from trade_agent.data.schema import TIMESTAMP
from trade_agent.errors import InsufficientDataError
from trade_agent.features.build import run_features_stage
from trade_agent.features.splits import SplitBoundaries
from trade_agent.io import write_json, write_parquet

WINDOW_FILE = "window.json"


def period_offset(period: str) -> pd.DateOffset:
    """``6M`` -> 6 calendar months (``D`` days, ``W`` weeks, ``M`` months, ``Y`` years)."""
    count, unit = int(period[:-1]), period[-1]
    if unit == "D":
        return pd.DateOffset(days=count)
    if unit == "W":
        return pd.DateOffset(weeks=count)
    return pd.DateOffset(months=count) if unit == "M" else pd.DateOffset(years=count)


@dataclass(frozen=True)
class FoldWindow:
    """Calendar windows of one fold (starts inclusive, ``test_end`` exclusive)."""

    fold: int
    train_start: pd.Timestamp
    val_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def to_json(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "train_start": str(self.train_start.date()),
            "val_start": str(self.val_start.date()),
            "test_start": str(self.test_start.date()),
            "test_end": str(self.test_end.date()),
        }


def fold_windows(first_bar: pd.Timestamp, config: WalkForwardConfig) -> list[FoldWindow]:
    """The configured folds' calendar windows, from the data's first bar and the periods."""
    origin = pd.Timestamp(first_bar).normalize()
    train, val, test = (period_offset(p) for p in (config.train_period, config.val_period, config.test_period))
    start = pd.Timestamp(config.start) if config.start else origin + train + val
    windows = []
    for k in sorted(config.folds):
        test_start = start + k * test
        val_start = test_start - val
        train_start = origin if config.train == "expanding" else max(origin, val_start - train)
        windows.append(FoldWindow(k, train_start, val_start, test_start, start + (k + 1) * test))
    return windows


def fold_boundaries(
    timestamps: np.ndarray, window: FoldWindow, embargo: int, min_bars: int, source: str = "data"
) -> SplitBoundaries:
    """Bar-level splits of ``window`` over the sorted unique ``timestamps`` (embargo applied).

    Raises:
        InsufficientDataError: a window holds too few bars (naming the fold, its dates and the fix).
    """
    ts = pd.DatetimeIndex(timestamps)
    train = np.flatnonzero((ts >= window.train_start) & (ts < window.val_start))
    val = np.flatnonzero((ts >= window.val_start) & (ts < window.test_start))
    test = np.flatnonzero((ts >= window.test_start) & (ts < window.test_end))
    train, val = train[: max(len(train) - embargo, 0)], val[: max(len(val) - embargo, 0)]
    for name, rows, need in (("train", train, min_bars), ("val", val, min_bars), ("test", test, 2)):
        if len(rows) < need:
            raise InsufficientDataError(
                f"{source}: walk-forward fold {window.fold} has {len(rows)} {name} bars "
                f"({window.to_json()[f'{name}_start']} onwards, after an embargo of {embargo}), needs {need}; "
                "lengthen walkforward.train_period/val_period, move walkforward.start or drop the fold "
                "from walkforward.folds"
            )
    return SplitBoundaries(
        train=(ts[train[0]], ts[train[-1]]),
        val=(ts[val[0]], ts[val[-1]]),
        test=(ts[test[0]], ts[test[-1]]),
        embargo_bars=embargo,
    )


def write_fold_inputs(params: Params, market: pd.DataFrame, window: FoldWindow, out_dir: Path) -> SplitBoundaries:
    """Write one fold's inputs under ``out_dir``: bars, provenance, features, its own preprocessor."""
    market = market.sort_values([TIMESTAMP, "symbol"], kind="stable")
    stamps = np.sort(market[TIMESTAMP].unique())
    horizon = params.labels.horizon
    in_test = np.flatnonzero(stamps < np.datetime64(window.test_end))
    if not len(in_test):
        raise InsufficientDataError(f"walk-forward fold {window.fold}: no bars before {window.test_end.date()}")
    # The last test labels look `horizon` bars past the window; those bars are labels only (excluded).
    last = stamps[min(in_test[-1] + horizon, len(stamps) - 1)]
    visible = market[market[TIMESTAMP] <= last].sort_values(["symbol", TIMESTAMP], kind="stable")
    bounds = fold_boundaries(
        stamps[stamps <= last], window, params.embargo_bars, params.features.sequence_length, f"fold {window.fold}"
    )
    train_stamps = stamps[(stamps >= np.datetime64(bounds.train[0])) & (stamps <= np.datetime64(bounds.train[1]))]
    frequency = infer_frequency(train_stamps, 1.0, params.data.periods_per_year)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / "market.parquet", visible.reset_index(drop=True))
    write_json(out_dir / "provenance.json", {"source": "walk-forward fold", "frequency": frequency.to_json()})
    write_json(out_dir / WINDOW_FILE, window.to_json() | {"splits": bounds.to_dict()})
    run_features_stage(params, out_dir / "market.parquet", out_dir, boundaries=bounds)
    return bounds
