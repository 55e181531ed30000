"""Optional sentiment features from a user file, joined as-of with a lag.

Sources: a file of ``timestamp, symbol, score`` (any scale; averaged per bar) or of
``timestamp, symbol, headline`` scored with the bundled finance lexicon
(``(positive - negative) / (positive + negative)`` word counts). A score stamped at time s
is first used at the bar ``lag_bars`` after the last bar at or before s, so a headline
published during bar t can only inform decisions from bar t+1 on. Bars before any score
get 0 (neutral). There is no built-in news feed: enabling sentiment without a file is an
error, never fabricated values.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from trade_agent.config import SentimentConfig
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.errors import ConfigError, DataSourceError, DataValidationError

_WORD = re.compile(r"[a-z][a-z\-]+")


def sentiment_feature_names(config: SentimentConfig) -> list[str]:
    return ["sentiment_last", f"sentiment_mean_{config.window}"] if config.enabled else []


@cache
def _lexicon(name: str) -> frozenset[str]:
    text = resources.files("trade_agent.features").joinpath(f"lexicon/{name}.txt").read_text()
    return frozenset(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))


def score_headline(headline: str) -> float:
    """Lexicon polarity of one headline in [-1, 1] (0 when no lexicon word occurs)."""
    words = _WORD.findall(headline.lower())
    pos = sum(w in _lexicon("positive") for w in words)
    neg = sum(w in _lexicon("negative") for w in words)
    return (pos - neg) / (pos + neg) if pos + neg else 0.0


def load_sentiment(config: SentimentConfig) -> pd.DataFrame:
    """Read the configured sentiment file into ``timestamp, symbol, score``.

    Raises:
        ConfigError: sentiment is enabled but no source/path is configured.
        DataSourceError / DataValidationError: the file is missing or malformed.
    """
    if config.source == "none" or not config.path:
        raise ConfigError(
            "sentiment.enabled is true but no sentiment file is configured; set "
            "sentiment.source to 'scores' or 'headlines' and sentiment.path, or disable it"
        )
    path = Path(config.path)
    if not path.is_file():
        raise DataSourceError(f"{path}: sentiment file not found; fix sentiment.path")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    value = "score" if config.source == "scores" else "headline"
    for column in (TIMESTAMP, SYMBOL, value):
        if column not in frame.columns:
            raise DataValidationError(
                f"{path}: column '{column}' is missing; expected columns: timestamp, symbol, {value}"
            )
    ts = pd.to_datetime(frame[TIMESTAMP], errors="coerce", utc=True)
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0]) + 2
        raise DataValidationError(f"{path}: column 'timestamp', line {row}: unparseable timestamp")
    if value == "headline":
        score = frame["headline"].astype(str).map(score_headline).astype(float)
    else:
        score = pd.to_numeric(frame["score"], errors="coerce")
        if score.isna().any() or np.isinf(score).any():
            row = int(np.flatnonzero((score.isna() | np.isinf(score)).to_numpy())[0]) + 2
            raise DataValidationError(f"{path}: column 'score', line {row}: not a finite number")
    return pd.DataFrame(
        {
            TIMESTAMP: ts.dt.tz_convert(None).astype("datetime64[ns]"),
            SYMBOL: frame[SYMBOL].astype(str),
            "score": score.to_numpy(np.float64),
        }
    )


def join_sentiment(bars: pd.DataFrame, scores: pd.DataFrame, config: SentimentConfig) -> pd.DataFrame:
    """Add :func:`sentiment_feature_names` columns to ``bars`` (sorted by symbol, time)."""
    bars = bars.copy()
    last = np.zeros(len(bars))
    symbols = bars[SYMBOL].to_numpy()
    for symbol in pd.unique(symbols):
        rows = np.flatnonzero(symbols == symbol)
        bar_ts = bars[TIMESTAMP].to_numpy()[rows]
        mine = scores[scores[SYMBOL] == symbol]
        if mine.empty:
            continue
        # Bar index at/before each score, then shift by the lag: first bar allowed to see it.
        per_bar = mine.assign(bar=np.searchsorted(bar_ts, mine[TIMESTAMP].to_numpy(), side="right") - 1)
        per_bar = per_bar[per_bar["bar"] >= 0].groupby("bar")["score"].mean()
        seen = np.full(len(rows), np.nan)
        target = per_bar.index.to_numpy() + config.lag_bars
        keep = target < len(rows)
        seen[target[keep]] = per_bar.to_numpy()[keep]
        last[rows] = pd.Series(seen).ffill().fillna(0.0).to_numpy()
    bars["sentiment_last"] = last
    bars[f"sentiment_mean_{config.window}"] = (
        pd.Series(last).groupby(symbols).transform(lambda s: s.rolling(config.window, min_periods=1).mean()).to_numpy()
    )
    return bars
