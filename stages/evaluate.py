"""DVC stage `evaluate`: every model and baseline on the test split, curves for dvc plots, a PNG report."""

from trade_agent.config import load_params
from trade_agent.evaluation.report import run_evaluate_stage
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging


def main() -> None:
    setup_logging()
    run_evaluate_stage(load_params("params.yaml"))


if __name__ == "__main__":
    run_guarded(main)
