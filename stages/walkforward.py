"""DVC stage `walkforward`: stitch the folds' test windows, multiple-testing statistics, the report."""

from trade_agent import paths
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging
from trade_agent.walkforward.aggregate import run_walkforward_stage


def main() -> None:
    setup_logging()
    params = load_params("params.yaml")
    run_walkforward_stage(
        params,
        [paths.fold_dir(paths.WALKFORWARD_MODELS, k) for k in sorted(params.walkforward.folds)],
        paths.METRICS_DIR / "walkforward.json",
        paths.REPORTS_DIR,
    )


if __name__ == "__main__":
    run_guarded(main)
