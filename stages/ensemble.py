"""DVC stage `ensemble`: combine every stage-2 agent and hybrid, backtest, register with its members."""

from trade_agent import paths
from trade_agent.config import load_params
from trade_agent.ensemble.stage import register_ensemble, train_ensemble
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging
from trade_agent.registry import default_registry


def main() -> None:
    setup_logging()
    params = load_params("params.yaml")
    registry = default_registry(params, export=False)
    run = train_ensemble(
        params,
        paths.ensemble_members(params.rl.algos, params.hybrid.algos),
        paths.FEATURES_DIR,
        paths.EMBEDDINGS,
        paths.MARKET,
        paths.pipeline_model(paths.ENSEMBLE),
        paths.METRICS_DIR / "ensemble.json",
        registry=registry,
    )
    register_ensemble(run, params, registry)


if __name__ == "__main__":
    run_guarded(main)
