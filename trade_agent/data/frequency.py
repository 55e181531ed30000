"""Bar frequency as a property of the dataset: interval, weekly calendar, bars per year.

Every annualised figure (Sharpe, Sortino, volatility, CAGR, the bootstrap interval) scales
by ``periods_per_year``. Assuming 252 (daily equities) makes an hourly FX Sharpe about
sqrt(6,200 / 252) ~ 5x too small, so the ``prepare`` stage infers it from the timestamps:

* the bar interval is the most common spacing between consecutive timestamps;
* the weekly calendar is the set of slots of the week (interval-sized) that hold a bar in
  at least half as many weeks as the busiest slot: 24x7 crypto fills all of them, 24x5 FX
  about 5/7, an exchange's sessions fewer;
* a jump between two bars that skips only slots outside that calendar (a weekend, a
  night) is a *session break*; a skipped slot inside it is a *missing bar*;
* ``periods_per_year`` counts the bars actually observed in the training share of the
  history, ``(n - 1) / span in years`` (252 for daily equities with holidays, ~6,200 for
  24x5 hourly FX, ~8,766 for 24x7 hourly crypto). A training span under eight weeks is
  too short for that count (a weekend more or less moves it by 40 %), so such data use the
  calendar's in-session slots per week x 365.25 / 7 instead.

``data.periods_per_year`` overrides the inference. 252 appears only as
:data:`DAILY_PERIODS_PER_YEAR`, the documented figure for daily bars.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from trade_agent.errors import DataSourceError

DAILY_PERIODS_PER_YEAR = 252.0  # daily equities; what the inference finds on such data
SECONDS_PER_YEAR = 365.25 * 86_400.0
SECONDS_PER_WEEK = 7 * 86_400
MIN_COUNTED_SPAN_DAYS = 56.0  # below this the observed count is too noisy (see module docstring)
IN_SESSION_SHARE = 0.5  # a slot is in the calendar when filled in >= this share of the busiest slot's weeks
# The Unix epoch was a Thursday: shift by three days so that weeks start on Monday 00:00.
_MONDAY_OFFSET_NS = 3 * 86_400 * 10**9

Source = Literal["inferred", "configured"]


@dataclass(frozen=True)
class BarFrequency:
    """How often the dataset has a bar, and what a year of it holds.

    Attributes:
        bar_interval: the most common spacing as text (``1D``, ``1h``, ``5min``).
        interval_seconds: that spacing in seconds.
        calendar: ``24x7``, ``24x5``, ``weekdays``, ``7 days``, ``sessions`` (intraday
            with closed hours) or ``weekly+`` (bars a week or more apart).
        bars_per_week: in-session slots per week of that calendar.
        periods_per_year: what annualisation multiplies by (``sqrt`` of it for Sharpe).
        periods_per_year_source: ``inferred`` from the timestamps or ``configured``
            (``data.periods_per_year``).
        counted_bars / counted_span_days: the training-share bars the count is over.
        session_breaks: jumps that skip only out-of-calendar slots (nights, weekends).
        missing_bars: in-calendar slots with no bar (holidays, outages); never filled in.
    """

    bar_interval: str
    interval_seconds: float
    calendar: str
    bars_per_week: float
    periods_per_year: float
    periods_per_year_source: Source
    counted_bars: int
    counted_span_days: float
    session_breaks: int
    missing_bars: int

    def note(self) -> str:
        """What a report says about its annualisation, e.g. "annualised with 6,214 bars/year, inferred"."""
        return f"annualised with {self.periods_per_year:,.0f} bars/year of {self.bar_interval} bars, " + (
            "inferred" if self.periods_per_year_source == "inferred" else "set by data.periods_per_year"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object, source: str) -> BarFrequency:
        """Read back a recorded frequency (untrusted: every field is type-checked).

        Raises:
            DataSourceError: a field is missing or has the wrong type.
        """
        if not isinstance(data, dict):
            raise DataSourceError(f"{source}: 'frequency' is missing; re-run `dvc repro prepare`")
        numbers = ("interval_seconds", "bars_per_week", "periods_per_year", "counted_span_days")
        integers = ("counted_bars", "session_breaks", "missing_bars")
        try:
            values: dict[str, Any] = {k: float(data[k]) for k in numbers} | {k: int(data[k]) for k in integers}
            for key in ("bar_interval", "calendar"):
                if not isinstance(data[key], str):
                    raise TypeError(key)
                values[key] = data[key]
            if data["periods_per_year_source"] not in ("inferred", "configured"):
                raise TypeError("periods_per_year_source")
            values["periods_per_year_source"] = data["periods_per_year_source"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataSourceError(
                f"{source}: frequency field {exc} is missing or malformed; re-run `dvc repro prepare`"
            ) from None
        if not values["periods_per_year"] > 0:
            raise DataSourceError(f"{source}: frequency.periods_per_year must be > 0; re-run `dvc repro prepare`")
        return cls(**values)


def interval_label(seconds: float) -> str:
    """``86400`` -> ``1D``, ``3600`` -> ``1h``, ``300`` -> ``5min``, ``1.5`` -> ``1.5s``."""
    for unit, size in (("W", SECONDS_PER_WEEK), ("D", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def infer_frequency(timestamps: np.ndarray, train_fraction: float, override: float = 0.0) -> BarFrequency:
    """The :class:`BarFrequency` of sorted or unsorted bar ``timestamps`` (any symbols).

    Args:
        timestamps: ``datetime64`` bar times; duplicates (several symbols) count once.
        train_fraction: the leading share of distinct timestamps whose bars per year are
            counted (``splits.train``): annualisation uses no later information.
        override: ``data.periods_per_year``; > 0 replaces the inferred figure.

    Raises:
        DataSourceError: fewer than two distinct timestamps.
    """
    ns = np.unique(np.asarray(timestamps, dtype="datetime64[ns]").astype(np.int64))
    if len(ns) < 2:
        raise DataSourceError("the data have fewer than two distinct timestamps; a bar frequency needs two")
    diffs = np.diff(ns)
    values, counts = np.unique(diffs, return_counts=True)
    interval_ns = int(values[np.argmax(counts)])
    interval_s = interval_ns / 1e9

    if interval_s < SECONDS_PER_WEEK:
        slot_width = interval_ns if interval_s < 86_400 else 86_400 * 10**9  # daily+: one slot per weekday
        week_ns = SECONDS_PER_WEEK * 10**9
        slots_per_week = -(-week_ns // slot_width)
        shifted = ns + _MONDAY_OFFSET_NS
        week, in_week = shifted // week_ns, (shifted % week_ns) // slot_width
        absolute = week * slots_per_week + in_week
        # Weeks in which each slot holds a bar (one count per week, whatever the symbols).
        first_in_week = np.r_[True, (week[1:] != week[:-1]) | (in_week[1:] != in_week[:-1])]
        filled = np.bincount(in_week[first_in_week], minlength=slots_per_week)
        in_session = filled >= IN_SESSION_SHARE * filled.max()
        bars_per_week = float(in_session.sum()) * (slot_width / interval_ns if interval_s >= 86_400 else 1.0)
        # In-calendar slots strictly between consecutive bars: cumulative counts over the week.
        before = np.r_[0, np.cumsum(in_session)]
        per_week = int(in_session.sum())

        def in_calendar_up_to(slot: np.ndarray) -> np.ndarray:  # slots in [0, slot) that are in session
            return (slot // slots_per_week) * per_week + before[slot % slots_per_week]

        skipped = in_calendar_up_to(absolute[1:]) - in_calendar_up_to(absolute[:-1] + 1)
        jumps = absolute[1:] - absolute[:-1] > 1
        missing = int(np.clip(skipped, 0, None)[jumps].sum())
        breaks = int((jumps & (skipped <= 0)).sum())
        calendar = _calendar_name(interval_s, per_week, slots_per_week)
    else:
        bars_per_week, missing, breaks, calendar = SECONDS_PER_WEEK / interval_s, 0, 0, "weekly+"

    n_counted = max(math.floor(train_fraction * len(ns)), 2)
    span_s = (ns[n_counted - 1] - ns[0]) / 1e9
    if override > 0:
        periods, source = float(override), "configured"
    elif span_s >= MIN_COUNTED_SPAN_DAYS * 86_400:
        periods, source = (n_counted - 1) / (span_s / SECONDS_PER_YEAR), "inferred"
    else:
        periods, source = bars_per_week * 365.25 / 7, "inferred"
    return BarFrequency(
        bar_interval=interval_label(interval_s),
        interval_seconds=interval_s,
        calendar=calendar,
        bars_per_week=bars_per_week,
        periods_per_year=float(periods),
        periods_per_year_source=source,  # type: ignore[arg-type]
        counted_bars=n_counted,
        counted_span_days=float(span_s / 86_400),
        session_breaks=breaks,
        missing_bars=missing,
    )


def _calendar_name(interval_s: float, per_week: int, slots_per_week: int) -> str:
    share = per_week / slots_per_week
    if interval_s >= 86_400:
        return {5: "weekdays", 6: "6 days", 7: "7 days"}.get(per_week, f"{per_week} days")
    if share >= 0.95:
        return "24x7"
    if 5 / 7 - 0.05 <= share <= 5 / 7 + 0.02:
        return "24x5"
    return "sessions"
