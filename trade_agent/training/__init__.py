"""Public training API (the seed design's import path).

``ModelRegistry`` joins these when the registry issue lands.
"""

from trade_agent.preprocessing import FittedStep, PreprocessingPipeline, PreprocessorManager
from trade_agent.training.unified_manager import TrainingConfig, TrainingResult, UnifiedTrainingManager

__all__ = [
    "FittedStep",
    "PreprocessingPipeline",
    "PreprocessorManager",
    "TrainingConfig",
    "TrainingResult",
    "UnifiedTrainingManager",
]
