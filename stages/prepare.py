"""DVC stage `prepare`: load the configured market data, validate it, write Parquet."""

from trade_agent import paths
from trade_agent.config import load_params
from trade_agent.data.ingest import prepare
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging


def main() -> None:
    setup_logging()
    params = load_params("params.yaml")
    prepare(params.data, paths.PREPARED_DIR, params.base.seed, train_fraction=params.splits.train)


if __name__ == "__main__":
    run_guarded(main)
