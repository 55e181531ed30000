"""Technical, candle and calendar features, computed per symbol with TA-Lib.

Every feature at bar t uses bars <= t only (tests alter the future and check nothing
before it moves). Features are scale-free (ratios to price, oscillators / 100) so one
scaler can serve several instruments. The set and its periods come from
:class:`~trade_agent.config.FeaturesConfig`; :func:`feature_names` lists them in order.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pandas as pd
import talib

from trade_agent.config import FeaturesConfig, from_mapping
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.type_aliases import FloatArray


def _div(numerator: FloatArray, denominator: FloatArray, fill: float = 0.0) -> FloatArray:
    """numerator / denominator with ``fill`` where the denominator is 0 (flat markets)."""
    out = np.full_like(numerator, np.nan)
    ok = denominator != 0
    np.divide(numerator, denominator, out=out, where=ok)
    return np.where(ok | np.isnan(numerator) | np.isnan(denominator), out, fill)


def feature_names(config: FeaturesConfig) -> list[str]:
    """Names of the features :func:`compute_features` produces, in column order."""
    names = [f"ret_{p}" for p in config.return_periods]
    if config.technical_indicators:
        names += [f"sma_ratio_{p}" for p in config.sma_periods]
        names += [f"ema_ratio_{p}" for p in config.ema_periods]
        names += [
            f"rsi_{config.rsi_period}",
            "macd",
            "macd_signal",
            "macd_hist",
            f"atr_{config.atr_period}",
            "bb_pctb",
            "bb_width",
            "stoch_k",
            "stoch_d",
            f"adx_{config.adx_period}",
            f"willr_{config.willr_period}",
            f"cci_{config.cci_period}",
            f"mfi_{config.mfi_period}",
            f"obv_flow_{config.obv_window}",
        ]
    names += [f"rvol_{w}" for w in config.volatility_windows]
    names += [f"volume_ratio_{config.volume_ratio_window}"]
    if config.candle:
        names += ["candle_body", "candle_upper_wick", "candle_lower_wick", "candle_range"]
    if config.calendar:
        names += ["dow_sin", "dow_cos", "month_sin", "month_cos"]
    return names


def _symbol_features(
    o: FloatArray, h: FloatArray, low: FloatArray, c: FloatArray, v: FloatArray, *, config: FeaturesConfig
) -> dict[str, FloatArray]:
    cols: dict[str, FloatArray] = {}
    log_c = np.log(c)
    for p in config.return_periods:
        ret = np.full_like(c, np.nan)
        ret[p:] = log_c[p:] - log_c[:-p]
        cols[f"ret_{p}"] = ret
    if config.technical_indicators:
        for p in config.sma_periods:
            cols[f"sma_ratio_{p}"] = c / talib.SMA(c, p) - 1.0
        for p in config.ema_periods:
            cols[f"ema_ratio_{p}"] = c / talib.EMA(c, p) - 1.0
        cols[f"rsi_{config.rsi_period}"] = talib.RSI(c, config.rsi_period) / 100.0
        macd, signal, hist = talib.MACD(c, config.macd_fast, config.macd_slow, config.macd_signal)
        cols["macd"], cols["macd_signal"], cols["macd_hist"] = macd / c, signal / c, hist / c
        cols[f"atr_{config.atr_period}"] = talib.ATR(h, low, c, config.atr_period) / c
        upper, middle, lower = talib.BBANDS(c, config.bbands_period, config.bbands_stddev, config.bbands_stddev)
        cols["bb_pctb"] = _div(c - lower, upper - lower, fill=0.5)
        cols["bb_width"] = (upper - lower) / middle
        k, d = talib.STOCH(
            h, low, c, fastk_period=config.stoch_k, slowk_period=config.stoch_smooth, slowd_period=config.stoch_d
        )
        cols["stoch_k"], cols["stoch_d"] = k / 100.0, d / 100.0
        cols[f"adx_{config.adx_period}"] = talib.ADX(h, low, c, config.adx_period) / 100.0
        cols[f"willr_{config.willr_period}"] = talib.WILLR(h, low, c, config.willr_period) / 100.0
        cols[f"cci_{config.cci_period}"] = talib.CCI(h, low, c, config.cci_period) / 100.0
        cols[f"mfi_{config.mfi_period}"] = talib.MFI(h, low, c, v, config.mfi_period) / 100.0
        w = config.obv_window
        obv = talib.OBV(c, v)
        flow = np.full_like(c, np.nan)
        flow[w:] = obv[w:] - obv[:-w]
        cols[f"obv_flow_{w}"] = _div(flow, talib.SUM(v, w))
    ret1 = np.full_like(c, np.nan)
    ret1[1:] = np.diff(log_c)
    for w in config.volatility_windows:
        cols[f"rvol_{w}"] = talib.STDDEV(ret1, w, 1.0)
    cols[f"volume_ratio_{config.volume_ratio_window}"] = np.log(
        (v + 1.0) / (talib.SMA(v, config.volume_ratio_window) + 1.0)
    )
    if config.candle:
        cols["candle_body"] = np.log(c / o)
        cols["candle_upper_wick"] = (h - np.maximum(o, c)) / c
        cols["candle_lower_wick"] = (np.minimum(o, c) - low) / c
        cols["candle_range"] = np.log(h / low)
    return cols


def compute_features(market: pd.DataFrame, config: FeaturesConfig) -> pd.DataFrame:
    """Features for a canonical market frame (see :mod:`trade_agent.data.schema`).

    Returns:
        A frame with ``timestamp, symbol`` and :func:`feature_names` columns (float64),
        row-aligned with ``market`` sorted by symbol then time. Warm-up rows hold NaN.
    """
    codes, _ = pd.factorize(market[SYMBOL], sort=True)
    times = market[TIMESTAMP].to_numpy()
    in_order = bool(np.all(np.diff(codes) >= 0)) and bool(
        np.all((np.diff(codes) > 0) | (np.diff(times) > np.timedelta64(0)))
    )
    if not in_order:  # sort only when needed: it costs as much as several indicators
        order = np.lexsort((times, codes))
        market, codes, times = market.iloc[order].reset_index(drop=True), codes[order], times[order]
    names = feature_names(config)
    # Feature-major layout: each indicator writes one contiguous row, and the transposed
    # view is the column-major block pandas stores, so no copy is made at the end.
    values = np.full((len(names), len(market)), np.nan)
    row_of = {n: i for i, n in enumerate(names)}
    bounds = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True])
    arrays = [market[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume")]
    for start, stop in itertools.pairwise(bounds):
        cols = _symbol_features(*(a[start:stop] for a in arrays), config=config)
        for name, column in cols.items():
            values[row_of[name], start:stop] = column
    if config.calendar:
        ts = market[TIMESTAMP].dt
        dow = ts.day_of_week.to_numpy() * (2 * np.pi / 7)
        month = (ts.month.to_numpy() - 1) * (2 * np.pi / 12)
        values[row_of["dow_sin"]], values[row_of["dow_cos"]] = np.sin(dow), np.cos(dow)
        values[row_of["month_sin"]], values[row_of["month_cos"]] = np.sin(month), np.cos(month)
    out = pd.DataFrame(values.T, columns=names, copy=False)
    out.insert(0, SYMBOL, market[SYMBOL].array)
    out.insert(0, TIMESTAMP, times)
    return out


@functools.cache
def _warmup_cached(config_items: tuple[tuple[str, Any], ...]) -> int:
    config = from_mapping(
        FeaturesConfig, {k: list(v) if isinstance(v, tuple) else v for k, v in config_items}, "features"
    )
    longest = max(
        [
            *config.return_periods,
            *config.sma_periods,
            *config.ema_periods,
            config.macd_slow + config.macd_signal,
            config.adx_period * 2,
            config.bbands_period,
            config.cci_period,
            config.mfi_period,
            config.obv_window,
            config.stoch_k + config.stoch_smooth + config.stoch_d,
            *config.volatility_windows,
            config.volume_ratio_window,
        ]
    )
    n = 4 * longest + 10
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    probe = pd.DataFrame(
        {
            TIMESTAMP: pd.date_range("2000-01-03", periods=n, freq="D"),
            SYMBOL: "X",
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.uniform(1e5, 2e5, n),
        }
    )
    values = compute_features(probe, replace(config, calendar=False)).drop(columns=[TIMESTAMP, SYMBOL])
    complete = values.notna().all(axis=1).to_numpy()
    return int(np.argmax(complete))


def warmup_bars(config: FeaturesConfig) -> int:
    """Leading bars per symbol whose features are incomplete (NaN).

    Measured by running the indicators on a probe series, so it cannot drift from the
    indicator code (TA-Lib's lookbacks compound, e.g. ADX needs about 2x its period).
    """
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in asdict(config).items()))
    return _warmup_cached(items)
