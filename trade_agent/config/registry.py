"""Section ``grading``: how the model registry turns metrics into grades.

Model types are data: each entry names its key metric and a table of metrics with a
weight and the values that count as excellent (score 1) and poor (score 0); scores are
linear in between. A new model type needs a new entry here, no registry code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class MetricRule:
    """One benchmark metric: ``weight`` in the composite, and its excellent/poor values.

    ``excellent < poor`` means lower is better (losses, drawdowns).
    """

    weight: float = 1.0
    excellent: float = 1.0
    poor: float = 0.0

    def __post_init__(self) -> None:
        if self.weight < 0 or self.excellent == self.poor:
            raise ConfigError(
                f"grading metric rule {self}: weight must be >= 0 and excellent != poor; fix params.yaml 'grading'"
            )


@dataclass(frozen=True)
class TypeGrading:
    """Grading table of one model type.

    Attributes:
        key_metric: metric shown in model ids and used to break ties for ``@best``.
        key_label: its short name in ids (``acc``, ``sharpe``, ``roi``).
        split: which split's metrics are graded (``test`` by default: never the one the
            model was selected on).
        metrics: metric name (without split prefix) -> rule.
    """

    key_metric: str = "accuracy"
    key_label: str = "acc"
    split: Literal["train", "val", "test"] = "test"
    metrics: dict[str, MetricRule] = field(default_factory=dict)


def _rl() -> TypeGrading:
    return TypeGrading(
        key_metric="sharpe",
        key_label="sharpe",
        metrics={
            "total_reward": MetricRule(0.3, 1000.0, 100.0),
            "sharpe": MetricRule(0.4, 2.0, 0.5),
            "max_drawdown": MetricRule(0.3, 0.05, 0.30),
        },
    )


def default_grading() -> dict[str, TypeGrading]:
    """The seed design's benchmarks (CNN-LSTM, RL agents - also SAC, TD3, hybrid - ensembles)."""
    return {
        "cnn_lstm": TypeGrading(
            key_metric="accuracy",
            key_label="acc",
            metrics={
                "accuracy": MetricRule(0.5, 0.95, 0.50),
                "loss": MetricRule(0.25, 0.01, 0.5),
                "r2": MetricRule(0.25, 0.90, 0.30),
            },
        ),
        "ppo": _rl(),
        "sac": _rl(),
        "td3": _rl(),
        "hybrid": _rl(),
        "ensemble": TypeGrading(
            key_metric="roi_pct",
            key_label="roi",
            metrics={
                "ensemble_accuracy": MetricRule(0.5, 0.98, 0.70),
                "diversity": MetricRule(0.5, 0.8, 0.2),
            },
        ),
    }
