"""Timestamp parsing: detected layouts vs pandas with the format given by hand.

The baseline is what a user had to do before detection: ``pd.to_datetime(format=...)``
with the right strftime format (per-row ``strptime`` in pandas' C code). Ours detects the
layout, decides day/month order from all rows and parses field-wise with one RE2 regex.
Both parse the same strings; the results are compared for equality.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from trade_agent.data.timestamps import parse_timestamps

LAYOUTS = (
    ("m/d/yyyy HH:MM (Yahoo-like, month-first)", "%-m/%-d/%Y %H:%M", "%m/%d/%Y %H:%M"),
    ("dd.mm.yyyy HH:MM:SS.fff (Dukascopy)", "%d.%m.%Y %H:%M:%S.000", "%d.%m.%Y %H:%M:%S.%f"),
    ("ISO 8601", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"),
)


def bench_timestamps(rows: int, repeat: int) -> None:
    times = pd.date_range("1990-01-01", periods=rows, freq="h")  # spans day 13+, so the order is decided
    print(f"timestamps: {rows:,} rows per layout (best of {repeat}, alternating)")
    for name, writer, strptime_format in LAYOUTS:
        text = pd.Series(times.strftime(writer))
        ours_best, baseline_best = np.inf, np.inf
        for _ in range(repeat):
            start = time.perf_counter()
            parsed = parse_timestamps(text).values
            ours_best = min(ours_best, time.perf_counter() - start)
            start = time.perf_counter()
            baseline = pd.to_datetime(text, format=strptime_format)
            baseline_best = min(baseline_best, time.perf_counter() - start)
        same = bool((parsed.to_numpy() == baseline.to_numpy()).all())
        print(
            f"  {name}: ours {ours_best:.4f} s detected, pandas with the format {baseline_best:.4f} s: "
            f"{baseline_best / ours_best:.2f} x; identical: {same}"
        )
