"""DVC stage `walkforward_fold@<k>`: train fold k's hierarchy on its past, trade its test window."""

import sys

from trade_agent import paths
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging
from trade_agent.walkforward.fold import run_fold


def main() -> None:
    setup_logging()
    fold = int(sys.argv[1])
    params = load_params("params.yaml")
    run_fold(params, paths.fold_dir(paths.WALKFORWARD_DATA, fold), paths.fold_dir(paths.WALKFORWARD_MODELS, fold))


if __name__ == "__main__":
    run_guarded(main)
