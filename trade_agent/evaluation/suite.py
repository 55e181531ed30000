"""The metrics suite: one definition of what every model is judged by, wherever it is judged.

The ``rl``, ``hybrid`` and ``ensemble`` stages record it on their own splits, the
``evaluate`` stage on ``evaluate.split``, and ``trade-agent backtest`` on any data; all of
them call these functions with the same settings (``evaluate.*`` and ``base.seed``), so one
model gets one Sharpe interval whichever command reports it. Every annualised figure uses
the data's ``periods_per_year`` (``SplitData.frequency``), passed explicitly.
"""

from __future__ import annotations

from trade_agent.config.evaluation import EvaluateConfig
from trade_agent.config.rl import RLCommonConfig
from trade_agent.market.backtest import BacktestResult, backtest
from trade_agent.market.bootstrap import sharpe_interval
from trade_agent.type_aliases import FloatArray


def sharpe_bounds(
    returns: FloatArray, evaluate: EvaluateConfig, seed: int, periods_per_year: float
) -> dict[str, float]:
    """``sharpe_ci_low`` / ``sharpe_ci_high``: the stationary block bootstrap's 95 % interval."""
    low, high = sharpe_interval(
        returns,
        periods_per_year,
        samples=evaluate.bootstrap_samples,
        block_length=evaluate.block_length,
        seed=seed,
    )
    return {"sharpe_ci_low": low, "sharpe_ci_high": high}


def run_backtest(
    weights: FloatArray, open_: FloatArray, close: FloatArray, common: RLCommonConfig, periods_per_year: float
) -> BacktestResult:
    """Targets through the backtester with the model's execution settings (fills at the next open)."""
    return backtest(
        weights,
        open_,
        close,
        0,
        common.cost_bps,
        common.slippage_bps,
        common.max_leverage,
        periods_per_year=periods_per_year,
    )


def metrics_suite(
    result: BacktestResult,
    open_: FloatArray,
    close: FloatArray,
    common: RLCommonConfig,
    evaluate: EvaluateConfig,
    seed: int,
    periods_per_year: float,
) -> dict[str, float]:
    """After-cost metrics, the Sharpe interval, and Sharpe/return at each ``evaluate.cost_sensitivity_bps``,
    annualised with ``periods_per_year`` (recorded in the suite as ``periods_per_year``)."""
    metrics = dict(result.metrics) | sharpe_bounds(result.returns, evaluate, seed, periods_per_year)
    for bps in evaluate.cost_sensitivity_bps:
        at = backtest(result.weights, open_, close, 0, bps, 0.0, common.max_leverage, periods_per_year=periods_per_year)
        metrics[f"sharpe_at_{bps:g}bps"] = at.metrics["sharpe"]
        metrics[f"total_return_at_{bps:g}bps"] = at.metrics["total_return"]
    metrics["periods_per_year"] = float(periods_per_year)
    return metrics
