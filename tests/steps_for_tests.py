"""Importable custom steps for the preprocessing tests (a user's own module)."""

import pandas as pd


def add_spread(df: pd.DataFrame, scale: float = 1.0) -> pd.DataFrame:
    return df.assign(spread=(df["high"] - df["low"]) / df["close"] * scale)
