"""DVC stage `rl@<algo>`: train one stage-2 agent on the CNN-LSTM features and register it."""

import sys
from pathlib import Path

from trade_agent.agents.train import inputs_hash, load_panels, register_agent, train_agent
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging
from trade_agent.registry import default_registry

FEATURES = Path("data/features")
EMBEDDINGS = Path("data/embeddings/embeddings.parquet")
MARKET = Path("data/prepared/market.parquet")


def main() -> None:
    setup_logging()
    algo = sys.argv[1]
    params = load_params("params.yaml")
    panels = load_panels(params, FEATURES, EMBEDDINGS, MARKET)
    inputs = [FEATURES / "features.parquet", EMBEDDINGS, MARKET]
    run = train_agent(
        algo,
        params,
        panels,
        Path("models/pipeline") / algo,
        Path("metrics") / f"{algo}.json",
        plots_path=Path("plots") / algo / "equity.tsv",
        checkpoint_dir=Path("models/temp") / algo / inputs_hash(algo, params, inputs),
    )
    registry = default_registry(params, export=False)
    register_agent(run, params, Path("models/pipeline/cnn_lstm"), registry)


if __name__ == "__main__":
    run_guarded(main)
