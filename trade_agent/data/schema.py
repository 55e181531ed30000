"""The canonical market-data layout every loader produces.

Long format, one row per (timestamp, symbol): ``timestamp`` is naive UTC
``datetime64[ns]``, prices and volume are float64, rows sorted by symbol then time.
"""

from __future__ import annotations

TIMESTAMP = "timestamp"
SYMBOL = "symbol"
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VOLUME = "volume"
OHLCV: tuple[str, ...] = (*PRICE_COLUMNS, VOLUME)
MARKET_COLUMNS: tuple[str, ...] = (TIMESTAMP, SYMBOL, *OHLCV)
KEY: tuple[str, str] = (SYMBOL, TIMESTAMP)

# Header aliases, compared after lower-casing and removing spaces, '_', '-', '<' and '>'.
# Volume prefers real volume and falls back to tick volume (MetaTrader FX exports).
TIMESTAMP_ALIASES: tuple[str, ...] = ("timestamp", "datetime", "date", "time", "gmttime", "localtime")
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    SYMBOL: ("symbol", "ticker", "instrument"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "last"),
    VOLUME: ("volume", "vol", "v", "tickvol", "tickvolume"),
    "adj_close": ("adjclose", "adjustedclose"),
}
