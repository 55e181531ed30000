"""DVC stage `embed`: CNN-LSTM embeddings and class probabilities for every row."""

from pathlib import Path

from trade_agent.cli.errors import run_guarded
from trade_agent.log import setup_logging
from trade_agent.training.embed import run_embed_stage


def main() -> None:
    setup_logging()
    run_embed_stage(Path("models/pipeline/cnn_lstm"), Path("data/features"), Path("data/embeddings/embeddings.parquet"))


if __name__ == "__main__":
    run_guarded(main)
