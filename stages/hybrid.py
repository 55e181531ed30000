"""DVC stage `hybrid@<algo>`: the CNN-LSTM encoder inside the stage-2 agent, fine-tuned end to end."""

import sys
from dataclasses import asdict

from trade_agent import paths
from trade_agent.agents.train import checkpoint_dir_for
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.hybrid.stage import register_hybrid, train_hybrid
from trade_agent.log import setup_logging
from trade_agent.registry import default_registry


def main() -> None:
    setup_logging()
    algo = sys.argv[1]
    params = load_params("params.yaml")
    cnn_lstm, agent = paths.pipeline_model(paths.STAGE_1), paths.pipeline_model(algo)
    inputs = [paths.FEATURES_DIR / paths.FEATURES_FILE, paths.MARKET, cnn_lstm / "model.pt", agent / "policy.pt"]
    name = paths.hybrid_name(algo)
    run = train_hybrid(
        algo,
        params,
        paths.FEATURES_DIR,
        paths.MARKET,
        cnn_lstm,
        agent,
        paths.pipeline_model(name),
        paths.METRICS_DIR / f"{name}.json",
        plots_path=paths.PLOTS_DIR / name / "equity.tsv",
        checkpoint_dir=checkpoint_dir_for(paths.CHECKPOINTS, algo, params, inputs, asdict(params.hybrid)),
    )
    register_hybrid(run, params, cnn_lstm, agent, default_registry(params, export=False))


if __name__ == "__main__":
    run_guarded(main)
