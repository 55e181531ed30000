"""DVC stage `cnn_lstm`: train the CNN-LSTM on the `features` outputs."""

from pathlib import Path

from trade_agent.cli.errors import run_guarded
from trade_agent.config import load_params
from trade_agent.log import setup_logging
from trade_agent.registry import default_registry
from trade_agent.training.cnn_lstm import register_cnn_lstm, train_cnn_lstm


def main() -> None:
    setup_logging()
    params = load_params("params.yaml")
    run = train_cnn_lstm(
        params,
        features_dir=Path("data/features"),
        model_dir=Path("models/pipeline/cnn_lstm"),
        metrics_path=Path("metrics/cnn_lstm.json"),
        live_dir=Path("dvclive/cnn_lstm"),
    )
    # Into the shared store only: registry.json is rewritten by `train`/`models export`.
    register_cnn_lstm(run.model_dir, params, default_registry(params, export=False), run.duration_s)


if __name__ == "__main__":
    run_guarded(main)
