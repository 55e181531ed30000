"""DVC stage `features`: indicators, labels, chronological splits, fitted preprocessor."""

from trade_agent import paths
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.features.build import run_features_stage
from trade_agent.log import setup_logging


def main() -> None:
    setup_logging()
    params = load_params("params.yaml")
    run_features_stage(params, paths.MARKET, paths.FEATURES_DIR)


if __name__ == "__main__":
    run_guarded(main)
