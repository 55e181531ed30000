"""Sentiment joins with at least one bar of lag, from scores or lexicon-scored headlines."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from trade_agent.config import SentimentConfig, params_from_dict
from trade_agent.errors import ConfigError
from trade_agent.features.sentiment import join_sentiment, load_sentiment, score_headline
from trade_agent.preprocessing import PreprocessorManager
from trade_agent.preprocessing.steps import skip_sentiment


def _bars(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=n, freq="D"), "symbol": "A"})


def test_score_published_during_bar_t_is_first_used_at_t_plus_lag(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    # Published after bar 2020-01-02 opened: belongs to that bar, usable from 2020-01-03.
    path.write_text("timestamp,symbol,score\n2020-01-02 15:00,A,0.8\n2020-01-04 09:00,A,-0.4\n2020-01-04 10:00,B,1\n")
    config = SentimentConfig(enabled=True, source="scores", path=str(path), lag_bars=1, window=2)
    out = join_sentiment(_bars(), load_sentiment(config), config)
    assert out["sentiment_last"].tolist() == [0.0, 0.0, 0.8, 0.8, -0.4, -0.4]
    assert out["sentiment_mean_2"].tolist() == pytest.approx([0.0, 0.0, 0.4, 0.8, 0.2, -0.4])
    lag2 = join_sentiment(_bars(), load_sentiment(config), SentimentConfig(**{**config.__dict__, "lag_bars": 2}))
    assert lag2["sentiment_last"].tolist() == [0.0, 0.0, 0.0, 0.8, 0.8, -0.4]


def test_headlines_scored_with_the_bundled_lexicon(tmp_path: Path) -> None:
    assert score_headline("Apple beats estimates, shares surge") == 1.0
    assert score_headline("IBM misses forecast amid weak demand and layoffs") == -1.0
    assert score_headline("Board meets on Tuesday") == 0.0
    path = tmp_path / "news.csv"
    path.write_text('timestamp,symbol,headline\n2020-01-01,A,"Record profit, strong growth"\n')
    config = SentimentConfig(enabled=True, source="headlines", path=str(path))
    assert load_sentiment(config)["score"].tolist() == [1.0]


def test_enabled_without_source_is_an_error_never_fabricated() -> None:
    with pytest.raises(ConfigError, match=r"sentiment\.enabled is true but no sentiment file is configured"):
        load_sentiment(SentimentConfig(enabled=True))
    with pytest.raises(ConfigError, match="lag_bars: must be >= 1"):
        params_from_dict({"sentiment": {"lag_bars": 0}})


def test_sentiment_in_the_standard_pipeline(tmp_path: Path, market: pd.DataFrame, tiny_features) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("timestamp,symbol,score\n2000-06-01,SYN0,0.5\n")
    config = SentimentConfig(enabled=True, source="scores", path=str(path), window=3)
    pipeline = PreprocessorManager(tmp_path).create_standard_pipeline(
        "cnn_lstm", include_sentiment=True, sentiment=config, features=tiny_features, clip=0.0
    )
    out = pipeline.fit_transform(market)
    assert {"sentiment_last", "sentiment_mean_3"} <= set(pipeline.feature_names)
    syn1 = out[out["symbol"] == "SYN1"]
    assert syn1["sentiment_last"].nunique() == 1  # no scores for SYN1: one constant (scaled neutral) value


def test_sentiment_without_a_source_is_a_logged_no_op(
    tmp_path: Path, market: pd.DataFrame, tiny_features, caplog: pytest.LogCaptureFixture
) -> None:
    """The seed guide's call (include_sentiment=True, nothing configured) works: the step adds nothing."""
    manager = PreprocessorManager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="trade_agent.preprocessing.manager"):
        pipeline = manager.create_standard_pipeline("cnn_lstm", include_sentiment=True, features=tiny_features)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "\n" not in warning and "sentiment.source ('scores' or 'headlines') and sentiment.path" in warning
    step = next(s for s in pipeline.steps if s.name == "sentiment")
    assert step.func is skip_sentiment and step.kwargs == {}
    without = manager.create_standard_pipeline("cnn_lstm", features=tiny_features)
    pd.testing.assert_frame_equal(pipeline.fit_transform(market), without.fit_transform(market))
    assert not [c for c in pipeline.feature_names if c.startswith("sentiment")]
    saved = manager.load_pipeline(manager.save_pipeline(pipeline, "cnn_lstm", {}).name)
    assert next(s for s in saved.steps if s.name == "sentiment").func is skip_sentiment
    pd.testing.assert_frame_equal(saved.transform(market), pipeline.transform(market))
    # Asked for explicitly (params.yaml sentiment.enabled: true) without a file: still an error.
    with pytest.raises(ConfigError, match=r"sentiment\.enabled is true but no sentiment file is configured"):
        manager.create_standard_pipeline("cnn_lstm", include_sentiment=True, sentiment=SentimentConfig(enabled=True))
