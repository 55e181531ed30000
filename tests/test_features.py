"""Feature values, causality, labels and leakage-free splits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from benchmarks.reference_features import reference_features
from trade_agent.config import FeaturesConfig, LabelsConfig
from trade_agent.features.build import build_features, minimum_bars
from trade_agent.features.indicators import compute_features, feature_names, warmup_bars
from trade_agent.features.labels import make_labels
from trade_agent.features.splits import SPLIT


@pytest.mark.parametrize("config", [FeaturesConfig(), "tiny"], ids=["default", "tiny"])
def test_features_match_reference_computation(
    market: pd.DataFrame, tiny_features: FeaturesConfig, config: FeaturesConfig | str
) -> None:
    config = tiny_features if config == "tiny" else config
    ours = compute_features(market, config)
    reference = reference_features(market, config)
    assert list(ours.columns[2:]) == feature_names(config)
    # TA-Lib seeds EMA/Wilder averages with an SMA; after 250 bars that start-up has decayed.
    settled = ours.groupby("symbol").cumcount().to_numpy() >= 250
    for name in feature_names(config):
        np.testing.assert_allclose(
            ours.loc[settled, name], reference.loc[settled, name], rtol=1e-4, atol=1e-9, err_msg=name
        )


def test_no_feature_at_t_depends_on_data_after_t(market: pd.DataFrame) -> None:
    config = FeaturesConfig()
    cut = pd.Timestamp(market["timestamp"].iloc[300])
    before = compute_features(market, config)
    altered = market.copy()
    future = altered["timestamp"] > cut
    rng = np.random.default_rng(0)
    scale = np.exp(rng.normal(0, 0.05, future.sum()))
    for column in ("open", "high", "low", "close"):
        altered.loc[future, column] *= scale
    altered.loc[future, "volume"] *= 3
    after = compute_features(altered, config)
    past = before["timestamp"] <= cut
    pd.testing.assert_frame_equal(before[past], after[past])
    assert not before[~past].equals(after[~past])  # the alteration is visible afterwards


def test_warmup_is_exactly_the_leading_nan_rows(market: pd.DataFrame) -> None:
    config = FeaturesConfig()
    values = compute_features(market, config).drop(columns=["timestamp", "symbol"])
    first_complete = (
        values.notna().all(axis=1).groupby(market.sort_values(["symbol", "timestamp"])["symbol"].to_numpy()).idxmax()
    )
    offsets = first_complete - np.array([0, 400])
    assert offsets.tolist() == [warmup_bars(config)] * 2


def _flat_bars(close: np.ndarray, timestamps: pd.DatetimeIndex) -> pd.DataFrame:
    """One symbol whose open, high, low and close are all ``close``."""
    prices = {column: close for column in ("open", "high", "low", "close")}
    return pd.DataFrame({"timestamp": timestamps, "symbol": "A", **prices, "volume": 1.0})


def test_labels_forward_return_and_dead_zone() -> None:
    close = np.array([100.0, 101.0, 100.5, 103.0, 103.0])
    market = _flat_bars(close, pd.bdate_range("2020-01-01", periods=5))
    labels = make_labels(market, LabelsConfig(horizon=2, dead_zone=0.005, dead_zone_units="absolute"))
    expected = np.log(close[2:] / close[:-2])
    np.testing.assert_allclose(labels["target_return"].to_numpy()[:3], expected)
    assert labels["target_direction"].tolist() == [1, 2, 2, -1, -1]  # +0.499% is inside 0.5%
    flat = make_labels(market, LabelsConfig(horizon=1, dead_zone=0.01, dead_zone_units="absolute"))[
        "target_direction"
    ].tolist()
    assert flat == [1, 1, 2, 1, -1]  # +0.99% and -0.5% are inside the 1% dead zone


def test_volatility_dead_zone_scales_with_the_trailing_volatility() -> None:
    """The same moves in units of their own volatility: calm and wild halves label alike."""
    rng = np.random.default_rng(0)
    steps = rng.standard_normal(400)
    vol = np.where(np.arange(400) < 200, 0.001, 0.02)  # hourly-FX-like calm, then equity-like
    close = 100 * np.exp(np.cumsum(steps * vol))
    market = _flat_bars(close, pd.date_range("2020-01-01", periods=400, freq="h"))
    config = LabelsConfig(horizon=1, dead_zone=0.5, dead_zone_units="volatility", volatility_window=20)
    labels = make_labels(market, config)["target_direction"].to_numpy()
    assert (labels[:20] == -1).all()  # no trailing volatility yet: unlabelled
    calm, wild = labels[30:190], labels[230:399]
    # |z| <= 0.5 for a standard normal: ~38 % flat in both regimes.
    assert abs(np.mean(calm == 1) - 0.38) < 0.12 and abs(np.mean(wild == 1) - 0.38) < 0.12
    absolute = make_labels(market, LabelsConfig(horizon=1, dead_zone=0.005, dead_zone_units="absolute"))
    flat = absolute["target_direction"].to_numpy() == 1
    assert flat[30:190].mean() > 0.95 and flat[230:399].mean() < 0.4  # a fixed zone degenerates on calm bars


def test_splits_are_chronological_with_embargo_and_no_window_overlap(market: pd.DataFrame, tiny_params) -> None:
    feature_set = build_features(market, tiny_params)
    frame = feature_set.frame
    h, L = tiny_params.labels.horizon, tiny_params.features.sequence_length
    assert tiny_params.embargo_bars == h + L
    times = np.sort(frame["timestamp"].unique())
    position = {t: i for i, t in enumerate(times)}
    spans = {name: frame.loc[frame[SPLIT] == name, "timestamp"] for name in ("train", "val", "test")}
    for earlier, later in (("train", "val"), ("val", "test")):
        last, first = position[spans[earlier].max()], position[spans[later].min()]
        # The last label of `earlier` ends at last + h; the first window of `later` starts
        # at first - L + 1: they must not touch.
        assert last + h < first - L + 1
        assert spans[earlier].max() < spans[later].min()
    # Each (symbol, timestamp) is in exactly one split; labelled rows only.
    assert not frame.duplicated(["symbol", "timestamp"]).any()
    in_split = frame[frame[SPLIT] != "excluded"]
    assert (in_split["target_direction"] >= 0).all()
    assert "target_return" not in feature_set.feature_names
    assert not any(name.startswith("target") for name in feature_set.feature_names)


def test_scaler_sees_only_training_rows(market: pd.DataFrame, tiny_params) -> None:
    """Changing validation/test prices must not change any training-row feature value."""
    base = build_features(market, tiny_params)
    cut = base.boundaries.train[1]
    altered = market.copy()
    later = altered["timestamp"] > cut
    for column in ("open", "high", "low", "close"):
        altered.loc[later, column] *= 1.5
    changed = build_features(altered, tiny_params)
    train = base.frame[SPLIT] == "train"
    # Features only: the last training labels look `horizon` bars into the embargo gap.
    columns = ["timestamp", "symbol", *base.feature_names]
    pd.testing.assert_frame_equal(base.frame.loc[train, columns], changed.frame.loc[train, columns])
    scaler_a = base.pipeline.steps[[s.name for s in base.pipeline.steps].index("scale")].state
    scaler_b = changed.pipeline.steps[[s.name for s in changed.pipeline.steps].index("scale")].state
    np.testing.assert_array_equal(scaler_a["center"], scaler_b["center"])


def test_minimum_bars_is_exact(market: pd.DataFrame, tiny_params) -> None:
    need = minimum_bars(tiny_params)
    one = market[market["symbol"] == "SYN0"]
    build_features(one.iloc[:need], tiny_params)  # exactly enough: works
    from trade_agent.errors import InsufficientDataError

    with pytest.raises(InsufficientDataError, match=f"needs at least {need} per symbol"):
        build_features(one.iloc[: need - 1], tiny_params)


def test_technical_indicators_can_be_switched_off(market: pd.DataFrame) -> None:
    config = replace(FeaturesConfig(), technical_indicators=False)
    names = feature_names(config)
    assert "rsi_14" not in names and "ret_1" in names
    assert list(compute_features(market, config).columns[2:]) == names


def test_embargo_holds_per_symbol_on_different_calendars() -> None:
    """With data.align false, each symbol still gets `embargo` of its own bars between splits."""
    from trade_agent.config import params_from_dict

    rng = np.random.default_rng(0)
    days = pd.date_range("2000-01-01", periods=1600, freq="D")

    def bars(symbol: str, timestamps: pd.DatetimeIndex) -> pd.DataFrame:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(timestamps))))
        return pd.DataFrame(
            {
                "timestamp": timestamps,
                "symbol": symbol,
                "open": close,
                "high": close * 1.01,
                "low": close * 0.99,
                "close": close,
                "volume": 1e3,
            }
        )

    market = pd.concat([bars("A", days[0::2]), bars("B", days[1::2])], ignore_index=True)
    params = params_from_dict({"data": {"align": False}})
    frame = build_features(market, params).frame
    for _, rows in frame.groupby("symbol"):
        split = rows[SPLIT].to_numpy()
        for earlier, later in (("train", "val"), ("val", "test")):
            gap = np.flatnonzero(split == later)[0] - np.flatnonzero(split == earlier)[-1] - 1
            assert gap >= params.embargo_bars
