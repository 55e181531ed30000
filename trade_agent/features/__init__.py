"""Causal features, forward-looking labels and chronological splits."""

from trade_agent.features.indicators import compute_features, feature_names, warmup_bars
from trade_agent.features.labels import TARGET_COLUMNS, make_labels

__all__ = ["TARGET_COLUMNS", "compute_features", "feature_names", "make_labels", "warmup_bars"]
