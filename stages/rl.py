"""DVC stage `rl@<algo>`: train one stage-2 agent on the CNN-LSTM features and register it."""

import sys

from trade_agent import paths
from trade_agent.agents.train import checkpoint_dir_for, load_panels, register_agent, train_agent
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging
from trade_agent.registry import default_registry


def main() -> None:
    setup_logging()
    algo = sys.argv[1]
    params = load_params("params.yaml")
    panels = load_panels(params, paths.FEATURES_DIR, paths.EMBEDDINGS, paths.MARKET)
    inputs = [paths.FEATURES_DIR / paths.FEATURES_FILE, paths.EMBEDDINGS, paths.MARKET]
    run = train_agent(
        algo,
        params,
        panels,
        paths.pipeline_model(algo),
        paths.METRICS_DIR / f"{algo}.json",
        plots_path=paths.PLOTS_DIR / algo / "equity.tsv",
        checkpoint_dir=checkpoint_dir_for(paths.CHECKPOINTS, algo, params, inputs),
    )
    registry = default_registry(params, export=False)
    register_agent(run, params, paths.pipeline_model(paths.STAGE_1), registry)


if __name__ == "__main__":
    run_guarded(main)
