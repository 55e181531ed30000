"""Typed, frozen views of ``params.yaml`` (one module per group of stages)."""

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
from trade_agent.config.loader import from_mapping, to_dict, to_plain
from trade_agent.config.models import CnnLstmConfig
from trade_agent.config.params import (
    DEFAULT_PARAMS_FILE,
    Params,
    load_params,
    load_params_or_defaults,
    params_from_dict,
)
from trade_agent.config.rl import PPOConfig, RLCommonConfig, RLConfig, SACConfig, TD3Config

__all__ = [
    "DEFAULT_PARAMS_FILE",
    "BaseConfig",
    "CnnLstmConfig",
    "DataConfig",
    "DistributedConfig",
    "EnsembleConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "HybridConfig",
    "LabelsConfig",
    "PPOConfig",
    "Params",
    "PreprocessingConfig",
    "RLCommonConfig",
    "RLConfig",
    "SACConfig",
    "SentimentConfig",
    "SplitsConfig",
    "TD3Config",
    "from_mapping",
    "load_params",
    "load_params_or_defaults",
    "params_from_dict",
    "to_dict",
    "to_plain",
]
