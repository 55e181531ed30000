"""Public training API (the seed design's import path)."""

from trade_agent.preprocessing import FittedStep, PreprocessingPipeline, PreprocessorManager
from trade_agent.registry import ModelMetadata, ModelRegistry, PerformanceGrade
from trade_agent.training.unified_manager import TrainingConfig, TrainingResult, UnifiedTrainingManager

__all__ = [
    "FittedStep",
    "ModelMetadata",
    "ModelRegistry",
    "PerformanceGrade",
    "PreprocessingPipeline",
    "PreprocessorManager",
    "TrainingConfig",
    "TrainingResult",
    "UnifiedTrainingManager",
]
