"""The walk-forward aggregate: every fold's test window stitched into one out-of-sample history.

Per model and baseline: the stitched equity curve, its Sharpe with a block-bootstrap
interval, the probabilistic Sharpe ratio (PSR), and the paired Sharpe difference against
buy-and-hold with a paired block-bootstrap interval. Across the configurations that were
tried: the deflated Sharpe ratio (DSR) of each, with the number of trials N stated and
broken down, and the probability of backtest overfitting (PBO) by CSCV over the matrix of
configurations x out-of-sample bars (see :mod:`trade_agent.walkforward.statistics`).

Here N is what the walk-forward itself tried: one configuration per model type at
``base.seed``. What else was tried on these data lives in the model registry, which is not
a stage input (it changes whenever anything registers); ``trade-agent release --stage prod``
and ``train info`` recompute the DSR with N raised by the trials the registry holds for the
same symbols (:func:`trade_agent.walkforward.gates.registered_trials`), from the moments
recorded here (per-period Sharpe, skewness, kurtosis, bars, and the trials' Sharpe variance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.config import Params
from trade_agent.data.frequency import BarFrequency, infer_frequency
from trade_agent.errors import DataSourceError
from trade_agent.evaluation.suite import sharpe_bounds
from trade_agent.io import atomic_path, read_json, write_json
from trade_agent.market.trading import trading_metrics
from trade_agent.paths import FOLD_RETURNS, FOLD_SUMMARY
from trade_agent.walkforward.statistics import (
    deflated_sharpe_ratio,
    paired_sharpe_difference,
    pbo_cscv,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
    skew_kurtosis,
)

log = logging.getLogger(__name__)
BASELINES = ("buy_and_hold", "equal_weight", "best_member")
BENCHMARK = "buy_and_hold"


@dataclass
class FoldResult:
    window: dict[str, Any]
    returns: pd.DataFrame  # timestamp index, one column per model/baseline
    models: dict[str, dict[str, Any]]
    symbols: list[str]


def load_fold(directory: Path) -> FoldResult:
    """One fold's outputs (untrusted: shapes and types are checked).

    Raises:
        DataSourceError: a file is missing or malformed (naming it and the fix).
    """
    for name in (FOLD_RETURNS, FOLD_SUMMARY):
        if not (directory / name).is_file():
            raise DataSourceError(f"{directory / name} not found; run `dvc repro walkforward_fold`")
    summary = read_json(directory / FOLD_SUMMARY)
    if not isinstance(summary, dict) or not isinstance(summary.get("window"), dict):
        raise DataSourceError(f"{directory / FOLD_SUMMARY}: no 'window' mapping; re-run the fold")
    frame = pd.read_parquet(directory / FOLD_RETURNS)
    if "timestamp" not in frame.columns or frame.empty:
        raise DataSourceError(f"{directory / FOLD_RETURNS}: no 'timestamp' column or no rows; re-run the fold")
    frame = frame.set_index("timestamp").astype(np.float64)
    symbols = summary.get("symbols", [])
    return FoldResult(summary["window"], frame, summary.get("models", {}), symbols if isinstance(symbols, list) else [])


def stitch(folds: list[FoldResult]) -> pd.DataFrame:
    """The folds' test returns end to end, for the models every fold has.

    Raises:
        DataSourceError: two folds' test windows overlap.
    """
    common = [c for c in folds[0].returns.columns if all(c in f.returns.columns for f in folds)]
    stitched = pd.concat([f.returns[common] for f in folds])
    if not stitched.index.is_monotonic_increasing or stitched.index.has_duplicates:
        raise DataSourceError("walk-forward folds overlap in time; check walkforward.folds and the periods")
    return stitched


def walkforward_statistics(stitched: pd.DataFrame, params: Params, frequency: BarFrequency) -> dict[str, Any]:
    """Every model's and baseline's out-of-sample figures, DSR with its N, and the PBO."""
    ppy, evaluate, seed = frequency.periods_per_year, params.evaluate, params.base.seed
    trials = [c for c in stitched.columns if c not in BASELINES]
    trial_sharpes = np.array([sharpe_ratio(stitched[c].to_numpy()) for c in trials])
    n_trials = len(trials)
    benchmark = stitched[BENCHMARK].to_numpy()
    models: dict[str, dict[str, float]] = {}
    variance = 0.0  # the trials' Sharpe variance the DSR used (recorded so a gate can recompute it)
    for name in stitched.columns:
        r = stitched[name].to_numpy()
        m = trading_metrics(r, periods_per_year=ppy)
        row = {k: m[k] for k in ("sharpe", "total_return", "cagr", "volatility", "max_drawdown", "sortino")}
        row |= sharpe_bounds(r, evaluate, seed, ppy)
        row["psr"] = probabilistic_sharpe_ratio(r)
        if name != BENCHMARK:
            diff, low, high = paired_sharpe_difference(
                r, benchmark, ppy, evaluate.bootstrap_samples, evaluate.block_length, seed
            )
            row |= {"sharpe_minus_buy_and_hold": diff, "difference_ci_low": low, "difference_ci_high": high}
        if name in trials:
            deflated = deflated_sharpe_ratio(r, trial_sharpes, n_trials=n_trials)
            skew, kurtosis = skew_kurtosis(r)
            row |= {"dsr": deflated.dsr, "sharpe_per_bar": deflated.sharpe, "skew": skew, "kurtosis": kurtosis}
            variance = deflated.trial_sharpe_variance
        models[name] = row
    pbo = pbo_cscv(stitched[trials].to_numpy(), n_blocks=params.walkforward.pbo_blocks) if len(trials) >= 2 else None
    return {
        "models": models,
        "n_trials": n_trials,
        "trial_sharpe_variance": variance,
        "pbo": pbo.pbo if pbo is not None else None,
        "pbo_blocks": params.walkforward.pbo_blocks,
        "pbo_combinations": pbo.n_combinations if pbo is not None else 0,
    }


def run_walkforward_stage(
    params: Params, fold_dirs: list[Path], metrics_path: Path, report_dir: Path
) -> dict[str, Any]:
    """The ``walkforward`` stage: ``metrics/walkforward.json`` and ``reports/walkforward.{md,png}``."""
    folds = [load_fold(d) for d in fold_dirs]
    stitched = stitch(folds)
    frequency = infer_frequency(stitched.index.to_numpy(), 1.0, params.data.periods_per_year)
    symbols = sorted(str(s) for s in folds[-1].symbols)
    stats = walkforward_statistics(stitched, params, frequency)
    span_days = (stitched.index[-1] - stitched.index[0]).total_seconds() / 86_400
    per_fold = []
    for fold in folds:
        sharpes = {
            name: float(
                trading_metrics(fold.returns[name].to_numpy(), periods_per_year=frequency.periods_per_year)["sharpe"]
            )
            for name in stitched.columns
        }
        per_fold.append({**fold.window, "bars": len(fold.returns), "sharpe": sharpes})
    result = {
        "folds": len(folds),
        "oos_start": str(stitched.index[0].date()),
        "oos_end": str(stitched.index[-1].date()),
        "oos_bars": len(stitched),
        "oos_years": span_days / 365.25,
        "periods_per_year": frequency.periods_per_year,
        "symbols": symbols,
        **stats,
        "per_fold": per_fold,
    }
    write_json(metrics_path, result)
    report_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(report_dir / "walkforward.md") as tmp:
        tmp.write_text(markdown_report(result, params, frequency))
    with atomic_path(report_dir / "walkforward.png") as tmp:
        render_png(stitched, result, tmp)
    log.info(
        "walk-forward: %d folds, %.1f OOS years, PBO %s, N %d",
        len(folds),
        result["oos_years"],
        f"{stats['pbo']:.2f}" if stats["pbo"] is not None else "-",
        stats["n_trials"],
    )
    return result


def markdown_report(result: dict[str, Any], params: Params, frequency: BarFrequency) -> str:
    common = params.rl.common
    lines = [
        f"# Walk-forward: {result['folds']} folds, {result['oos_years']:.1f} out-of-sample years "
        f"({result['oos_start']} .. {result['oos_end']}, {result['oos_bars']} bars)",
        "",
        f"Each fold trains the hierarchy ({', '.join(params.walkforward.stages)}) on its past "
        f"({params.walkforward.train}, from {params.walkforward.train_period}), selects on the "
        f"{params.walkforward.val_period} before its test window and trades {params.walkforward.test_period}; "
        f"after {common.cost_bps:g} bps costs + {common.slippage_bps:g} bps slippage, fills at the next open. "
        f"Metrics are {frequency.note()}.",
        "",
        "| model | OOS Sharpe [95% CI] | PSR | DSR | Sharpe - buy&hold [95% paired CI] | return | max DD |",
        "|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(result["models"].items(), key=lambda kv: -kv[1]["sharpe"])
    for name, m in ordered:
        diff = (
            f"{m['sharpe_minus_buy_and_hold']:+.2f} [{m['difference_ci_low']:+.2f}, {m['difference_ci_high']:+.2f}]"
            if "sharpe_minus_buy_and_hold" in m
            else "-"
        )
        dsr = f"{m['dsr']:.2f}" if "dsr" in m else "-"
        kind = " (baseline)" if name in BASELINES else ""
        lines.append(
            f"| {name}{kind} | {m['sharpe']:.2f} [{m['sharpe_ci_low']:.2f}, {m['sharpe_ci_high']:.2f}] | "
            f"{m['psr']:.2f} | {dsr} | {diff} | {100 * m['total_return']:.1f}% | {100 * m['max_drawdown']:.1f}% |"
        )
    pbo = f"{result['pbo']:.2f}" if result["pbo"] is not None else "- (fewer than 2 configurations)"
    lines += [
        "",
        f"**Multiple testing.** DSR here: N = {result['n_trials']} trials (the walk-forward's configurations at "
        f"seed {params.base.seed}); it is the probability that the true Sharpe exceeds the best of N unskilled "
        "trials (Bailey & López de Prado 2014). `trade-agent release --stage prod` and `train info` recompute it "
        "with N raised by the trials registered on these symbols (configurations, seeds, `--optimize` trials). "
        f"PBO = {pbo} (CSCV, S = {result['pbo_blocks']} blocks, "
        f"{result['pbo_combinations']} combinations): the share of splits in which the configuration best "
        "in-sample ranks in the bottom half out of sample.",
        "",
        "Intervals: stationary block bootstrap "
        f"({params.evaluate.bootstrap_samples} samples, mean block {params.evaluate.block_length} bars, "
        f"seed {params.base.seed}); the difference resamples both series with the same blocks.",
        "",
        "## Per fold (test-window Sharpe)",
        "",
    ]
    names = [name for name, _ in ordered]
    lines.append("| fold | test window | bars | " + " | ".join(names) + " |")
    lines.append("|" + "---|" * (3 + len(names)))
    for fold in result["per_fold"]:
        cells = " | ".join(f"{fold['sharpe'][n]:.2f}" for n in names)
        lines.append(f"| {fold['fold']} | {fold['test_start']} .. {fold['test_end']} | {fold['bars']} | {cells} |")
    return "\n".join(lines) + "\n"


def render_png(stitched: pd.DataFrame, result: dict[str, Any], path: Path) -> None:
    """Stitched equity (dates on the x-axis; baselines dashed, models in distinct styles) and drawdowns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (equity, drawdown) = plt.subplots(2, 1, figsize=(13, 9), dpi=100, height_ratios=[3, 1.4], sharex=True)
    styles = ["-", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1))]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    every = max(len(stitched) // 12, 1)
    for i, name in enumerate(stitched.columns):
        curve = np.cumprod(1.0 + stitched[name].to_numpy())
        baseline = name in BASELINES
        style: dict[str, Any] = {
            "color": colors[i % len(colors)],
            "linestyle": "--" if baseline else styles[i % len(styles)],
            "linewidth": 1.2 if baseline else 1.6,
            "marker": None if baseline else markers[i % len(markers)],
            "markevery": (i * every // max(len(stitched.columns), 1), every),  # staggered: overlaps stay visible
            "markersize": 4,
        }
        equity.plot(stitched.index, curve, label=f"{name} ({result['models'][name]['sharpe']:.2f})", **style)
        peaks = np.maximum.accumulate(np.r_[1.0, curve])[1:]
        drawdown.plot(stitched.index, -100 * (1.0 - curve / peaks), **style)
    for fold in result["per_fold"][1:]:
        for axis in (equity, drawdown):
            axis.axvline(pd.Timestamp(fold["test_start"]), color="grey", linewidth=0.6, alpha=0.5)
    equity.set_title(
        f"Walk-forward out-of-sample equity, {result['folds']} folds (grey: fold starts; dashed: baselines; "
        f"legend: OOS Sharpe); PBO {result['pbo']:.2f}"
        if result["pbo"] is not None
        else "Walk-forward equity"
    )
    equity.set_ylabel("growth of 1")
    equity.legend(loc="upper left", ncol=3, fontsize=8)
    equity.grid(alpha=0.3)
    drawdown.set_ylabel("drawdown %")
    drawdown.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
