"""The embedded real dataset and the synthetic generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trade_agent.config import DataConfig
from trade_agent.data.ingest import load_market_data
from trade_agent.data.synthetic import SyntheticSpec, bayes_directional_accuracy, generate_synthetic
from trade_agent.errors import DataValidationError


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame, _ = load_market_data(DataConfig())
    return frame


def test_sample_is_four_stocks_on_common_dates(sample: pd.DataFrame) -> None:
    assert sorted(sample["symbol"].unique()) == ["AAPL", "GOOG", "IBM", "MSFT"]
    assert sample["timestamp"].min() == pd.Timestamp("2004-08-19")
    assert sample["timestamp"].max() == pd.Timestamp("2013-03-01")
    per_symbol = sample.groupby("symbol")["timestamp"].apply(tuple)
    assert per_symbol.nunique() == 1 and len(per_symbol.iloc[0]) == 2148


def test_sample_is_split_adjusted(sample: pd.DataFrame) -> None:
    # AAPL split 2:1 on 2005-02-28; raw closes go 88.99 -> 44.86, adjusted ones barely move.
    aapl = sample[sample["symbol"] == "AAPL"].set_index("timestamp")["close"]
    jump = aapl[pd.Timestamp("2005-02-28")] / aapl[pd.Timestamp("2005-02-25")]
    assert 0.97 < jump < 1.03
    assert np.abs(np.diff(np.log(aapl.to_numpy()))).max() < 0.25


def test_unknown_symbol_is_refused() -> None:
    with pytest.raises(DataValidationError, match=r"symbol 'TSLA' from data\.symbols not found; available: "):
        load_market_data(DataConfig(symbols=["TSLA"]))


def test_synthetic_is_deterministic_and_valid() -> None:
    a = generate_synthetic(SyntheticSpec(seed=3, n_bars=200))
    b = generate_synthetic(SyntheticSpec(seed=3, n_bars=200))
    c = generate_synthetic(SyntheticSpec(seed=4, n_bars=200))
    pd.testing.assert_frame_equal(a, b)
    assert not a["close"].equals(c["close"])
    assert (a["high"] >= a[["open", "close"]].max(axis=1)).all()
    assert (a["low"] <= a[["open", "close"]].min(axis=1)).all()


@pytest.mark.parametrize("horizon", [1, 5])
def test_bayes_accuracy_matches_the_optimal_predictor_empirically(horizon: int) -> None:
    """The reported ceiling is what sign(r[t]) actually achieves on a long sample."""
    spec = SyntheticSpec(n_symbols=1, n_bars=200_000, ar=0.3, seed=1)
    close = generate_synthetic(spec)["close"].to_numpy()
    log_c = np.log(close)
    r_t = np.diff(log_c)[:-horizon]  # return of bar t (known at t)
    forward = log_c[1 + horizon :] - log_c[1:-horizon]  # sum of the next `horizon` returns
    empirical = np.mean(np.sign(r_t) == np.sign(forward))
    expected = bayes_directional_accuracy(0.3, horizon)
    assert abs(empirical - expected) < 0.005
    assert bayes_directional_accuracy(0.0, horizon) == 0.5


def test_synthetic_source_reports_its_ceiling() -> None:
    _, report = load_market_data(DataConfig(source="synthetic", synthetic_bars=300))
    assert report.synthetic["bayes_directional_accuracy"][1] == pytest.approx(0.5 + np.arcsin(0.3) / np.pi)
