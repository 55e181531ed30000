"""The seed design's module path for the model registry."""

from trade_agent.registry import IntegrityReport, ModelMetadata, ModelRegistry, PerformanceGrade

__all__ = ["IntegrityReport", "ModelMetadata", "ModelRegistry", "PerformanceGrade"]
