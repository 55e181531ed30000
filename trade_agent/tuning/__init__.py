"""Hyperparameter search with Optuna (``--optimize``): studies, objectives, workers."""

from trade_agent.tuning.search import SearchSpec, search, study_name

__all__ = ["SearchSpec", "search", "study_name"]
