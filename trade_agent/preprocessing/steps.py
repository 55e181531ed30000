"""The steps the standard pipelines are built from (importable, so they can be saved).

Order in the standard templates: validate input -> fill missing -> indicators ->
sentiment (``add_sentiment``, or the no-op ``skip_sentiment`` without a source) ->
[reward-shaping features] -> scale (fitted) -> [state normalisation
(fitted)] -> final validation (drops raw OHLCV and warm-up rows, checks finiteness).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trade_agent.config import FeaturesConfig, SentimentConfig
from trade_agent.data.schema import MARKET_COLUMNS, OHLCV, SYMBOL, TIMESTAMP
from trade_agent.errors import DataValidationError, SchemaError
from trade_agent.features.indicators import compute_features
from trade_agent.features.sentiment import join_sentiment, load_sentiment
from trade_agent.preprocessing.pipeline import POLICY_PREFIX, FittedStep, feature_columns


def validate_input(df: pd.DataFrame) -> pd.DataFrame:
    """Check the raw frame has the market columns, finite positive prices, unique keys.

    Only the market columns go on: anything else (a label column, a stray index) could
    otherwise end up in the feature matrix.
    """
    missing = [c for c in MARKET_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(
            f"input is missing column(s) {', '.join(missing)}; expected "
            f"{', '.join(MARKET_COLUMNS)} (load files with trade_agent.data)"
        )
    if df.duplicated([TIMESTAMP, SYMBOL]).any():
        row = int(np.flatnonzero(df.duplicated([TIMESTAMP, SYMBOL]).to_numpy())[0])
        raise DataValidationError(f"input row {row}: duplicate (timestamp, symbol); keep one row per bar")
    prices = df[["open", "high", "low", "close"]].to_numpy(np.float64)
    bad = ~(np.isfinite(prices) | np.isnan(prices)) | (prices <= 0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataValidationError(
            f"input row {row}, column '{('open', 'high', 'low', 'close')[col]}': price must be finite and > 0"
        )
    return df[list(MARKET_COLUMNS)].sort_values([SYMBOL, TIMESTAMP], kind="stable").reset_index(drop=True)


def fill_missing(df: pd.DataFrame, max_gap: int = 3) -> pd.DataFrame:
    """Forward-fill up to ``max_gap`` consecutive missing OHLCV values per symbol."""
    if not df[list(OHLCV)].isna().any().any():
        return df
    out = df.copy()
    out[list(OHLCV)] = out.groupby(SYMBOL)[list(OHLCV)].ffill(limit=max_gap)
    return out


def add_indicators(df: pd.DataFrame, **features: Any) -> pd.DataFrame:
    """Append the technical/candle/calendar features (``features`` = FeaturesConfig fields)."""
    df = df.sort_values([SYMBOL, TIMESTAMP], kind="stable").reset_index(drop=True)
    computed = compute_features(df, FeaturesConfig(**features))
    # compute_features returns rows in (symbol, time) order; make sure that is df's order.
    if not (computed[SYMBOL].equals(df[SYMBOL]) and computed[TIMESTAMP].equals(df[TIMESTAMP])):
        computed = df[[TIMESTAMP, SYMBOL]].merge(computed, on=[TIMESTAMP, SYMBOL], how="left")
    return pd.concat([df, computed.drop(columns=[TIMESTAMP, SYMBOL])], axis=1)


def add_sentiment(df: pd.DataFrame, **sentiment: Any) -> pd.DataFrame:
    """Join lagged sentiment scores (``sentiment`` = SentimentConfig fields)."""
    config = SentimentConfig(**sentiment)
    return join_sentiment(df, load_sentiment(config), config)


def skip_sentiment(df: pd.DataFrame) -> pd.DataFrame:
    """The template's sentiment step when no sentiment source is configured: a no-op.

    Returns ``df`` unchanged - no columns are added, no neutral or made-up scores.
    :meth:`~trade_agent.preprocessing.manager.PreprocessorManager.create_standard_pipeline`
    puts it in place of :func:`add_sentiment` (with a warning) when ``include_sentiment``
    is asked for but ``sentiment.source``/``sentiment.path`` are not set.
    """
    return df


def add_reward_shaping_features(df: pd.DataFrame, vol_window: int = 20, drawdown_window: int = 60) -> pd.DataFrame:
    """Causal risk context for RL rewards: realised volatility and drawdown from the high.

    ``rs_vol``: std of 1-bar log returns over ``vol_window``; ``rs_drawdown``: close over
    its rolling ``drawdown_window`` maximum, minus 1 (<= 0).
    """
    out = df.copy()
    grouped_close = out.groupby(SYMBOL)["close"]
    log_ret = np.log(out["close"]).groupby(out[SYMBOL]).diff()
    out[f"rs_vol_{vol_window}"] = log_ret.groupby(out[SYMBOL]).transform(lambda s: s.rolling(vol_window).std(ddof=0))
    rolling_max = grouped_close.transform(lambda s: s.rolling(drawdown_window).max())
    out[f"rs_drawdown_{drawdown_window}"] = out["close"] / rolling_max - 1.0
    return out


class ScaleFeatures(FittedStep):
    """Per-feature scaling fitted on the training rows, then clipped to ``[-clip, clip]``.

    ``method``: ``robust`` (median / IQR), ``standard`` (mean / std) or ``minmax`` (to
    [-1, 1]). Zero spreads become 1 so constant features map to 0 instead of inf.
    """

    @classmethod
    def fit(cls, df: pd.DataFrame, method: str = "robust", clip: float = 5.0) -> dict[str, np.ndarray]:
        values = df[feature_columns(df)].to_numpy(np.float64)
        if method == "robust":
            center = np.nanmedian(values, axis=0)
            spread = np.nanpercentile(values, 75, axis=0) - np.nanpercentile(values, 25, axis=0)
        elif method == "standard":
            center, spread = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        elif method == "minmax":
            low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
            center, spread = (high + low) / 2, (high - low) / 2
        else:
            raise SchemaError(f"scaling method '{method}' is unknown; use robust, standard or minmax")
        spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
        return {"center": np.nan_to_num(center), "scale": spread, "columns": np.array(feature_columns(df), dtype=str)}

    @classmethod
    def apply(
        cls, df: pd.DataFrame, state: dict[str, np.ndarray], method: str = "robust", clip: float = 5.0
    ) -> pd.DataFrame:
        columns = [str(c) for c in state["columns"]]
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise SchemaError(f"scaler was fitted on column(s) {', '.join(missing)} that the input lacks")
        out = df.copy()
        scaled = (df[columns].to_numpy(np.float64) - state["center"]) / state["scale"]
        out[columns] = np.clip(scaled, -clip, clip) if clip > 0 else scaled
        return out


class NormalizeState(FittedStep):
    """RL state normalisation: z-score with training mean/std, clipped (as SB3's VecNormalize)."""

    @classmethod
    def fit(cls, df: pd.DataFrame, clip: float = 10.0) -> dict[str, np.ndarray]:
        return ScaleFeatures.fit(df, method="standard")

    @classmethod
    def apply(cls, df: pd.DataFrame, state: dict[str, np.ndarray], clip: float = 10.0) -> pd.DataFrame:
        return ScaleFeatures.apply(df, state, method="standard", clip=clip)


class PolicyView(FittedStep):
    """Hybrid models' second input: the RL policy's view of the same bars.

    Adds reward-shaping features and ``policy__<name>`` copies of every feature,
    z-scored with training statistics and clipped (state normalisation), while the
    encoder view (the unprefixed, robust-scaled columns the CNN-LSTM was trained on) stays
    untouched.
    """

    @classmethod
    def _policy_inputs(cls, df: pd.DataFrame, vol_window: int, drawdown_window: int) -> pd.DataFrame:
        shaped = add_reward_shaping_features(df, vol_window=vol_window, drawdown_window=drawdown_window)
        return shaped[[TIMESTAMP, SYMBOL, *feature_columns(shaped)]]

    @classmethod
    def fit(
        cls, df: pd.DataFrame, clip: float = 10.0, vol_window: int = 20, drawdown_window: int = 60
    ) -> dict[str, np.ndarray]:
        return ScaleFeatures.fit(cls._policy_inputs(df, vol_window, drawdown_window), method="standard")

    @classmethod
    def apply(
        cls,
        df: pd.DataFrame,
        state: dict[str, np.ndarray],
        clip: float = 10.0,
        vol_window: int = 20,
        drawdown_window: int = 60,
    ) -> pd.DataFrame:
        policy = ScaleFeatures.apply(cls._policy_inputs(df, vol_window, drawdown_window), state, "standard", clip)
        columns = [str(c) for c in state["columns"]]
        renamed = policy[columns].rename(columns=lambda c: f"{POLICY_PREFIX}{c}")
        return pd.concat([df, renamed], axis=1)


def finalize_features(df: pd.DataFrame) -> pd.DataFrame:
    """Drop raw OHLCV and each symbol's leading warm-up rows; require finite features after.

    Raises:
        DataValidationError: a feature is NaN/inf after the warm-up (names column and row).
    """
    columns = feature_columns(df)
    values = df[columns].to_numpy(np.float64)
    complete = np.isfinite(values).all(axis=1)
    started = pd.Series(complete).groupby(df[SYMBOL].to_numpy()).cummax().to_numpy()
    bad = started & ~complete
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        col = columns[int(np.flatnonzero(~np.isfinite(values[row]))[0])]
        raise DataValidationError(
            f"feature '{col}' is not finite at {df[SYMBOL].iloc[row]} {df[TIMESTAMP].iloc[row]} "
            "after the warm-up; check the input bars around that time"
        )
    return df.loc[started, [TIMESTAMP, SYMBOL, *columns]].reset_index(drop=True)


def check_views(df: pd.DataFrame, required_prefixes: list[str] | None = None) -> pd.DataFrame:
    """Hybrid models: both inputs (encoder features, policy features) are present."""
    for prefix in required_prefixes or []:
        if not any(c.startswith(prefix) for c in feature_columns(df)):
            raise SchemaError(
                f"hybrid preprocessing produced no '{prefix}*' column; "
                "the encoder and policy views must both be present"
            )
    return df
