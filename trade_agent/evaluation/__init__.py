"""Metrics shared by every stage (classification, regression, and later trading metrics)."""

from trade_agent.evaluation.metrics import prediction_metrics

__all__ = ["prediction_metrics"]
