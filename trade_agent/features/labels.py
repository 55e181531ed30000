"""Training targets. Labels look forward; they are kept out of the feature matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trade_agent.config import LabelsConfig
from trade_agent.data.schema import SYMBOL, TIMESTAMP

TARGET_RETURN = "target_return"
TARGET_DIRECTION = "target_direction"
TARGET_COLUMNS: tuple[str, str] = (TARGET_RETURN, TARGET_DIRECTION)
DOWN, FLAT, UP = 0, 1, 2


def make_labels(market: pd.DataFrame, config: LabelsConfig) -> pd.DataFrame:
    """Forward log return over ``horizon`` bars and its 3-class direction, per symbol.

    ``target_return[t] = log(close[t+h] / close[t])``; the last ``h`` bars of each symbol
    have no label (NaN return, direction -1).

    Returns:
        Frame with ``timestamp, symbol, target_return, target_direction`` sorted by
        symbol then time.
    """
    market = market.sort_values([SYMBOL, TIMESTAMP], kind="stable")
    log_close = np.log(market["close"].to_numpy(np.float64))
    future = pd.Series(log_close).groupby(market[SYMBOL].to_numpy()).shift(-config.horizon).to_numpy()
    forward = future - log_close
    direction = np.where(forward > config.dead_zone, UP, np.where(forward < -config.dead_zone, DOWN, FLAT))
    direction = np.where(np.isnan(forward), -1, direction).astype(np.int8)
    return pd.DataFrame(
        {
            TIMESTAMP: market[TIMESTAMP].to_numpy(),
            SYMBOL: market[SYMBOL].to_numpy(),
            TARGET_RETURN: forward,
            TARGET_DIRECTION: direction,
        }
    )
