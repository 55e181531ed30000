"""Straightforward pandas implementations of every feature in ``trade_agent.features``.

Written from the textbook definitions with ``groupby().rolling()`` / ``ewm()``, without
TA-Lib. Two uses: the tests check TA-Lib's values against these (after the warm-up, where
TA-Lib's SMA seeding of EMA/Wilder averages has decayed), and ``benchmarks/run.py``
measures our implementation against this one on the same data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trade_agent.config import FeaturesConfig


def _wilder(s: pd.Series, n: int) -> pd.Series:
    return s.ewm(alpha=1.0 / n, adjust=False).mean()


def _ema(s: pd.Series, n: int) -> pd.Series:
    return s.ewm(span=n, adjust=False).mean()


def _rolling_mean_deviation(s: pd.Series, n: int) -> pd.Series:
    """Mean absolute deviation over a trailing window (vectorised; pandas has no builtin)."""
    values = s.to_numpy()
    out = np.full(len(values), np.nan)
    if len(values) >= n:
        windows = np.lib.stride_tricks.sliding_window_view(values, n)
        out[n - 1 :] = np.abs(windows - windows.mean(axis=1, keepdims=True)).mean(axis=1)
    return pd.Series(out, index=s.index)


def _one_symbol(g: pd.DataFrame, cfg: FeaturesConfig) -> pd.DataFrame:
    o, h, low, c, v = (g[k] for k in ("open", "high", "low", "close", "volume"))
    out = {}
    log_c = np.log(c)
    for p in cfg.return_periods:
        out[f"ret_{p}"] = log_c - log_c.shift(p)
    for p in cfg.sma_periods:
        out[f"sma_ratio_{p}"] = c / c.rolling(p).mean() - 1
    for p in cfg.ema_periods:
        out[f"ema_ratio_{p}"] = c / _ema(c, p) - 1
    delta = c.diff()
    gain = _wilder(delta.clip(lower=0), cfg.rsi_period)
    loss = _wilder((-delta).clip(lower=0), cfg.rsi_period)
    out[f"rsi_{cfg.rsi_period}"] = gain / (gain + loss)
    macd = _ema(c, cfg.macd_fast) - _ema(c, cfg.macd_slow)
    signal = _ema(macd, cfg.macd_signal)
    out["macd"], out["macd_signal"], out["macd_hist"] = macd / c, signal / c, (macd - signal) / c
    prev_c = c.shift(1)
    tr = pd.concat([h - low, (h - prev_c).abs(), (low - prev_c).abs()], axis=1).max(axis=1)
    out[f"atr_{cfg.atr_period}"] = _wilder(tr, cfg.atr_period) / c
    mid = c.rolling(cfg.bbands_period).mean()
    std = c.rolling(cfg.bbands_period).std(ddof=0)
    upper, lower = mid + cfg.bbands_stddev * std, mid - cfg.bbands_stddev * std
    out["bb_pctb"] = (c - lower) / (upper - lower)
    out["bb_width"] = (upper - lower) / mid
    hh, ll = h.rolling(cfg.stoch_k).max(), low.rolling(cfg.stoch_k).min()
    fast_k = 100 * (c - ll) / (hh - ll)
    slow_k = fast_k.rolling(cfg.stoch_smooth).mean()
    out["stoch_k"] = slow_k / 100
    out["stoch_d"] = slow_k.rolling(cfg.stoch_d).mean() / 100
    up_move, down_move = h.diff(), -low.diff()
    plus_dm = up_move.where((up_move > down_move) & (up_move > 0), 0.0)
    minus_dm = down_move.where((down_move > up_move) & (down_move > 0), 0.0)
    n = cfg.adx_period
    atr_n = _wilder(tr, n)
    plus_di, minus_di = 100 * _wilder(plus_dm, n) / atr_n, 100 * _wilder(minus_dm, n) / atr_n
    dx = 100 * (plus_di - minus_di).abs() / (plus_di + minus_di)
    out[f"adx_{n}"] = _wilder(dx, n) / 100
    hh_w, ll_w = h.rolling(cfg.willr_period).max(), low.rolling(cfg.willr_period).min()
    out[f"willr_{cfg.willr_period}"] = -(hh_w - c) / (hh_w - ll_w)
    tp = (h + low + c) / 3
    tp_mean = tp.rolling(cfg.cci_period).mean()
    mean_dev = _rolling_mean_deviation(tp, cfg.cci_period)
    out[f"cci_{cfg.cci_period}"] = (tp - tp_mean) / (0.015 * mean_dev) / 100
    flow = tp * v
    pos = flow.where(tp > tp.shift(1), 0.0).rolling(cfg.mfi_period).sum()
    neg = flow.where(tp < tp.shift(1), 0.0).rolling(cfg.mfi_period).sum()
    out[f"mfi_{cfg.mfi_period}"] = (pos / (pos + neg)).fillna(0.0)
    obv = (np.sign(c.diff()).fillna(0) * v).cumsum()
    w = cfg.obv_window
    out[f"obv_flow_{w}"] = (obv - obv.shift(w)) / v.rolling(w).sum()
    ret1 = log_c.diff()
    for win in cfg.volatility_windows:
        out[f"rvol_{win}"] = ret1.rolling(win).std(ddof=0)
    out[f"volume_ratio_{cfg.volume_ratio_window}"] = np.log((v + 1) / (v.rolling(cfg.volume_ratio_window).mean() + 1))
    out["candle_body"] = np.log(c / o)
    out["candle_upper_wick"] = (h - np.maximum(o, c)) / c
    out["candle_lower_wick"] = (np.minimum(o, c) - low) / c
    out["candle_range"] = np.log(h / low)
    return pd.DataFrame(out, index=g.index)


def reference_features(market: pd.DataFrame, cfg: FeaturesConfig) -> pd.DataFrame:
    """Same columns as ``compute_features`` (calendar included), same row order."""
    market = market.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    parts = [_one_symbol(g, cfg) for _, g in market.groupby("symbol", sort=False)]
    out = pd.concat(parts).loc[market.index]
    ts = market["timestamp"].dt
    dow, month = ts.day_of_week * (2 * np.pi / 7), (ts.month - 1) * (2 * np.pi / 12)
    out["dow_sin"], out["dow_cos"] = np.sin(dow), np.cos(dow)
    out["month_sin"], out["month_cos"] = np.sin(month), np.cos(month)
    out.insert(0, "symbol", market["symbol"])
    out.insert(0, "timestamp", market["timestamp"])
    return out
