"""DVC stage `walkforward_folds`: each calendar fold's inputs (bars, features, its own preprocessor)."""

import shutil

import pandas as pd

from trade_agent import paths
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging
from trade_agent.walkforward.folds import fold_windows, write_fold_inputs


def main() -> None:
    setup_logging()
    params = load_params("params.yaml")
    market = pd.read_parquet(paths.MARKET)
    shutil.rmtree(paths.WALKFORWARD_DATA, ignore_errors=True)  # folds dropped from the list go too
    for window in fold_windows(market["timestamp"].min(), params.walkforward):
        write_fold_inputs(params, market, window, paths.fold_dir(paths.WALKFORWARD_DATA, window.fold))


if __name__ == "__main__":
    run_guarded(main)
