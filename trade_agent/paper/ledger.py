"""A paper-trading account as a SQLite ledger (``paper/NAME.sqlite``).

Tables (one row per bar, or per bar and symbol; timestamps as ISO text):

- ``account``: name, starting cash, the execution settings fills use (``cost_bps``,
  ``slippage_bps``, ``max_leverage``), the symbols, the bars per year of the data it was
  opened on (what ``paper report`` annualises with, as the backtester would), the schema version;
- ``models``: which model decides from which bar on (a switch adds a row), and where its
  own track starts;
- ``bars``: per processed bar, the model that decided at its close, cash after the fill,
  equity at the close, the bar's return, turnover and cost;
- ``prices``: each symbol's open and close of the bar (what fills and marks used);
- ``fills``: quantity, price, notional and cost of each symbol's fill at the bar's open;
- ``positions``: quantity and weight held at the bar's close;
- ``targets``: the weights decided at the bar's close, filled at the next bar's open.

Everything a bar writes is one transaction, so a process killed at any moment leaves the
ledger at the end of the last complete bar; the next run continues from there. Read back,
the file is untrusted: values are type-checked and nothing in it is executed or imported.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trade_agent.errors import DataSourceError, InputError
from trade_agent.io import is_safe_name

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE account (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (
    seq INTEGER PRIMARY KEY, model_id TEXT NOT NULL, from_timestamp TEXT NOT NULL, track_start TEXT NOT NULL
);
CREATE TABLE bars (
    seq INTEGER PRIMARY KEY, timestamp TEXT NOT NULL UNIQUE, model_id TEXT NOT NULL,
    cash REAL NOT NULL, equity REAL NOT NULL, bar_return REAL, turnover REAL NOT NULL, cost REAL NOT NULL
);
CREATE TABLE prices (
    timestamp TEXT NOT NULL, symbol TEXT NOT NULL, open REAL NOT NULL, close REAL NOT NULL,
    PRIMARY KEY (timestamp, symbol)
);
CREATE TABLE fills (
    timestamp TEXT NOT NULL, symbol TEXT NOT NULL, quantity REAL NOT NULL, price REAL NOT NULL,
    notional REAL NOT NULL, cost REAL NOT NULL, PRIMARY KEY (timestamp, symbol)
);
CREATE TABLE positions (
    timestamp TEXT NOT NULL, symbol TEXT NOT NULL, quantity REAL NOT NULL, weight REAL NOT NULL,
    PRIMARY KEY (timestamp, symbol)
);
CREATE TABLE targets (
    timestamp TEXT NOT NULL, symbol TEXT NOT NULL, weight REAL NOT NULL, PRIMARY KEY (timestamp, symbol)
);
"""


@dataclass(frozen=True)
class AccountInfo:
    name: str
    cash: float
    cost_bps: float
    slippage_bps: float
    max_leverage: float
    symbols: list[str]
    periods_per_year: float  # of the bars the account was opened on: what its report annualises with


@dataclass(frozen=True)
class ModelSegment:
    model_id: str
    from_timestamp: str
    track_start: str


@dataclass(frozen=True)
class BarState:
    """The account after a bar: cash, quantities and the targets decided at its close."""

    timestamp: str
    model_id: str
    cash: float
    equity: float
    quantities: dict[str, float]
    targets: dict[str, float]


@dataclass(frozen=True)
class BarRecord:
    """Everything one bar writes (see the module docstring)."""

    timestamp: str
    model_id: str
    cash: float
    equity: float
    bar_return: float | None
    turnover: float
    cost: float
    prices: dict[str, tuple[float, float]]  # symbol -> (open, close)
    fills: dict[str, tuple[float, float, float, float]]  # symbol -> (quantity, price, notional, cost)
    positions: dict[str, tuple[float, float]]  # symbol -> (quantity, weight)
    targets: dict[str, float]
    new_segment: ModelSegment | None = None


def ledger_path(name: str, root: Path = Path("paper")) -> Path:
    """``paper/NAME.sqlite``; a path ending in ``.sqlite`` is used as it is (the user's own path).

    Raises:
        InputError: a name that is not a plain file name (it would leave ``root``).
    """
    if name.endswith(".sqlite"):
        return Path(name)
    if not is_safe_name(name) or name.startswith("."):
        raise InputError(f"--account {name!r}: use a plain name such as 'demo' (or a path ending in .sqlite)")
    return root / f"{name}.sqlite"


class Ledger:
    """One account's SQLite file. Open with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path, self.connection = path, connection

    @classmethod
    def create(
        cls, path: Path, info: AccountInfo, first: BarRecord, before_commit: Callable[[], None] | None = None
    ) -> Ledger:
        """A new account holding its first bar, built under a temporary name and linked into place
        (so the file never exists without a bar, and two first runs cannot both create it).

        Raises:
            InputError: the account appeared meanwhile (another run created it).
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        tmp = Path(name)
        try:
            with closing(sqlite3.connect(tmp, isolation_level=None)) as connection:
                connection.executescript(SCHEMA)
                values = {
                    "name": info.name,
                    "cash": repr(info.cash),
                    "cost_bps": repr(info.cost_bps),
                    "slippage_bps": repr(info.slippage_bps),
                    "max_leverage": repr(info.max_leverage),
                    "symbols": json.dumps(info.symbols),
                    "periods_per_year": repr(info.periods_per_year),
                    "schema_version": str(SCHEMA_VERSION),
                }
                staging = cls(tmp, connection)
                with staging.transaction() as db:
                    db.executemany("INSERT INTO account VALUES (?, ?)", sorted(values.items()))
                staging.write_bar(first, None, before_commit)
            try:
                os.link(tmp, path)  # fails if the account exists: never replaces one
            except FileExistsError:
                raise InputError(f"{path}: another paper run created this account meanwhile; run again") from None
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Raises: DataSourceError when the file is missing or not a ledger of this version."""
        if not path.is_file():
            raise DataSourceError(f"{path}: no such paper account; start one with `trade-agent paper run`")
        connection = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
        ledger = cls(path, connection)
        try:
            version = ledger._account().get("schema_version")
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise DataSourceError(f"{path}: not a paper-trading ledger ({exc})") from None
        if version != str(SCHEMA_VERSION):
            connection.close()
            raise DataSourceError(f"{path}: ledger schema {version!r}, this version reads {SCHEMA_VERSION}")
        return ledger

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _account(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.connection.execute("SELECT key, value FROM account")}

    def info(self) -> AccountInfo:
        raw = self._account()
        try:
            symbols = json.loads(raw["symbols"])
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                raise ValueError("symbols is not a list of names")
            return AccountInfo(
                raw["name"],
                float(raw["cash"]),
                float(raw["cost_bps"]),
                float(raw["slippage_bps"]),
                float(raw["max_leverage"]),
                symbols,
                float(raw["periods_per_year"]),
            )
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            raise DataSourceError(f"{self.path}: the account table is damaged ({exc})") from None

    def segments(self) -> list[ModelSegment]:
        rows = self.connection.execute("SELECT model_id, from_timestamp, track_start FROM models ORDER BY seq")
        return [ModelSegment(str(m), str(f), str(t)) for m, f, t in rows]

    def last_bar(self) -> BarState | None:
        row = self.connection.execute(
            "SELECT timestamp, model_id, cash, equity FROM bars ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        try:
            timestamp = str(row[0])
            quantities = self._by_symbol("SELECT symbol, quantity FROM positions WHERE timestamp = ?", timestamp)
            targets = self._by_symbol("SELECT symbol, weight FROM targets WHERE timestamp = ?", timestamp)
            return BarState(timestamp, str(row[1]), float(row[2]), float(row[3]), quantities, targets)
        except (TypeError, ValueError) as exc:
            raise DataSourceError(
                f"{self.path}: the last bar's rows are damaged ({exc}); start a new account"
            ) from None

    def _by_symbol(self, query: str, timestamp: str) -> dict[str, float]:
        return {str(s): float(v) for s, v in self.connection.execute(query, (timestamp,))}

    def bars(self) -> list[dict[str, Any]]:
        columns = ("timestamp", "model_id", "cash", "equity", "bar_return", "turnover", "cost")
        rows = self.connection.execute(f"SELECT {', '.join(columns)} FROM bars ORDER BY seq")
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def table(self, name: str) -> list[tuple[Any, ...]]:
        """Every row of one of the ledger's tables, in key order (for reports and comparisons)."""
        keys = {
            "account": "key",
            "models": "seq",
            "bars": "seq",
            "prices": "timestamp, symbol",
            "fills": "timestamp, symbol",
            "positions": "timestamp, symbol",
            "targets": "timestamp, symbol",
        }
        if name not in keys:
            raise InputError(f"ledger table {name!r}: use one of {', '.join(keys)}")
        return list(self.connection.execute(f"SELECT * FROM {name} ORDER BY {keys[name]}"))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` (rolled back on any error; a kill leaves it uncommitted)."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def write_bar(
        self, record: BarRecord, previous: str | None, before_commit: Callable[[], None] | None = None
    ) -> None:
        """All of one bar's rows in one transaction, appended after bar ``previous`` (checked inside
        the transaction, so a concurrent run cannot interleave); ``before_commit``: a fault hook.

        Raises:
            InputError: another run wrote this account meanwhile, or holds it locked.
        """
        try:
            with self.transaction() as db:
                newest = db.execute("SELECT timestamp FROM bars ORDER BY seq DESC LIMIT 1").fetchone()
                if (newest[0] if newest else None) != previous:
                    raise InputError(f"{self.path}: another paper run wrote this account meanwhile; run again")
                self._insert(db, record)
                if before_commit is not None:
                    before_commit()
        except sqlite3.OperationalError as exc:
            raise InputError(f"{self.path}: {exc} (another paper run is writing it); run again later") from None

    @staticmethod
    def _insert(db: sqlite3.Connection, record: BarRecord) -> None:
        t = record.timestamp
        if record.new_segment is not None:
            s = record.new_segment
            db.execute(
                "INSERT INTO models (model_id, from_timestamp, track_start) VALUES (?, ?, ?)",
                (s.model_id, s.from_timestamp, s.track_start),
            )
        db.execute(
            "INSERT INTO bars (timestamp, model_id, cash, equity, bar_return, turnover, cost) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (t, record.model_id, record.cash, record.equity, record.bar_return, record.turnover, record.cost),
        )
        db.executemany("INSERT INTO prices VALUES (?, ?, ?, ?)", [(t, s, o, c) for s, (o, c) in record.prices.items()])
        db.executemany(
            "INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?)", [(t, s, *fill) for s, fill in record.fills.items()]
        )
        db.executemany(
            "INSERT INTO positions VALUES (?, ?, ?, ?)", [(t, s, *held) for s, held in record.positions.items()]
        )
        db.executemany("INSERT INTO targets VALUES (?, ?, ?)", [(t, s, w) for s, w in record.targets.items()])
