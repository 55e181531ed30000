"""DVC stage `cnn_lstm`: train the CNN-LSTM on the `features` outputs.

With `distributed.enabled: true` the stage launches DeepSpeed/torchrun processes; rank 0
writes the same outputs and registers the model.
"""

from trade_agent import paths
from trade_agent.cnn_lstm.distributed.launch import launch_cnn_lstm
from trade_agent.cnn_lstm.registration import register_cnn_lstm
from trade_agent.cnn_lstm.stage import train_cnn_lstm
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging
from trade_agent.registry import default_registry

MODEL = paths.pipeline_model(paths.STAGE_1)
METRICS = paths.METRICS_DIR / "cnn_lstm.json"
LIVE = paths.LIVE_DIR / "cnn_lstm"


def main() -> None:
    setup_logging()
    params = load_params("params.yaml")
    if params.distributed.enabled:
        launch_cnn_lstm(
            params,
            paths.FEATURES_DIR,
            MODEL,
            run_dir=paths.CHECKPOINTS / "distributed" / "cnn_lstm",
            registry_root=paths.REGISTRY_ROOT,
            export_registry=False,
            metrics_path=METRICS,
            live_dir=LIVE,
        )
        return
    run = train_cnn_lstm(params, paths.FEATURES_DIR, MODEL, metrics_path=METRICS, live_dir=LIVE)
    # Into the shared store only: registry.json is rewritten by `train`/`models export`.
    register_cnn_lstm(run.model_dir, params, default_registry(params, export=False), run.duration_s)


if __name__ == "__main__":
    run_guarded(main)
