"""Typed, frozen views of ``params.yaml``.

Each top-level section of params.yaml maps to one frozen dataclass. Loading is strict: an
unknown key or a value of the wrong type is a :class:`~trade_agent.errors.ConfigError`
naming the key (``cnn_lstm.epochs``), what was found and the valid keys/types, so a typo
never silently falls back to a default.

Later stages add their sections by adding a dataclass and an entry in ``SECTIONS``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from trade_agent.errors import ConfigError

T = TypeVar("T")

DEFAULT_PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class BaseConfig:
    """Settings shared by every stage."""

    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class DataConfig:
    """Where market data comes from and how it is cleaned (stage ``prepare``).

    Attributes:
        source: ``sample`` (real daily AAPL/GOOG/IBM/MSFT shipped in bokeh-sampledata),
            ``synthetic`` (seeded generator with a planted signal) or ``file``.
        path: CSV or Parquet file, used when ``source == "file"``. Keep it under
            ``data/raw/`` so DVC tracks it as a dependency of ``prepare``.
        symbols: keep only these symbols (empty: all).
        symbol: symbol name for single-instrument files without a symbol column
            (default: the file name without extension).
        date_format: strftime format for non-ISO timestamps, e.g. ``%d.%m.%Y %H:%M:%S.%f``.
        align: keep only timestamps present for every symbol (a common calendar, as the
            multi-asset trading environment needs).
        max_gap: longest run of consecutive missing values (per symbol and column) that is
            repaired by forward fill; longer gaps are an error.
        synthetic_*: shape and planted signal of the synthetic generator.
    """

    source: Literal["sample", "synthetic", "file"] = "sample"
    path: str = ""
    symbols: list[str] = field(default_factory=list)
    symbol: str = ""
    date_format: str = ""
    max_gap: int = 3
    align: bool = True
    synthetic_symbols: int = 2
    synthetic_bars: int = 1500
    synthetic_ar: float = 0.3
    synthetic_volatility: float = 0.01


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


@dataclass(frozen=True)
class LabelsConfig:
    """Targets: forward log return over ``horizon`` bars and a 3-class direction.

    A forward return inside ``[-dead_zone, dead_zone]`` is class 1 (flat); below is 0
    (down), above is 2 (up).
    """

    horizon: int = 5
    dead_zone: float = 0.005


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


@dataclass(frozen=True)
class PreprocessingConfig:
    """Scaling of the feature matrix, fitted on the training split only."""

    scaling: Literal["robust", "standard", "minmax"] = "robust"
    clip: float = 5.0


@dataclass(frozen=True)
class Params:
    """All params.yaml sections known to this version."""

    base: BaseConfig = field(default_factory=BaseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    sentiment: SentimentConfig = field(default_factory=SentimentConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)

    def validate(self) -> Params:
        """Cross-section checks; returns ``self`` so it can be chained."""
        fractions = (self.splits.train, self.splits.val, self.splits.test)
        if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
            raise ConfigError(
                f"splits: train/val/test fractions must be positive and sum to 1, got "
                f"{fractions}; fix params.yaml 'splits'"
            )
        minimum = self.labels.horizon + self.features.sequence_length
        if 0 < self.splits.embargo_bars < minimum:
            raise ConfigError(
                f"splits.embargo_bars: {self.splits.embargo_bars} is below horizon + "
                f"sequence_length = {minimum}; use 0 (automatic) or >= {minimum}"
            )
        if self.labels.horizon < 1:
            raise ConfigError(f"labels.horizon: must be >= 1, got {self.labels.horizon}")
        if self.labels.dead_zone < 0:
            raise ConfigError(f"labels.dead_zone: must be >= 0, got {self.labels.dead_zone}")
        if self.features.sequence_length < 1:
            raise ConfigError(f"features.sequence_length: must be >= 1, got {self.features.sequence_length}")
        if self.sentiment.lag_bars < 1:
            raise ConfigError(
                f"sentiment.lag_bars: must be >= 1 (no same-bar look-ahead), got {self.sentiment.lag_bars}"
            )
        if self.data.max_gap < 0:
            raise ConfigError(f"data.max_gap: must be >= 0, got {self.data.max_gap}")
        if self.data.source == "file" and not self.data.path:
            raise ConfigError("data.path: required when data.source is 'file'; set it to a CSV or Parquet file")
        return self

    @property
    def embargo_bars(self) -> int:
        """Effective embargo between splits, in bars."""
        return self.splits.embargo_bars or (self.labels.horizon + self.features.sequence_length)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list[{_type_name(get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked against type ``tp``; raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    ok = True
    if tp is Any:
        return value
    if origin is Literal:
        ok = value in get_args(tp)
    elif origin in (types.UnionType, typing.Union):
        for option in get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        ok = False
    elif origin is list:
        if isinstance(value, list | tuple):
            return [_coerce(v, get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
        ok = False
    elif tp is type(None):
        ok = value is None
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            ok = False
        else:
            return from_mapping(tp, value, key)  # type: ignore[arg-type]
    if not ok:
        raise ConfigError(
            f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}; fix it in params.yaml"
        )
    return value


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, section: str) -> T:
    """Build dataclass ``cls`` from ``mapping``, strictly.

    Raises:
        ConfigError: on an unknown key or a value of the wrong type.
    """
    mapping = mapping or {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{section}: expected a mapping of keys, got {type(mapping).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - fields)
    if unknown:
        valid = ", ".join(f"{name}: {_type_name(hints[name])}" for name in sorted(fields))
        raise ConfigError(f"{section}.{unknown[0]} is not a valid key; valid keys of '{section}' are: {valid}")
    values = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in mapping.items()}
    return cls(**values)


def params_from_dict(raw: Mapping[str, Any] | None) -> Params:
    """Parse and validate a params mapping (as read from params.yaml)."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError("params.yaml: expected a mapping of sections at the top level")
    hints = typing.get_type_hints(Params)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(f"params.yaml: unknown section '{unknown[0]}'; valid sections are: {', '.join(hints)}")
    sections = {name: from_mapping(hints[name], raw.get(name), name) for name in raw}
    return Params(**sections).validate()


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read ``params.yaml`` into typed sections.

    Raises:
        ConfigError: the file is missing, is not YAML, or a section is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax") from exc
    try:
        return params_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (for metadata and saved pipelines)."""
    return dataclasses.asdict(config)
