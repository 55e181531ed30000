"""Section ``grading``: how the model registry turns metrics into grades.

Model types are data: each entry names its key metric and a table of metrics with a
weight and the values that count as excellent (score 1) and poor (score 0); scores are
linear in between. A metric may be *gated* by another metric of its table: its score is
multiplied by the gate's clipped score. A new model type needs a new entry here, no
registry code.

Trading models (ppo, sac, td3, hybrid, ensemble) share one table of risk-adjusted return
after costs on the test split: the Sharpe ratio, the lower bound of its 95% stationary
block-bootstrap interval, and the maximum drawdown, gated by the Sharpe ratio so that a
model that never trades (Sharpe 0, no drawdown) scores 0 and cannot outrank one that earns
money after costs. See docs/grading.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class MetricRule:
    """One benchmark metric: ``weight`` in the composite, and its excellent/poor values.

    ``excellent < poor`` means lower is better (losses, drawdowns). ``gate`` names another
    metric of the same table whose clipped score (in [0, 1]) multiplies this metric's
    score: a drawdown gated by the Sharpe ratio earns no credit without a positive Sharpe.
    An unreported gate counts as 0. Empty: no gate.
    """

    weight: float = 1.0
    excellent: float = 1.0
    poor: float = 0.0
    gate: str = ""

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

    def __post_init__(self) -> None:
        for name, rule in self.metrics.items():
            valid = [m for m in self.metrics if m != name]
            if rule.gate and rule.gate not in valid:
                raise ConfigError(
                    f"grading metric '{name}': gate '{rule.gate}' is not another metric of its table; "
                    f"valid gates: {', '.join(valid) or '(none)'}; fix params.yaml 'grading'"
                )


def _trading(key_metric: str = "sharpe", key_label: str = "sharpe") -> TypeGrading:
    """Risk-adjusted return after costs (test split): Sharpe, its bootstrap lower bound, gated drawdown."""
    return TypeGrading(
        key_metric=key_metric,
        key_label=key_label,
        metrics={
            "sharpe": MetricRule(0.5, 2.0, 0.0),
            "sharpe_ci_low": MetricRule(0.3, 1.0, 0.0),
            "max_drawdown": MetricRule(0.2, 0.05, 0.30, gate="sharpe"),
        },
    )


def default_grading() -> dict[str, TypeGrading]:
    """Default benchmarks: the seed's CNN-LSTM table; one trading table for agents, hybrids, ensembles."""
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
        "ppo": _trading(),
        "sac": _trading(),
        "td3": _trading(),
        "hybrid": _trading(),
        "ensemble": _trading("roi_pct", "roi"),
    }
