"""All of params.yaml: one typed section per stage, plus cross-section checks.

Adding a stage's section: a frozen dataclass in the matching module and a field here.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trade_agent.config.data import BaseConfig, DataConfig
from trade_agent.config.distributed import DistributedConfig
from trade_agent.config.ensemble import EnsembleConfig
from trade_agent.config.evaluation import EvaluateConfig
from trade_agent.config.features import (
    FeaturesConfig,
    LabelsConfig,
    PreprocessingConfig,
    SentimentConfig,
    SplitsConfig,
)
from trade_agent.config.hybrid import HybridConfig
from trade_agent.config.loader import _coerce
from trade_agent.config.models import CnnLstmConfig
from trade_agent.config.optimize import OptimizeConfig
from trade_agent.config.registry import TypeGrading, default_grading
from trade_agent.config.rl import RLConfig
from trade_agent.config.walkforward import ReleaseConfig, WalkForwardConfig
from trade_agent.errors import ConfigError

DEFAULT_PARAMS_FILE = Path("params.yaml")


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
    cnn_lstm: CnnLstmConfig = field(default_factory=CnnLstmConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    walkforward: WalkForwardConfig = field(default_factory=WalkForwardConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    grading: dict[str, TypeGrading] = field(default_factory=default_grading)

    def validate(self) -> Params:
        """Cross-section checks; returns ``self`` so it can be chained."""
        minimum = self.labels.horizon + self.features.sequence_length
        if 0 < self.splits.embargo_bars < minimum:
            raise ConfigError(
                f"splits.embargo_bars: {self.splits.embargo_bars} is below horizon + "
                f"sequence_length = {minimum}; use 0 (automatic) or >= {minimum}"
            )
        return self

    @property
    def embargo_bars(self) -> int:
        """Effective embargo between splits, in bars."""
        return self.splits.embargo_bars or (self.labels.horizon + self.features.sequence_length)


def params_from_dict(raw: Mapping[str, Any] | None) -> Params:
    """Parse and validate a params mapping (as read from params.yaml)."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError("params.yaml: expected a mapping of sections at the top level")
    hints = typing.get_type_hints(Params)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(f"params.yaml: unknown section '{unknown[0]}'; valid sections are: {', '.join(hints)}")
    sections = {name: _coerce(raw[name] if raw[name] is not None else {}, hints[name], name) for name in raw}
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


def load_params_or_defaults(path: str | Path | None) -> Params:
    """``path`` if given (must exist); else ./params.yaml when present; else the defaults."""
    if path is not None:
        return load_params(path)
    return load_params(DEFAULT_PARAMS_FILE) if DEFAULT_PARAMS_FILE.is_file() else Params()
