"""Build a split's :class:`MarketPanel` from the stage outputs (no recomputation).

Inputs: ``features.parquet`` (scaled features, split labels), the ``embed`` stage's
embeddings and class probabilities, and the prepared OHLC bars. Bars are aligned across
symbols (timestamps every symbol has). Annualisation uses the dataset's bar frequency, which
the features stage records in ``schema.json``. The panel starts ``window - 1`` bars before the
split so the first decision of the split already has a full observation window; those
earlier bars are inputs only (features are causal), never traded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from trade_agent.cnn_lstm.model import EMBEDDING_PREFIX, PREDICTED_RETURN, PROBABILITY_COLUMNS
from trade_agent.data.frequency import BarFrequency
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.errors import DataSourceError, InsufficientDataError
from trade_agent.features.splits import SPLIT
from trade_agent.io import read_json
from trade_agent.market.simulator import MarketPanel
from trade_agent.paths import FEATURES_FILE, SCHEMA_FILE
from trade_agent.type_aliases import FloatArray

SPLITS = ("train", "val", "test")


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
    periods_per_year: float,
) -> tuple[MarketPanel, pd.DatetimeIndex, list[str]]:
    """The split's panel, its bar timestamps and its symbols.

    ``periods_per_year`` (the data's bars per year) travels with the panel for annualisation.

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
        periods_per_year=periods_per_year,
        feature_names=tuple(feature_names),
        context_names=tuple(context),
    )
    return panel, times[first : last + 1], symbols


@dataclass
class SplitData:
    """One split of the stage outputs: scaled features, optional embeddings, prices, and the
    data's bar frequency (what its metrics are annualised with)."""

    features: pd.DataFrame
    feature_names: list[str]
    embeddings: pd.DataFrame | None
    market: pd.DataFrame
    split: str
    frequency: BarFrequency

    @classmethod
    def load(cls, features_dir: Path, embeddings_path: Path | None, market_path: Path, split: str) -> SplitData:
        """Read the stage outputs.

        Raises:
            DataSourceError: a file is missing, or ``schema.json`` records no (or a malformed) frequency.
        """
        schema_path = features_dir / SCHEMA_FILE
        for path in (features_dir / FEATURES_FILE, schema_path, market_path):
            if not path.is_file():
                raise DataSourceError(f"{path} not found; run `dvc repro` (or `trade-agent data pipeline -r`) first")
        schema = read_json(schema_path)
        # No frequency recorded is an error, never a guessed daily figure.
        frequency = BarFrequency.from_json(schema.get("frequency"), str(schema_path))
        return cls(
            pd.read_parquet(features_dir / FEATURES_FILE),
            schema["feature_names"],
            pd.read_parquet(embeddings_path) if embeddings_path is not None else None,
            pd.read_parquet(market_path),
            split,
            frequency,
        )

    def panel(self, window: int, with_embeddings: bool) -> MarketPanel:
        embeddings = self.embeddings if with_embeddings else None
        if with_embeddings and embeddings is None:
            raise DataSourceError("this model needs the CNN-LSTM embeddings of the data; none were given")
        return build_panel(
            self.features,
            self.feature_names,
            embeddings,
            self.market,
            self.split,
            window,
            self.frequency.periods_per_year,
        )[0]

    def prices(self) -> tuple[FloatArray, FloatArray, pd.DatetimeIndex, list[str]]:
        """``(open, close)`` of the split's bars ``(S, N)``, their timestamps and symbols."""
        return self._prices

    @functools.cached_property
    def _prices(self) -> tuple[FloatArray, FloatArray, pd.DatetimeIndex, list[str]]:
        # Asked for by every model evaluated on the split: merge the frames once.
        panel, times, symbols = build_panel(
            self.features, self.feature_names, None, self.market, self.split, 1, self.frequency.periods_per_year
        )
        return panel.open, panel.close, times, symbols


def split_panels(
    features_dir: Path, embeddings_path: Path | None, market_path: Path, window: int
) -> dict[str, MarketPanel]:
    """Train, val and test panels from the stage outputs (with the embeddings when given)."""
    data = SplitData.load(features_dir, embeddings_path, market_path, SPLITS[0])
    return {split: replace(data, split=split).panel(window, embeddings_path is not None) for split in SPLITS}
