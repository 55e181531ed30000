"""Performance grades: a composite score in [0, 1] from a type's benchmark table.

Each metric scores 1 at its ``excellent`` value and 0 at ``poor``, linearly in between
(clipped); a gated metric's score is multiplied by its gate's clipped score (0 when the
gate is not reported); the composite is the weighted mean over the metrics the model
reports. Bands:
S >= 0.95, A+ >= 0.90, A >= 0.80, A- >= 0.70, B+ >= 0.60, B >= 0.50, B- >= 0.40,
C >= 0.30, D >= 0.20, F below. See docs/grading.md.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from trade_agent.config.registry import TypeGrading
from trade_agent.errors import ConfigError


class PerformanceGrade(StrEnum):
    """Grades from best to worst."""

    S = "S"
    A_PLUS = "A+"
    A = "A"
    A_MINUS = "A-"
    B_PLUS = "B+"
    B = "B"
    B_MINUS = "B-"
    C = "C"
    D = "D"
    F = "F"

    @property
    def rank(self) -> int:
        """0 for S ... 9 for F."""
        return list(PerformanceGrade).index(self)

    @classmethod
    def parse(cls, text: str) -> PerformanceGrade:
        """``"A-"`` -> ``PerformanceGrade.A_MINUS``.

        Raises:
            ConfigError: not a grade.
        """
        for grade in cls:
            if grade.value == text.strip().upper():
                return grade
        raise ConfigError(f"grade '{text}' is unknown; use one of {', '.join(g.value for g in cls)}")


BANDS: tuple[tuple[float, PerformanceGrade], ...] = (
    (0.95, PerformanceGrade.S),
    (0.90, PerformanceGrade.A_PLUS),
    (0.80, PerformanceGrade.A),
    (0.70, PerformanceGrade.A_MINUS),
    (0.60, PerformanceGrade.B_PLUS),
    (0.50, PerformanceGrade.B),
    (0.40, PerformanceGrade.B_MINUS),
    (0.30, PerformanceGrade.C),
    (0.20, PerformanceGrade.D),
)


def metric_value(metrics: dict[str, float], name: str, split: str) -> float | None:
    """``<split>/<name>`` if reported, else the unprefixed ``name``, else None."""
    for key in (f"{split}/{name}", name):
        value = metrics.get(key)
        if value is not None and np.isfinite(value):
            return float(value)
    return None


def metric_scores(metrics: dict[str, float], table: TypeGrading) -> dict[str, float]:
    """Clipped score in [0, 1] of every table metric the model reports (gates not applied)."""
    scores: dict[str, float] = {}
    for name, rule in table.metrics.items():
        value = metric_value(metrics, name, table.split)
        if value is not None:
            score = (value - rule.poor) / (rule.excellent - rule.poor)
            scores[name] = min(max(score, 0.0), 1.0)
    return scores


def composite_score(metrics: dict[str, float], table: TypeGrading) -> float | None:
    """Weighted mean of per-metric scores; None when no graded metric is reported.

    A gated metric's score is multiplied by its gate's clipped score. When the gate is not
    reported the gated metric still counts, with score 0: the gate exists so that this
    metric earns no credit without evidence from the gate (a drawdown without a Sharpe
    ratio says nothing about earning money), and dropping it instead would leave a model
    reporting only the gated metric graded by it alone.
    """
    scores = metric_scores(metrics, table)
    total, weights = 0.0, 0.0
    for name, rule in table.metrics.items():
        if name not in scores or rule.weight == 0:
            continue
        gate = scores.get(rule.gate, 0.0) if rule.gate else 1.0
        total += rule.weight * scores[name] * gate
        weights += rule.weight
    return total / weights if weights else None


def grade_for(score: float | None) -> PerformanceGrade:
    """The band ``score`` falls in (F when there is nothing to grade)."""
    if score is None:
        return PerformanceGrade.F
    for threshold, grade in BANDS:
        if score >= threshold - 1e-12:
            return grade
    return PerformanceGrade.F


def format_value(value: float) -> str:
    """Compact metric value for ids: 0.95, 2.1, 15.3, -0.04."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
