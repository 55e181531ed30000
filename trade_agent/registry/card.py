"""Model cards: one Markdown page per registered model, written beside the registry index.

A card states what a reader needs to judge the model: the data, period and bar frequency it
was trained and tested on, its costs, its single-split test figures with intervals, the
walk-forward out-of-sample figures of its model type (folds, Sharpe with interval, PSR,
DSR with N, the paired difference against buy-and-hold, PBO), its lineage and seed, and the
limits that follow from those figures. ``<registry root>/cards/<model_id>.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from trade_agent.config.walkforward import ReleaseConfig
from trade_agent.errors import InputError
from trade_agent.io import atomic_path
from trade_agent.walkforward.gates import GateFigures, walkforward_name

CARDS_DIR = "cards"


def card_path(root: Path, model_id: str) -> Path:
    """``<root>/cards/<model_id>.md``; an id that could leave that folder is refused."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", model_id) or ".." in model_id:
        raise InputError(f"model id {model_id!r} is not a plain file name; cards are named after registry ids")
    return root / CARDS_DIR / f"{model_id}.md"


def _metric(metrics: dict[str, Any], key: str, percent: bool = False) -> str:
    value = metrics.get(key)
    if not isinstance(value, int | float):
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.2f}"


def render_card(
    details: dict[str, Any], walkforward: dict[str, Any] | None, figures: GateFigures | None, release: ReleaseConfig
) -> str:
    """The card's Markdown for ``details`` (``ModelRegistry.export_model_info``)."""
    metrics, config = details.get("metrics", {}), details.get("training_config", {}) or {}
    info = details.get("dataset_info", {}) or {}
    common = config.get("common", {}) if isinstance(config.get("common"), dict) else {}
    lines = [
        f"# Model card: {details['model_id']}",
        "",
        f"- **Type / version / grade:** {details['model_type']} v{details['version']}, grade "
        f"{details.get('performance_grade')} (composite score {details.get('composite_score')})",
        f"- **Registered:** {details.get('created_at')} from {details.get('source')} at commit "
        f"{str(details.get('git_commit'))[:10]}; checksum {str(details.get('checksum'))[:16]}…",
        f"- **Seed:** {config.get('seed', '-')}",
        f"- **Lineage:** {' <- '.join(details.get('dependencies') or []) or 'none (stage 1)'}",
        "",
        "## Data",
        "",
        f"- **Symbols:** {', '.join(info.get('symbols', [])) or 'those of ' + str(info.get('cnn_lstm', '-'))}",
        f"- **Splits:** {info.get('splits', 'see the upstream CNN-LSTM')}",
        f"- **Preprocessor:** {info.get('preprocessor_id', '-')} (saved with the model, fitted on the training split)",
        f"- **Bar frequency:** annualised with {_metric(metrics, 'periods_per_year')} bars/year",
        f"- **Costs:** {common.get('cost_bps', '-')} bps + {common.get('slippage_bps', '-')} bps slippage on "
        "traded notional, fills at the next bar's open",
        "",
        "## Single-split test figures",
        "",
        f"Sharpe {_metric(metrics, 'test/sharpe')} [{_metric(metrics, 'test/sharpe_ci_low')}, "
        f"{_metric(metrics, 'test/sharpe_ci_high')}], return {_metric(metrics, 'test/total_return', True)}, "
        f"max drawdown {_metric(metrics, 'test/max_drawdown', True)}"
        + (f", accuracy {_metric(metrics, 'test/accuracy')}" if "test/accuracy" in metrics else ""),
        "",
        "## Walk-forward (out of sample, this model type's recipe retrained per fold)",
        "",
    ]
    limits = []
    name = walkforward_name(details)
    row = (walkforward or {}).get("models", {}).get(name) if walkforward else None
    if walkforward and isinstance(row, dict):
        lines += [
            f"- **Folds:** {walkforward.get('folds')}, {float(walkforward.get('oos_years', 0)):.1f} years "
            f"({walkforward.get('oos_start')} .. {walkforward.get('oos_end')}, {walkforward.get('oos_bars')} bars)",
            f"- **OOS Sharpe:** {_metric(row, 'sharpe')} [{_metric(row, 'sharpe_ci_low')}, "
            f"{_metric(row, 'sharpe_ci_high')}], PSR {_metric(row, 'psr')}",
            f"- **Sharpe - buy&hold:** {_metric(row, 'sharpe_minus_buy_and_hold')} "
            f"[{_metric(row, 'difference_ci_low')}, {_metric(row, 'difference_ci_high')}] (paired bootstrap)",
        ]
        if figures is not None:
            lines.append(f"- **Multiple testing:** {figures.summary()}")
        per_fold = walkforward.get("per_fold", [])
        if isinstance(per_fold, list) and per_fold:
            lines += ["", "| fold | test window | Sharpe |", "|---|---|---|"]
            for fold in per_fold:
                sharpe = fold.get("sharpe", {}).get(name) if isinstance(fold, dict) else None
                shown = f"{sharpe:.2f}" if isinstance(sharpe, int | float) else "-"
                lines.append(f"| {fold.get('fold')} | {fold.get('test_start')} .. {fold.get('test_end')} | {shown} |")
        low, high = row.get("difference_ci_low"), row.get("difference_ci_high")
        if isinstance(high, int | float) and high < 0:
            limits.append("out of sample it is worse than buy-and-hold (the whole paired interval is below 0)")
        elif isinstance(low, int | float) and low < 0:
            limits.append("out of sample it is not distinguishable from buy-and-hold (paired interval includes 0)")
        if figures is not None:
            limits += [f"fails the prod gate: {failure}" for failure in figures.failures(release)]
        limits.append(
            "the walk-forward retrains this recipe with walkforward.budget: it judges the recipe, not these weights"
        )
    else:
        lines.append("No walk-forward figures for this model type: run `dvc repro walkforward`.")
        limits.append("judged on one test split only")
    low = metrics.get("test/sharpe_ci_low")
    if isinstance(low, int | float) and low < 0:
        limits.append("its single-split Sharpe interval includes 0")
    limits.append("costs are a fixed bps rate: no market impact, borrow costs or capacity limits")
    lines += ["", "## Known limits", "", *(f"- {limit}" for limit in limits)]
    return "\n".join(lines) + "\n"


def write_card(
    root: Path,
    details: dict[str, Any],
    walkforward: dict[str, Any] | None,
    figures: GateFigures | None,
    release: ReleaseConfig,
) -> Path:
    path = card_path(root, str(details["model_id"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(render_card(details, walkforward, figures, release))
    return path
