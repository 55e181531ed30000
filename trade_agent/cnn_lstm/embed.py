"""The ``embed`` stage: the trained encoder over every row, once, into Parquet.

Stage 2 reads these columns instead of running the CNN-LSTM at every environment step.
Rows whose window would start before the symbol's first feature row have no embedding and
are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trade_agent.cnn_lstm.model import EMBEDDING_PREFIX, PREDICTED_RETURN, PROBABILITY_COLUMNS
from trade_agent.cnn_lstm.store import load_cnn_lstm
from trade_agent.cnn_lstm.windows import WindowData
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.features.splits import SPLIT
from trade_agent.io import write_parquet
from trade_agent.paths import FEATURES_FILE


@torch.no_grad()
def compute_embeddings(model_dir: Path, frame: pd.DataFrame, batch_size: int = 4096) -> pd.DataFrame:
    """``timestamp, symbol, split, emb_0..emb_{H-1}, prob_down, prob_flat, prob_up, pred_return``."""
    model, config = load_cnn_lstm(model_dir)
    data = WindowData.from_frame(frame, config["feature_names"], model.spec.sequence_length)
    embeddings, probabilities, returns = [], [], []
    for batch in data.all_ends.split(batch_size):
        z = model.encode(data.windows(batch))
        embeddings.append(z.numpy())
        probabilities.append(torch.softmax(model.direction_head(z), dim=-1).numpy())
        returns.append((model.return_head(z).squeeze(-1) * config["return_scale"]).numpy())
    rows = data.all_ends.numpy()
    out = frame.iloc[rows][[TIMESTAMP, SYMBOL, SPLIT]].reset_index(drop=True)
    emb = np.concatenate(embeddings) if embeddings else np.zeros((0, model.embedding_dim), np.float32)
    prob = np.concatenate(probabilities) if probabilities else np.zeros((0, 3), np.float32)
    columns = {f"{EMBEDDING_PREFIX}{i}": emb[:, i] for i in range(emb.shape[1])}
    columns |= {name: prob[:, i] for i, name in enumerate(PROBABILITY_COLUMNS)}
    columns[PREDICTED_RETURN] = np.concatenate(returns) if returns else np.zeros(0, np.float32)
    return pd.concat([out, pd.DataFrame(columns)], axis=1)


def run_embed_stage(model_dir: Path, features_dir: Path, out_path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(features_dir / FEATURES_FILE)
    embeddings = compute_embeddings(model_dir, frame)
    write_parquet(out_path, embeddings)
    return embeddings
