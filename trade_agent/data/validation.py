"""Parse, check and repair market data; every refusal names file, column and row.

The checks run in a fixed order on the raw table (so line numbers still match the file):
entirely-empty columns, timestamps, numbers, infinities, duplicates, then gap repair
(forward fill of at most ``max_gap`` consecutive missing values per symbol and column),
then the price/volume rules. Split/dividend adjustment with ``adj_close`` comes last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import pandas as pd

from trade_agent.data.loaders import LINE, RawTable
from trade_agent.data.schema import MARKET_COLUMNS, OHLCV, PRICE_COLUMNS, SYMBOL, TIMESTAMP, VOLUME
from trade_agent.data.timestamps import TimestampProblem, parse_timestamps
from trade_agent.errors import DataValidationError

NUMERIC = (*OHLCV, "adj_close")
ADJ_FACTOR = "adj_factor"  # adj_close / close, repaired like a price column
REPAIRABLE = (*OHLCV, ADJ_FACTOR)
DISPLAY_NAME = {ADJ_FACTOR: "adj close"}


@dataclass
class ValidationReport:
    """What was loaded and repaired."""

    rows: int = 0
    symbols: list[str] = field(default_factory=list)
    start: str = ""
    end: str = ""
    repaired_values: dict[str, int] = field(default_factory=dict)
    adjusted_with_adj_close: bool = False
    timestamp_layout: str = ""  # how the timestamps were read, e.g. "%m/%d/%Y" or "ISO 8601"

    @property
    def total_repaired(self) -> int:
        return sum(self.repaired_values.values())


def _where(raw: RawTable, positions: np.ndarray | pd.Index, limit: int = 3) -> str:
    lines = raw.frame[LINE].to_numpy()[np.asarray(positions)[:limit]]
    label = raw.row_label + ("s" if len(lines) > 1 else "")
    more = f" (+{len(positions) - limit} more)" if len(positions) > limit else ""
    return f"{label} {', '.join(str(int(x)) for x in lines)}{more}"


def _fail(raw: RawTable, column: str | None, positions: np.ndarray | pd.Index, problem: str, fix: str) -> NoReturn:
    """Raise naming the file, the file's own header for ``column`` and the rows."""
    col = f"column '{raw.header(column)}', " if column else ""
    raise DataValidationError(f"{raw.source}: {col}{_where(raw, positions)}: {problem}; {fix}")


def _is_blank(series: pd.Series) -> np.ndarray:
    if series.dtype.kind in "fiub":
        return series.isna().to_numpy()
    text = series.astype("string").str.strip()
    return (series.isna() | text.isna() | text.str.lower().isin(["", "nan", "na", "null", "none"])).to_numpy(bool)


def _parse_timestamps(raw: RawTable, date_format: str, report: ValidationReport) -> pd.Series:
    try:
        parsed = parse_timestamps(raw.frame[TIMESTAMP], date_format)
    except TimestampProblem as problem:
        _fail(raw, TIMESTAMP, problem.positions, problem.problem, problem.fix)
    report.timestamp_layout = parsed.layout
    return parsed.values


def _parse_numbers(raw: RawTable, column: str, blank: np.ndarray) -> pd.Series:
    series = raw.frame[column]
    if series.dtype.kind in "fiu":
        values = series.astype("float64")
    else:
        text = series.astype("string").str.strip()
        if raw.separator == ",":
            text = text.str.replace(",", "", regex=False)  # quoted "1,234.5": thousands marks
        else:
            # ';'/tab files use a decimal comma ("1.234,5" or "100,05"); cells without a
            # comma are plain numbers.
            has_comma = text.str.contains(",", regex=False).fillna(False)
            text = text.where(~has_comma, text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False))
        values = pd.to_numeric(text.where(~blank), errors="coerce").astype("float64")
        bad = np.flatnonzero(values.isna().to_numpy() & ~blank)
        if len(bad):
            _fail(raw, column, bad, f"non-numeric value {series.iloc[bad[0]]!r}", "fix or remove the row")
    infinite = np.flatnonzero(np.isinf(values.to_numpy()))
    if len(infinite):
        _fail(raw, column, infinite, "infinite value", "replace it with a finite number or leave the cell empty")
    return values


def _repair_gaps(raw: RawTable, frame: pd.DataFrame, max_gap: int, report: ValidationReport) -> pd.DataFrame:
    """Forward-fill runs of <= max_gap missing values per symbol and column."""
    new_symbol = (frame[SYMBOL] != frame[SYMBOL].shift()).to_numpy()
    repaired_rows = np.zeros(len(frame), dtype=bool)
    for column in [c for c in REPAIRABLE if c in frame.columns]:
        missing = frame[column].isna().to_numpy()
        shown = DISPLAY_NAME.get(column, column)
        if not missing.any():
            continue
        # Run length of consecutive missing values, restarting at each symbol.
        run_id = np.cumsum(~missing | new_symbol)
        run_len = pd.Series(missing).groupby(run_id).transform("sum").to_numpy()
        at_start = pd.Series(~missing).groupby(frame[SYMBOL].to_numpy()).cummax().to_numpy() == 0
        if (missing & at_start).any():
            rows = frame.index[missing & at_start]
            _fail(
                raw,
                column,
                rows,
                "missing value before the first valid bar of "
                f"symbol {frame[SYMBOL].iloc[rows[0]]!r} (nothing to forward-fill from)",
                "drop the leading rows or fill them",
            )
        too_long = missing & (run_len > max_gap)
        if too_long.any():
            rows = frame.index[too_long]
            _fail(
                raw,
                column,
                rows,
                f"{int(run_len[too_long].max())} consecutive missing values exceed data.max_gap={max_gap}",
                "fill the gap in the file or raise data.max_gap",
            )
        frame[column] = frame[column].groupby(frame[SYMBOL]).ffill()
        report.repaired_values[shown] = int(missing.sum())
        repaired_rows |= missing
    if repaired_rows.any():
        # A bar repaired column by column must still be a valid bar.
        rows = repaired_rows
        body_hi = frame.loc[rows, ["open", "close"]].max(axis=1)
        body_lo = frame.loc[rows, ["open", "close"]].min(axis=1)
        frame.loc[rows, "high"] = np.maximum(frame.loc[rows, "high"], body_hi)
        frame.loc[rows, "low"] = np.minimum(frame.loc[rows, "low"], body_lo)
    return frame


def validate_market_table(
    raw: RawTable, *, max_gap: int = 3, date_format: str = ""
) -> tuple[pd.DataFrame, ValidationReport]:
    """Turn a :class:`RawTable` into the canonical frame, or raise naming the first problem.

    Returns:
        The frame (columns ``timestamp, symbol, open, high, low, close, volume``, sorted by
        symbol then time) and a :class:`ValidationReport`.

    Raises:
        DataValidationError: on any rule violation listed in the module docstring.
    """
    frame = raw.frame
    report = ValidationReport()
    blanks = {c: _is_blank(frame[c]) for c in (TIMESTAMP, *NUMERIC) if c in frame.columns}
    for column, blank in blanks.items():
        if blank.all():
            raise DataValidationError(
                f"{raw.source}: column '{raw.header(column)}' is entirely empty; fill it or remove the column"
            )
    bad_ts = np.flatnonzero(blanks[TIMESTAMP])
    if len(bad_ts):
        _fail(raw, TIMESTAMP, bad_ts, "missing timestamp", "every row needs a timestamp")

    symbol_blank = _is_blank(frame[SYMBOL])
    if symbol_blank.any():
        _fail(
            raw,
            SYMBOL,
            np.flatnonzero(symbol_blank),
            "missing symbol",
            "every row of a long-format file needs a symbol",
        )
    out = pd.DataFrame(
        {
            TIMESTAMP: _parse_timestamps(raw, date_format, report),
            SYMBOL: frame[SYMBOL].astype("string").str.strip().astype(str),
        }
    )
    for column in [c for c in NUMERIC if c in frame.columns]:
        out[column] = _parse_numbers(raw, column, blanks[column])
    out[LINE] = frame[LINE].to_numpy()
    if "adj_close" in out.columns:
        bad = np.flatnonzero((out["adj_close"] <= 0).to_numpy())
        if len(bad):
            _fail(
                raw,
                "adj_close",
                bad,
                "adjusted close must be > 0",
                f"fix it or drop the '{raw.header('adj_close')}' column",
            )
        # Repair gaps in the adjustment factor, not in adj_close itself: a forward-filled
        # adj_close over a new close would fake a zero return.
        out[ADJ_FACTOR] = out["adj_close"] / out["close"]
        out = out.drop(columns="adj_close")

    duplicated = out.duplicated([TIMESTAMP, SYMBOL], keep=False).to_numpy()
    if duplicated.any():
        rows = np.flatnonzero(duplicated)
        first = out.iloc[rows[0]]
        _fail(
            raw,
            None,
            rows,
            f"duplicate (timestamp, symbol) = ({first[TIMESTAMP]}, {first[SYMBOL]})",
            "keep one row per timestamp and symbol",
        )

    # Sort, keeping the original positions so errors still name file lines.
    order = np.lexsort((out[TIMESTAMP].to_numpy(), out[SYMBOL].to_numpy()))
    out = out.iloc[order].reset_index(drop=True)
    headers = raw.headers | {ADJ_FACTOR: raw.header("adj_close")}
    sorted_raw = RawTable(frame=out[[LINE]], source=raw.source, row_label=raw.row_label, headers=headers)
    out = _repair_gaps(sorted_raw, out, max_gap, report)

    for column in PRICE_COLUMNS:
        bad = np.flatnonzero((out[column] <= 0).to_numpy())
        if len(bad):
            _fail(
                sorted_raw, column, bad, f"price must be > 0, got {out[column].iloc[bad[0]]}", "fix or remove the row"
            )
    body_hi = out[["open", "close"]].max(axis=1).to_numpy()
    body_lo = out[["open", "close"]].min(axis=1).to_numpy()
    bad = np.flatnonzero(out["high"].to_numpy() < body_hi)
    if len(bad):
        r = out.iloc[bad[0]]
        _fail(
            sorted_raw,
            "high",
            bad,
            f"high {r['high']} < max(open, close) {max(r['open'], r['close'])}",
            "high must be the bar's maximum; check column order",
        )
    bad = np.flatnonzero(out["low"].to_numpy() > body_lo)
    if len(bad):
        r = out.iloc[bad[0]]
        _fail(
            sorted_raw,
            "low",
            bad,
            f"low {r['low']} > min(open, close) {min(r['open'], r['close'])}",
            "low must be the bar's minimum; check column order",
        )
    bad = np.flatnonzero((out[VOLUME] < 0).to_numpy())
    if len(bad):
        _fail(sorted_raw, VOLUME, bad, f"negative volume {out[VOLUME].iloc[bad[0]]}", "volume must be >= 0")

    if ADJ_FACTOR in out.columns:
        factor = out[ADJ_FACTOR].to_numpy()
        for column in PRICE_COLUMNS:
            out[column] = out[column].to_numpy() * factor
        # Constant traded value: a 2:1 split doubles the share count.
        out[VOLUME] = out[VOLUME].to_numpy() / factor
        report.adjusted_with_adj_close = True

    out = out[list(MARKET_COLUMNS)]
    report.rows = len(out)
    report.symbols = sorted(out[SYMBOL].unique().tolist())
    report.start = str(out[TIMESTAMP].min())
    report.end = str(out[TIMESTAMP].max())
    return out, report
