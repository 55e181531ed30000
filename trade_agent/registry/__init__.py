"""Model registry: content-addressed versions, semver, grades, lineage, integrity, releases."""

from trade_agent.registry.grading import PerformanceGrade, composite_score, grade_for
from trade_agent.registry.naming import ModelNotFoundError
from trade_agent.registry.registry import IntegrityReport, ModelMetadata, ModelRegistry, default_registry

__all__ = [
    "IntegrityReport",
    "ModelMetadata",
    "ModelNotFoundError",
    "ModelRegistry",
    "PerformanceGrade",
    "composite_score",
    "default_registry",
    "grade_for",
]
