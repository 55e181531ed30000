"""Training targets. Labels look forward; they are kept out of the feature matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trade_agent.config import LabelsConfig
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.errors import DataValidationError

TARGET_RETURN = "target_return"
TARGET_DIRECTION = "target_direction"
TARGET_COLUMNS: tuple[str, str] = (TARGET_RETURN, TARGET_DIRECTION)
DOWN, FLAT, UP = 0, 1, 2
CLASS_NAMES: tuple[str, str, str] = ("down", "flat", "up")
MAX_CLASS_SHARE = 0.9  # above this a classifier learns "always predict the majority" and nothing else


def make_labels(market: pd.DataFrame, config: LabelsConfig) -> pd.DataFrame:
    """Forward log return over ``horizon`` bars and its 3-class direction, per symbol.

    ``target_return[t] = log(close[t+h] / close[t])``; the last ``h`` bars of each symbol
    have no label (NaN return, direction -1), and with a volatility-scaled dead zone
    neither have the first ``volatility_window`` bars.

    Returns:
        Frame with ``timestamp, symbol, target_return, target_direction`` sorted by
        symbol then time.
    """
    market = market.sort_values([SYMBOL, TIMESTAMP], kind="stable")
    log_close = np.log(market["close"].to_numpy(np.float64))
    symbols = market[SYMBOL].to_numpy()
    future = pd.Series(log_close).groupby(symbols).shift(-config.horizon).to_numpy()
    forward = future - log_close
    zone = dead_zone(log_close, symbols, config)
    direction = np.where(forward > zone, UP, np.where(forward < -zone, DOWN, FLAT))
    direction = np.where(np.isnan(forward) | np.isnan(zone), -1, direction).astype(np.int8)
    return pd.DataFrame(
        {
            TIMESTAMP: market[TIMESTAMP].to_numpy(),
            SYMBOL: market[SYMBOL].to_numpy(),
            TARGET_RETURN: forward,
            TARGET_DIRECTION: direction,
        }
    )


def dead_zone(log_close: np.ndarray, symbols: np.ndarray, config: LabelsConfig) -> np.ndarray:
    """Half-width of the "flat" class per row (NaN where the volatility window is not full yet)."""
    if config.dead_zone_units == "absolute":
        return np.full(len(log_close), config.dead_zone)
    one_bar = pd.Series(log_close).groupby(symbols).diff()
    sigma = one_bar.groupby(symbols).transform(lambda s: s.rolling(config.volatility_window).std(ddof=0))
    return config.dead_zone * sigma.to_numpy() * np.sqrt(config.horizon)


def check_label_balance(directions: np.ndarray, config: LabelsConfig, source: str) -> dict[str, float]:
    """Refuse training labels one class dominates; returns the class shares.

    With an absolute dead zone too wide for the bar size (``dead_zone: 0.005`` on hourly FX
    at horizon 5 makes 98 % of labels "flat") a model scores the majority share and learns
    nothing, silently. The refusal names the shares and the params that fix it.

    Raises:
        DataValidationError: more than :data:`MAX_CLASS_SHARE` in one class, or fewer than
            two classes.
    """
    counts = np.bincount(np.asarray(directions, dtype=np.int64), minlength=3)[:3]
    shares = counts / max(int(counts.sum()), 1)
    summary = {name: float(share) for name, share in zip(CLASS_NAMES, shares, strict=True)}
    present = int((counts > 0).sum())
    if present >= 2 and shares.max() <= MAX_CLASS_SHARE:
        return summary
    zone = (
        f"labels.dead_zone {config.dead_zone:g} x trailing volatility"
        if config.dead_zone_units == "volatility"
        else f"labels.dead_zone {config.dead_zone:g} (absolute log return)"
    )
    listed = ", ".join(f"{name} {100 * share:.1f}%" for name, share in summary.items())
    problem = (
        f"only {present} label class in the training split"
        if present < 2
        else f"{100 * shares.max():.1f}% of the training labels are '{CLASS_NAMES[int(np.argmax(shares))]}'"
    )
    raise DataValidationError(
        f"{source}: {problem} ({listed}) at labels.horizon {config.horizon} with {zone}; a model would learn "
        f"only the majority class: {'lower' if summary['flat'] > MAX_CLASS_SHARE else 'raise'} labels.dead_zone, "
        "or scale it with the data (labels.dead_zone_units: volatility), or change labels.horizon"
    )
