"""The ``evaluate`` stage: every model and the baselines on one split, after costs.

For each pipeline model (CNN-LSTM, agents, hybrids, ensemble) and each baseline
(buy-and-hold, equal weight rebalanced, the best single member by validation Sharpe) it
writes the metrics suite with a 95 % block-bootstrap interval of the Sharpe ratio and the
Sharpe/return at several cost levels, equity and drawdown curves for ``dvc plots``, and a
PNG report a person can read. Everything annualised uses the data's bar frequency (recorded
by the features stage); each model's metrics carry it as ``periods_per_year`` and both
reports state it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.agents.policy_io import policy_model_type
from trade_agent.config import Params
from trade_agent.data.frequency import BarFrequency
from trade_agent.ensemble.combine import EnsembleSpec, MemberRuns, directional_accuracy, diversity, ensemble_targets
from trade_agent.evaluation.positions import cnn_lstm_weights, policy_weights
from trade_agent.evaluation.suite import metrics_suite, run_backtest
from trade_agent.io import atomic_path, write_json
from trade_agent.market.backtest import BacktestResult, buy_and_hold_weights, equal_weight_weights
from trade_agent.market.panel import SplitData
from trade_agent.paths import (
    EMBEDDINGS,
    ENSEMBLE,
    FEATURES_DIR,
    MARKET,
    METRICS_DIR,
    PIPELINE_MODELS,
    PLOTS_DIR,
    REPORTS_DIR,
    STAGE_1,
    pipeline_models,
)
from trade_agent.threads import apply_thread_plan, current_threads
from trade_agent.type_aliases import FloatArray

log = logging.getLogger(__name__)

BASELINES = ("buy_and_hold", "equal_weight", "best_member")


@dataclass
class ModelReport:
    name: str
    kind: str  # model type, or "baseline"
    result: BacktestResult
    metrics: dict[str, float]


@dataclass
class EvaluationInputs:
    """Where the pipeline's models and data are (defaults: the DVC stage paths)."""

    features_dir: Path = FEATURES_DIR
    embeddings: Path = EMBEDDINGS
    market: Path = MARKET
    models_root: Path = PIPELINE_MODELS


def evaluate_models(params: Params, inputs: EvaluationInputs) -> tuple[list[ModelReport], BarFrequency]:
    """Backtest every pipeline model and baseline on ``params.evaluate.split``; also the data's
    bar frequency, which every annualised metric uses."""
    common, split = params.rl.common, params.evaluate.split
    data = SplitData.load(inputs.features_dir, inputs.embeddings, inputs.market, split)
    periods_per_year = data.frequency.periods_per_year
    open_, close, _, _ = data.prices()
    k, n = len(open_) - 1, open_.shape[1]
    weights: dict[str, tuple[str, FloatArray]] = {}
    models = pipeline_models(params.rl.algos, params.hybrid.algos, inputs.models_root)
    for name, directory in models.items():
        if name == STAGE_1:
            weights[name] = (STAGE_1, cnn_lstm_weights(data, params.evaluate.cnn_lstm_threshold, common.max_leverage))
        elif name != ENSEMBLE:
            weights[name] = (policy_model_type(directory), policy_weights(directory, data, common))
    extra: dict[str, dict[str, float]] = {}
    if ENSEMBLE in models:
        # The combination as trained (ensemble.json), not as params.yaml says today.
        spec = EnsembleSpec.load(models[ENSEMBLE])
        runs = MemberRuns.backtested([weights[m][1] for m in spec.names], open_, close, common, periods_per_year)
        combined = ensemble_targets(runs, spec.val_sharpes, spec.config, common)
        weights[ENSEMBLE] = (ENSEMBLE, combined)
        extra[ENSEMBLE] = {
            "ensemble_accuracy": directional_accuracy(combined, open_, close, 0),
            "diversity": diversity(runs.weights),
        }
        best = spec.names[int(np.argmax(spec.val_sharpes))]
        weights["best_member"] = (f"baseline: {best}", weights[best][1])
    weights["buy_and_hold"] = ("baseline", buy_and_hold_weights(open_, 0, k))
    weights["equal_weight"] = ("baseline", equal_weight_weights(n, k))
    reports = []
    for name, (kind, w) in weights.items():
        result = run_backtest(w, open_, close, common, periods_per_year)
        suite = metrics_suite(result, open_, close, common, params.evaluate, params.base.seed, periods_per_year)
        reports.append(ModelReport(name, kind, result, suite | extra.get(name, {})))
    return reports, data.frequency


def write_outputs(
    reports: list[ModelReport],
    params: Params,
    frequency: BarFrequency,
    metrics_path: Path,
    plots_dir: Path,
    report_dir: Path,
) -> None:
    """``metrics/evaluate.json``, per-model equity/drawdown TSVs, ``reports/evaluation.{png,md}``."""
    threads = float(current_threads())  # how it ran (the thread plan), not a result
    write_json(metrics_path, {r.name: r.metrics | {"threads": threads} for r in reports})
    for kind in ("equity", "drawdown"):
        directory = plots_dir / kind
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.tsv"):
            old.unlink()
        for r in reports:
            series = r.result.equity if kind == "equity" else r.result.drawdown
            frame = pd.DataFrame({"step": np.arange(1, len(series) + 1), kind: series})
            with atomic_path(directory / f"{r.name}.tsv") as tmp:
                frame.to_csv(tmp, sep="\t", index=False, float_format="%.6f")
    report_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(report_dir / "evaluation.md") as tmp:
        tmp.write_text(markdown_table(reports, params, frequency))
    with atomic_path(report_dir / "evaluation.png") as tmp:
        render_png(reports, params, frequency, tmp)


def _row(r: ModelReport, costs: list[float]) -> list[str]:
    m = r.metrics
    return [
        r.name,
        r.kind,
        f"{m['sharpe']:.2f} [{m['sharpe_ci_low']:.2f}, {m['sharpe_ci_high']:.2f}]",
        f"{100 * m['total_return']:.1f}%",
        f"{100 * m['max_drawdown']:.1f}%",
        f"{m.get('turnover', 0.0):.3f}",
        *(f"{m[f'sharpe_at_{c:g}bps']:.2f}" for c in costs),
    ]


def _header(costs: list[float]) -> list[str]:
    return ["model", "kind", "Sharpe [95% CI]", "return", "max DD", "turnover", *(f"Sharpe @{c:g}bps" for c in costs)]


def annualisation_line(frequency: BarFrequency) -> str:
    """The reports' annualisation sentence: "Sharpe, ... are annualised with 6,281 bars/year of 1h bars, inferred"."""
    return f"Sharpe, Sortino, volatility and CAGR are {frequency.note()}."


def markdown_table(reports: list[ModelReport], params: Params, frequency: BarFrequency) -> str:
    costs = list(params.evaluate.cost_sensitivity_bps)
    lines = [
        f"# Evaluation on the {params.evaluate.split} split (after {params.rl.common.cost_bps:g} bps costs "
        f"+ {params.rl.common.slippage_bps:g} bps slippage, fills at the next open)",
        "",
        "| " + " | ".join(_header(costs)) + " |",
        "|" + "---|" * len(_header(costs)),
    ]
    lines += ["| " + " | ".join(_row(r, costs)) + " |" for r in sorted(reports, key=lambda r: -r.metrics["sharpe"])]
    lines += [
        "",
        "Sharpe intervals: stationary block bootstrap "
        f"({params.evaluate.bootstrap_samples} samples, mean block {params.evaluate.block_length} bars, "
        f"seed {params.base.seed}).",
        "",
        annualisation_line(frequency),
    ]
    return "\n".join(lines) + "\n"


def render_png(reports: list[ModelReport], params: Params, frequency: BarFrequency, path: Path) -> None:
    """Equity curves vs baselines, drawdowns, and the metrics table, in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = list(params.evaluate.cost_sensitivity_bps)
    figure = plt.figure(figsize=(13, 11), dpi=100)
    grid = figure.add_gridspec(3, 1, height_ratios=[3, 1.6, 1.8])
    equity, drawdown, table = (figure.add_subplot(grid[i]) for i in range(3))
    for r in reports:
        baseline = r.kind.startswith("baseline")
        style: dict[str, Any] = {"linestyle": "--", "linewidth": 1.2} if baseline else {"linewidth": 1.6}
        equity.plot(r.result.equity, label=r.name, **style)
        drawdown.plot(-100 * r.result.drawdown, label=r.name, **style)
    equity.set_title(
        f"Equity on the {params.evaluate.split} split, after costs (dashed: baselines); metrics {frequency.note()}"
    )
    equity.set_ylabel("growth of 1")
    equity.legend(loc="upper left", ncol=4, fontsize=8)
    equity.grid(alpha=0.3)
    drawdown.set_title("Drawdown")
    drawdown.set_ylabel("%")
    drawdown.set_xlabel("bars")
    drawdown.grid(alpha=0.3)
    table.axis("off")
    ordered = sorted(reports, key=lambda r: -r.metrics["sharpe"])
    cells = table.table(
        cellText=[_row(r, costs) for r in ordered], colLabels=_header(costs), loc="center", cellLoc="center"
    )
    cells.auto_set_font_size(False)
    cells.set_fontsize(8)
    cells.scale(1, 1.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def run_evaluate_stage(params: Params, inputs: EvaluationInputs | None = None) -> list[ModelReport]:
    apply_thread_plan(params.base.threads, "policy")
    inputs = inputs or EvaluationInputs()
    reports, frequency = evaluate_models(params, inputs)
    write_outputs(reports, params, frequency, METRICS_DIR / "evaluate.json", PLOTS_DIR / "evaluate", REPORTS_DIR)
    for r in sorted(reports, key=lambda r: -r.metrics["sharpe"]):
        log.info(
            "evaluate %-13s sharpe %6.2f [%5.2f, %5.2f]  return %6.1f%%",
            r.name,
            r.metrics["sharpe"],
            r.metrics["sharpe_ci_low"],
            r.metrics["sharpe_ci_high"],
            100 * r.metrics["total_return"],
        )
    log.info("evaluate: %s", frequency.note())
    return reports
