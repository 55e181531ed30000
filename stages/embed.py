"""DVC stage `embed`: CNN-LSTM embeddings and class probabilities for every row."""

from pathlib import Path

from trade_agent.cnn_lstm.embed import run_embed_stage
from trade_agent.failures import run_guarded
from trade_agent.log import setup_logging


def main() -> None:
    setup_logging()
    run_embed_stage(Path("models/pipeline/cnn_lstm"), Path("data/features"), Path("data/embeddings/embeddings.parquet"))


if __name__ == "__main__":
    run_guarded(main)
