"""DVC stage `ensemble`: combine every stage-2 agent and hybrid, backtest, register with its members."""

from pathlib import Path

from trade_agent.cli.errors import run_guarded
from trade_agent.config import load_params
from trade_agent.evaluation.report import pipeline_models
from trade_agent.log import setup_logging
from trade_agent.registry import default_registry
from trade_agent.training.ensemble import register_ensemble, train_ensemble


def main() -> None:
    setup_logging()
    params = load_params("params.yaml")
    members = [
        path
        for name, path in pipeline_models(params, Path("models/pipeline")).items()
        if name not in ("cnn_lstm", "ensemble")
    ]
    registry = default_registry(params, export=False)
    run = train_ensemble(
        params,
        members,
        Path("data/features"),
        Path("data/embeddings/embeddings.parquet"),
        Path("data/prepared/market.parquet"),
        Path("models/pipeline/ensemble"),
        Path("metrics/ensemble.json"),
        registry=registry,
    )
    register_ensemble(run, params, registry)


if __name__ == "__main__":
    run_guarded(main)
