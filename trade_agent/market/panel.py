"""Build a split's :class:`MarketPanel` from the stage outputs (no recomputation).

Inputs: ``features.parquet`` (scaled features, split labels), the ``embed`` stage's
embeddings and class probabilities, and the prepared OHLC bars. Bars are aligned across
symbols (timestamps every symbol has). The panel starts ``window - 1`` bars before the
split so the first decision of the split already has a full observation window; those
earlier bars are inputs only (features are causal), never traded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trade_agent.cnn_lstm.model import EMBEDDING_PREFIX, PREDICTED_RETURN, PROBABILITY_COLUMNS
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.errors import InsufficientDataError
from trade_agent.features.splits import SPLIT
from trade_agent.market.simulator import MarketPanel


def context_columns(embeddings: pd.DataFrame) -> list[str]:
    """Embedding, class-probability and predicted-return columns of the embed outputs."""
    names = (*PROBABILITY_COLUMNS, PREDICTED_RETURN)
    return [c for c in embeddings.columns if c.startswith(EMBEDDING_PREFIX) or c in names]


def build_panel(
    features: pd.DataFrame,
    feature_names: list[str],
    embeddings: pd.DataFrame | None,
    market: pd.DataFrame,
    split: str,
    window: int,
) -> tuple[MarketPanel, pd.DatetimeIndex, list[str]]:
    """The split's panel, its bar timestamps and its symbols.

    Raises:
        InsufficientDataError: the split has no bar with a full window and a next bar.
    """
    frame = features[[TIMESTAMP, SYMBOL, SPLIT, *feature_names]]
    context: list[str] = []
    if embeddings is not None:
        context = context_columns(embeddings)
        frame = frame.merge(embeddings[[TIMESTAMP, SYMBOL, *context]], on=[TIMESTAMP, SYMBOL], how="inner")
    frame = frame.merge(market[[TIMESTAMP, SYMBOL, "open", "close"]], on=[TIMESTAMP, SYMBOL], how="inner")
    symbols = sorted(frame[SYMBOL].unique())
    counts = frame.groupby(TIMESTAMP)[SYMBOL].transform("size")
    frame = frame[counts.to_numpy() == len(symbols)].sort_values([TIMESTAMP, SYMBOL], kind="stable")
    times = pd.DatetimeIndex(frame[TIMESTAMP].unique())
    in_split = frame.groupby(TIMESTAMP, sort=True)[SPLIT].first().to_numpy() == split
    positions = np.flatnonzero(in_split)
    if len(positions) == 0:
        raise InsufficientDataError(f"split '{split}' has no aligned bars with embeddings; nothing to trade")
    # Window history may come from before the split (embargo bars: inputs, never traded).
    first, last = max(int(positions[0]) - (window - 1), 0), int(positions[-1])
    if last - first + 1 < window + 1:
        raise InsufficientDataError(f"split '{split}' is shorter than the observation window {window} + 1 bar")
    rows = frame[frame[TIMESTAMP].isin(times[first : last + 1])]
    t, n = last - first + 1, len(symbols)

    def cube(columns: list[str]) -> np.ndarray:
        return rows[columns].to_numpy(np.float32).reshape(t, n, len(columns))

    def square(column: str) -> np.ndarray:
        return rows[column].to_numpy(np.float64).reshape(t, n)

    panel = MarketPanel(
        features=cube(feature_names),
        context=cube(context) if context else np.zeros((t, n, 0), np.float32),
        open=square("open"),
        close=square("close"),
        feature_names=tuple(feature_names),
        context_names=tuple(context),
    )
    return panel, times[first : last + 1], symbols
