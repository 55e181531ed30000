"""Chronological train/val/test splits separated by an embargo.

Boundaries are timestamps shared by all symbols. Between two splits ``embargo`` bars are
left out, with ``embargo >= horizon + sequence_length``: the last training label looks
``horizon`` bars ahead and the first validation window reaches ``sequence_length - 1`` bars
back, so no validation input overlaps a training label (purging as in Lopez de Prado,
*Advances in Financial Machine Learning*, ch. 7).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trade_agent.errors import InsufficientDataError

SPLIT = "split"
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
EXCLUDED = "excluded"  # embargo gaps and the unlabelled tail


@dataclass(frozen=True)
class SplitBoundaries:
    """Inclusive first/last timestamp of each split."""

    train: tuple[pd.Timestamp, pd.Timestamp]
    val: tuple[pd.Timestamp, pd.Timestamp]
    test: tuple[pd.Timestamp, pd.Timestamp]
    embargo_bars: int

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            name: [str(a), str(b)] for name, (a, b) in (("train", self.train), ("val", self.val), ("test", self.test))
        }
        out["embargo_bars"] = self.embargo_bars
        return out


def split_sizes(n_bars: int, fractions: tuple[float, float, float], embargo: int) -> tuple[int, int, int]:
    """Bars in train, val, test for ``n_bars`` labelled bars and two embargo gaps."""
    usable = n_bars - 2 * embargo
    if usable <= 0:
        return (0, 0, 0)
    n_train = math.floor(fractions[0] * usable)
    n_val = math.floor(fractions[1] * usable)
    return n_train, n_val, usable - n_train - n_val


def minimum_labelled_bars(fractions: tuple[float, float, float], embargo: int, min_split: int) -> int:
    """Smallest number of labelled bars giving every split at least ``min_split`` bars."""
    n = 2 * embargo + 3 * min_split
    while min(split_sizes(n, fractions, embargo)) < min_split:
        n += 1
    return n


def compute_boundaries(
    timestamps: np.ndarray, fractions: tuple[float, float, float], embargo: int, min_split: int, source: str = "data"
) -> SplitBoundaries:
    """Split the sorted unique labelled ``timestamps`` chronologically.

    Raises:
        InsufficientDataError: a split would have fewer than ``min_split`` bars.
    """
    n_train, n_val, n_test = split_sizes(len(timestamps), fractions, embargo)
    if min(n_train, n_val, n_test) < min_split:
        need = minimum_labelled_bars(fractions, embargo, min_split)
        raise InsufficientDataError(
            f"{source}: {len(timestamps)} labelled bars, need at least {need} for splits "
            f"{'/'.join(str(f) for f in fractions)} with embargo {embargo} and >= {min_split} bars "
            "per split; supply more data or lower features.sequence_length / labels.horizon"
        )
    ts = pd.to_datetime(timestamps)
    v0 = n_train + embargo
    t0 = v0 + n_val + embargo
    return SplitBoundaries(
        train=(ts[0], ts[n_train - 1]), val=(ts[v0], ts[v0 + n_val - 1]), test=(ts[t0], ts[-1]), embargo_bars=embargo
    )


def assign_splits(timestamps: pd.Series, bounds: SplitBoundaries) -> np.ndarray:
    """Split name for each timestamp; ``excluded`` for embargo gaps and unlabelled bars."""
    ts = timestamps.to_numpy()
    out = np.full(len(ts), EXCLUDED, dtype=object)
    for name in SPLIT_NAMES:
        first, last = getattr(bounds, name)
        out[(ts >= np.datetime64(first)) & (ts <= np.datetime64(last))] = name
    return out


def enforce_embargo(symbols: np.ndarray, splits: np.ndarray, embargo: int) -> np.ndarray:
    """Exclude rows so that, per symbol, ``embargo`` bars separate consecutive splits.

    Boundaries are shared timestamps; when symbols trade on different calendars
    (``data.align: false``) a gap of ``embargo`` timestamps can hold fewer of one symbol's
    bars. Rows are sorted by symbol then time. Returns a new split array.
    """
    out = splits.copy()
    bounds = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1], True])
    for start, stop in itertools.pairwise(bounds):
        part = out[start:stop]  # a view: edits land in `out`
        for earlier, later in (("train", "val"), ("val", "test")):
            before = np.flatnonzero(part == earlier)
            if not len(before):
                continue
            too_close = (part == later) & (np.arange(len(part)) - before[-1] - 1 < embargo)
            part[too_close] = EXCLUDED
    return out
