"""The seed design's module path for the preprocessor manager."""

from trade_agent.preprocessing.manager import IntegrityReport, PreprocessorManager
from trade_agent.preprocessing.pipeline import FittedStep, PreprocessingPipeline

__all__ = ["FittedStep", "IntegrityReport", "PreprocessingPipeline", "PreprocessorManager"]
