"""DVC stage `embed`: CNN-LSTM embeddings and class probabilities for every row."""

from trade_agent import paths
from trade_agent.cnn_lstm.embed import run_embed_stage
from trade_agent.config import load_params
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging
from trade_agent.threads import apply_thread_plan


def main() -> None:
    setup_logging()
    apply_thread_plan(load_params().base.threads, "embed")
    run_embed_stage(paths.pipeline_model(paths.STAGE_1), paths.FEATURES_DIR, paths.EMBEDDINGS)


if __name__ == "__main__":
    run_guarded(main)
