"""Sections of stage ``features``: features, sentiment, labels, splits, preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class FeaturesConfig:
    """Indicator set (TA-Lib, per symbol, causal) and the model input window.

    Periods are in bars. The default set yields 34 features.
    """

    return_periods: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20])
    sma_periods: list[int] = field(default_factory=lambda: [10, 20, 50])
    ema_periods: list[int] = field(default_factory=lambda: [12, 26])
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    atr_period: int = 14
    bbands_period: int = 20
    bbands_stddev: float = 2.0
    stoch_k: int = 14
    stoch_smooth: int = 3
    stoch_d: int = 3
    adx_period: int = 14
    willr_period: int = 14
    cci_period: int = 20
    mfi_period: int = 14
    obv_window: int = 20
    volatility_windows: list[int] = field(default_factory=lambda: [10, 20])
    volume_ratio_window: int = 20
    candle: bool = True
    calendar: bool = True
    technical_indicators: bool = True
    sequence_length: int = 30

    def __post_init__(self) -> None:
        if self.sequence_length < 1:
            raise ConfigError(f"features.sequence_length: must be >= 1, got {self.sequence_length}")


@dataclass(frozen=True)
class SentimentConfig:
    """Optional sentiment features, joined as-of with at least ``lag_bars`` of delay.

    ``source`` is ``none``, ``scores`` (a file of timestamp, symbol, score) or
    ``headlines`` (a file of timestamp, symbol, headline scored with the bundled lexicon).
    """

    enabled: bool = False
    source: Literal["none", "scores", "headlines"] = "none"
    path: str = ""
    lag_bars: int = 1
    window: int = 5

    def __post_init__(self) -> None:
        if self.lag_bars < 1:
            raise ConfigError(f"sentiment.lag_bars: must be >= 1 (no same-bar look-ahead), got {self.lag_bars}")


@dataclass(frozen=True)
class LabelsConfig:
    """Targets: forward log return over ``horizon`` bars and a 3-class direction.

    A forward return inside ``[-d, d]`` is class 1 (flat); below is 0 (down), above is 2
    (up). With ``dead_zone_units: absolute`` ``d = dead_zone`` (a log return); with
    ``volatility`` ``d = dead_zone * sigma_t * sqrt(horizon)``, ``sigma_t`` the standard
    deviation of the 1-bar log returns over the ``volatility_window`` bars up to t (causal),
    so the share of "flat" labels is about the same on daily stocks and hourly FX.
    """

    horizon: int = 1
    dead_zone: float = 0.1
    dead_zone_units: Literal["absolute", "volatility"] = "volatility"
    volatility_window: int = 20

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ConfigError(f"labels.horizon: must be >= 1, got {self.horizon}")
        if self.dead_zone < 0:
            raise ConfigError(f"labels.dead_zone: must be >= 0, got {self.dead_zone}")
        if self.volatility_window < 2:
            raise ConfigError(f"labels.volatility_window: must be >= 2, got {self.volatility_window}")


@dataclass(frozen=True)
class SplitsConfig:
    """Chronological train/val/test fractions and the embargo between splits.

    ``embargo_bars`` of 0 means the minimum that prevents leakage:
    ``horizon + sequence_length``. A positive value below that minimum is refused.
    """

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    embargo_bars: int = 0

    def __post_init__(self) -> None:
        fractions = (self.train, self.val, self.test)
        if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
            raise ConfigError(
                f"splits: train/val/test fractions must be positive and sum to 1, got {fractions}; "
                "fix params.yaml 'splits'"
            )


@dataclass(frozen=True)
class PreprocessingConfig:
    """Scaling of the feature matrix, fitted on the training split only."""

    scaling: Literal["robust", "standard", "minmax"] = "robust"
    clip: float = 5.0
    # Modules trusted to provide custom steps of saved pipelines (besides the standard
    # trade_agent.preprocessing.steps); a pipeline naming any other module is refused.
    step_modules: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in self.step_modules:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ConfigError(
                    f"preprocessing.step_modules: '{name}' is not a module name; "
                    "write it as imported, e.g. my_pkg.steps"
                )
