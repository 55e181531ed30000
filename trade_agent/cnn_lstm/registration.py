"""How a trained CNN-LSTM directory enters the registry: its id is the lineage of every later stage.

Kept apart from training so stages 2-4, which only need the id of the model they consume,
do not depend on the trainer's code.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from trade_agent.config import Params
from trade_agent.io import read_json
from trade_agent.registry import ModelRegistry

RUNTIME_KEYS = ("fallback_to_cpu", "precision", "max_batch_size", "min_batch_size")


def register_cnn_lstm(
    model_dir: Path,
    params: Params,
    registry: ModelRegistry,
    training_duration: float | None = None,
    tags: list[str] | None = None,
) -> str:
    """Register a trained model directory; returns its id (existing id for known content).

    ``tags``: e.g. ``optimize:<study>:<trials>`` when a search chose its params (the trials
    count toward the deflated Sharpe ratio's N)."""
    config = read_json(model_dir / "config.json")
    metadata = read_json(model_dir / "metadata.json")
    hyperparameters = {k: v for k, v in asdict(params.cnn_lstm).items() if k not in RUNTIME_KEYS}
    training_config = {
        **hyperparameters,
        "seed": metadata["seed"],
        "runtime": {k: getattr(params.cnn_lstm, k) for k in RUNTIME_KEYS}
        | {"device": metadata["device"], "threads": metadata["hardware"]["threads"]},
        "interface": {
            "family": "CNNLSTM",
            "feature_names": config["feature_names"],
            "sequence_length": config["spec"]["sequence_length"],
            "outputs": {"direction": config["classes"], "return_horizon": config["horizon"]},
        },
    }
    return registry.register_model(
        "cnn_lstm",
        model_dir,
        None,  # the preprocessor is inside the model directory
        training_config,
        metadata["metrics"],
        {**metadata["data"], "preprocessor_id": metadata["preprocessor_id"]},
        training_duration=round(training_duration, 3) if training_duration is not None else None,
        hardware_info=metadata["hardware"],
        notes="; ".join(metadata["warnings"]),
        tags=tags,
    )
