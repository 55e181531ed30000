"""Read CSV/Parquet market files and map their headers onto the canonical columns.

Accepted layouts:

* long format: ``timestamp, symbol, open, high, low, close, volume``;
* single-instrument exports (Yahoo, Stooq, Dukascopy, MetaTrader, ...): no symbol column,
  headers such as ``Date``/``Datetime``/``Gmt time``, optional ``Adj Close``; separate
  ``Date`` and ``Time`` columns are joined. Extra columns (``OpenInt``, ...) are ignored.

Values stay raw here (strings for CSV); :mod:`trade_agent.data.validation` parses and
checks them so its errors can point at the original line.
"""

from __future__ import annotations

import glob
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trade_agent.data.schema import COLUMN_ALIASES, SYMBOL, TIMESTAMP, TIMESTAMP_ALIASES
from trade_agent.errors import DataSourceError, DataValidationError

LINE = "_line"  # original position of each row, for error messages
REQUIRED = ("timestamp", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class RawTable:
    """A file's rows with canonical column names, before parsing.

    Attributes:
        frame: columns among ``timestamp, symbol, open, high, low, close, volume,
            adj_close`` plus ``_line`` (the CSV line or 1-based Parquet row of each record).
        source: the file path, as shown in error messages.
        row_label: ``"line"`` for CSV, ``"row"`` for Parquet.
        separator: the CSV field separator; with ``;`` or tabs a comma in a number is the
            decimal mark (European exports), with ``,`` it can only be a thousands mark.
        headers: the file's own header of each canonical column (``timestamp`` ->
            ``Date``), so messages name what the user sees in the file.
    """

    frame: pd.DataFrame
    source: str
    row_label: str
    separator: str = ","
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, column: str) -> str:
        """The file's name for a canonical column (the canonical name when the file has none)."""
        return self.headers.get(column, column)


def _normalise(header: str) -> str:
    """``Adj Close`` -> ``adjclose``; MetaTrader's ``<DATE>`` -> ``date``."""
    return re.sub(r"[\s_\-<>]+", "", str(header).strip().lower())


DATA_SUFFIXES = (".csv", ".csv.gz", ".txt", ".parquet", ".pq")


def data_files(path: str | Path) -> list[Path]:
    """The files behind ``data.path``: the file itself, a folder's data files or a glob's matches.

    A folder or glob keeps CSV/Parquet files only (hidden files and DVC's ``.gitignore``
    are skipped), sorted by name.

    Raises:
        DataSourceError: a folder or pattern without any data file.
    """
    text = str(path)
    if any(c in text for c in "*?["):
        found = [Path(p) for p in glob.glob(text)]
        where = f"the pattern {text}"
    elif Path(path).is_dir():
        found = list(Path(path).iterdir())
        where = f"{text}/"
    else:
        return [Path(path)]
    files = sorted(
        p for p in found if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(DATA_SUFFIXES)
    )
    if not files:
        raise DataSourceError(
            f"{where} holds no data file; put one CSV/Parquet file per symbol there ({', '.join(DATA_SUFFIXES)})"
        )
    return files


def read_table(path: str | Path, *, symbol: str = "") -> RawTable:
    """Read ``path`` (``.csv``, ``.csv.gz``, ``.txt``, ``.parquet``) into a :class:`RawTable`.

    Args:
        path: the file.
        symbol: symbol for single-instrument files; defaults to the upper-cased file stem.

    Raises:
        DataSourceError: the file is missing, empty, or not parseable as a table.
        DataValidationError: no data rows, or a required column is missing.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataSourceError(f"{source}: file not found; pass an existing CSV or Parquet file")
    if path.stat().st_size == 0:
        raise DataSourceError(f"{source}: file is empty; expected a header line and data rows")
    is_parquet = path.suffix.lower() in {".parquet", ".pq"}
    separator = "," if is_parquet else _sniff_separator(path)
    try:
        if is_parquet:
            frame = pd.read_parquet(path)
        else:
            # Everything as text: numbers are parsed later so bad cells can be reported.
            frame = pd.read_csv(path, dtype=str, sep=separator, skip_blank_lines=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataSourceError(f"{source}: file is empty; expected a header line and data rows") from None
    except Exception as exc:  # pyarrow/pandas raise many types for unreadable files
        detail = " ".join(str(exc).split())  # pandas' messages span lines
        raise DataSourceError(f"{source}: cannot read as {'Parquet' if is_parquet else 'CSV'} ({detail})") from None
    if not is_parquet:
        # skip_blank_lines=False keeps line numbers exact; now drop the blank lines.
        frame.insert(0, LINE, range(2, len(frame) + 2))
        frame = frame[frame.drop(columns=LINE).notna().any(axis=1)]
    else:
        frame.insert(0, LINE, range(1, len(frame) + 1))
    if frame.empty:
        raise DataValidationError(f"{source}: no data rows (only a header); add at least one bar")
    frame, headers = _canonical_columns(frame, source)
    if SYMBOL not in frame.columns:
        frame[SYMBOL] = symbol or path.name.split(".")[0].upper()
    return RawTable(
        frame=frame.reset_index(drop=True),
        source=source,
        row_label="row" if is_parquet else "line",
        separator=separator,
        headers=headers,
    )


def table_from_frame(frame: pd.DataFrame, source: str, row_label: str = "bar") -> RawTable:
    """Bars handed over in memory (the Python API, an HTTP request body) as a :class:`RawTable`:
    the same header aliases and the same checks as a file; rows are numbered from 1.

    Raises:
        DataValidationError: no rows, no symbol column, or a required column is missing.
    """
    if frame.empty:
        raise DataValidationError(f"{source}: no bars; send at least one")
    frame = frame.reset_index(drop=True)
    frame.insert(0, LINE, range(1, len(frame) + 1))
    frame, headers = _canonical_columns(frame, source)
    if SYMBOL not in frame.columns:
        raise DataValidationError(f"{source}: column 'symbol' is missing; give every bar its symbol")
    return RawTable(frame=frame, source=source, row_label=row_label, headers=headers)


def _sniff_separator(path: Path) -> str:
    """Comma unless the header line clearly uses ';' or tabs (European/MetaTrader exports)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", errors="replace") as handle:
        header = handle.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    return max(counts, key=lambda sep: counts[sep]) if any(counts.values()) else ","


def _canonical_columns(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, dict[str, str]]:
    by_name: dict[str, str] = {}
    for column in frame.columns:
        if column != LINE:
            by_name.setdefault(_normalise(column), column)
    chosen: dict[str, str] = {}
    for canonical, aliases in COLUMN_ALIASES.items():
        found = next((by_name[a] for a in aliases if a in by_name), None)
        if found is not None:
            chosen[canonical] = found
    out = pd.DataFrame({LINE: frame[LINE]})
    has_date, has_time = "date" in by_name, "time" in by_name
    explicit = next((by_name[a] for a in ("timestamp", "datetime", "gmttime", "localtime") if a in by_name), None)
    headers: dict[str, str] = {}
    if explicit is not None:
        out[TIMESTAMP], headers[TIMESTAMP] = frame[explicit], str(explicit)
    elif has_date and has_time:
        out[TIMESTAMP] = frame[by_name["date"]].astype(str) + " " + frame[by_name["time"]].astype(str)
        headers[TIMESTAMP] = f"{by_name['date']}' + '{by_name['time']}"
    else:
        found = next((by_name[a] for a in TIMESTAMP_ALIASES if a in by_name), None)
        if found is not None:
            out[TIMESTAMP], headers[TIMESTAMP] = frame[found], str(found)
    for canonical, column in chosen.items():
        out[canonical], headers[canonical] = frame[column], str(column)
    missing = [c for c in REQUIRED if c not in out.columns]
    if missing:
        found_cols = ", ".join(str(c) for c in frame.columns if c != LINE)
        raise DataValidationError(
            f"{source}: column '{missing[0]}' is missing; expected columns: timestamp, "
            f"[symbol,] open, high, low, close, volume [, adj close] (found: {found_cols})"
        )
    return out, headers
