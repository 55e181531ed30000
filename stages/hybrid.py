"""DVC stage `hybrid@<algo>`: the CNN-LSTM encoder inside the stage-2 agent, fine-tuned end to end."""

import sys
from dataclasses import asdict
from pathlib import Path

from trade_agent.agents.train import inputs_hash
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.hybrid.stage import register_hybrid, train_hybrid
from trade_agent.log import setup_logging
from trade_agent.registry import default_registry

FEATURES = Path("data/features")
MARKET = Path("data/prepared/market.parquet")
CNN_LSTM = Path("models/pipeline/cnn_lstm")


def main() -> None:
    setup_logging()
    algo = sys.argv[1]
    params = load_params("params.yaml")
    agent = Path("models/pipeline") / algo
    inputs = [FEATURES / "features.parquet", MARKET, CNN_LSTM / "model.pt", agent / "policy.pt"]
    run = train_hybrid(
        algo,
        params,
        FEATURES,
        MARKET,
        CNN_LSTM,
        agent,
        Path("models/pipeline") / f"hybrid_{algo}",
        Path("metrics") / f"hybrid_{algo}.json",
        plots_path=Path("plots") / f"hybrid_{algo}" / "equity.tsv",
        checkpoint_dir=Path("models/temp")
        / f"hybrid_{algo}"
        / inputs_hash(algo, params, inputs, asdict(params.hybrid)),
    )
    register_hybrid(run, params, CNN_LSTM, agent, default_registry(params, export=False))


if __name__ == "__main__":
    run_guarded(main)
