"""Public training API (the seed design's import path).

Stage 1 and later issues add ``UnifiedTrainingManager``, ``TrainingConfig``,
``TrainingResult`` and ``ModelRegistry`` here.
"""

from trade_agent.preprocessing import FittedStep, PreprocessingPipeline, PreprocessorManager

__all__ = ["FittedStep", "PreprocessingPipeline", "PreprocessorManager"]
