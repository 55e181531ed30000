"""A trained model as a directory: weights, config, metadata, its preprocessor.

Layout of a CNN-LSTM model directory::

    model.pt         state dict only (torch.save; loaded with weights_only=True)
    config.json      architecture spec, feature names, return scale, preprocessor id
    metadata.json    metrics, params, data hash, device, duration (run-specific)
    preprocessor/<id>/   the fitted pipeline the model was trained with

Nothing here is a pickle of Python objects.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from trade_agent.cnn_lstm.model import CNNLSTM, CNNLSTMSpec
from trade_agent.errors import DataSourceError, IntegrityError
from trade_agent.io import atomic_dir, read_json, write_json

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
PREPROCESSOR_DIR = "preprocessor"


def save_cnn_lstm(
    model_dir: Path,
    model: CNNLSTM,
    config: dict[str, Any],
    metadata: dict[str, Any],
    preprocessor_dir: Path | None = None,
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """Write the model directory atomically (replacing any previous one).

    ``extra_json`` maps file names to objects saved beside the model (the DeepSpeed config).
    """
    with atomic_dir(model_dir) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, tmp / MODEL_FILE)
        write_json(tmp / CONFIG_FILE, {"spec": model.spec.to_dict(), **config})
        write_json(tmp / METADATA_FILE, metadata)
        for name, obj in (extra_json or {}).items():
            write_json(tmp / name, obj)
        if preprocessor_dir is not None:
            shutil.copytree(preprocessor_dir, tmp / PREPROCESSOR_DIR / preprocessor_dir.name)
    return model_dir


def load_cnn_lstm(model_dir: Path, device: str | torch.device = "cpu") -> tuple[CNNLSTM, dict[str, Any]]:
    """Rebuild the network from ``config.json`` and load its weights (never unpickles).

    Raises:
        DataSourceError: the directory is not a CNN-LSTM model directory.
        IntegrityError: the weights do not fit the saved architecture.
    """
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_FILE).is_file() or not (model_dir / CONFIG_FILE).is_file():
        raise DataSourceError(f"{model_dir}: not a CNN-LSTM model directory (needs {MODEL_FILE} and {CONFIG_FILE})")
    config = read_json(model_dir / CONFIG_FILE)
    model = CNNLSTM(CNNLSTMSpec(**config["spec"]))
    state = torch.load(model_dir / MODEL_FILE, map_location=device, weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise IntegrityError(f"{model_dir / MODEL_FILE}: weights do not match {CONFIG_FILE} ({exc})") from None
    return model.to(device).eval(), config
