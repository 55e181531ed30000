"""Sections of the model stages (``cnn_lstm``; later RL, hybrid, ensemble)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class CnnLstmConfig:
    """Stage 1: CNN-LSTM architecture and training.

    Attributes:
        conv_filters / kernel_sizes: one Conv1d block per entry (same length).
        norm: normalisation in the conv blocks; ``layer`` keeps samples independent
            (needed for exact equivalence of distributed and single-process runs).
        attention_heads: multi-head self-attention over time after the LSTM; 0 disables.
        gradient_checkpointing: recompute conv/attention activations in backward to save
            memory on long sequences.
        lr_schedule: ``cosine`` (with ``warmup_epochs`` linear warm-up) or ``constant``.
        patience: epochs without validation-loss improvement before stopping.
        class_weighting: weight cross-entropy by inverse class frequency of the train split.
        regression_weight: weight of the forward-return loss (Huber on standardised returns).
        precision: ``fp32``; ``bf16`` autocast (CPU or CUDA); ``fp16`` with GradScaler (CUDA only).
        batch_size: samples per optimizer step, or ``auto``: the largest micro-batch that fits
            in memory (probed from ``max_batch_size`` down, halving on out-of-memory).
        min_batch_size: out-of-memory recovery halves the micro-batch (the optimizer step
            keeps its samples through gradient accumulation) and gives up below this.
        fallback_to_cpu: when CUDA was requested but fails to initialise, train on CPU with a
            warning (recorded in the model metadata); false makes it an error.
    """

    conv_filters: list[int] = field(default_factory=lambda: [32, 64])
    kernel_sizes: list[int] = field(default_factory=lambda: [5, 3])
    norm: Literal["layer", "batch", "none"] = "layer"
    dropout: float = 0.1
    residual: bool = True
    lstm_hidden: int = 64
    lstm_layers: int = 1
    attention_heads: int = 4
    gradient_checkpointing: bool = False
    epochs: int = 20
    batch_size: int | Literal["auto"] = 256
    max_batch_size: int = 4096
    min_batch_size: int = 8
    learning_rate: float = 0.001
    weight_decay: float = 0.0001
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 1
    patience: int = 5
    grad_clip: float = 1.0
    class_weighting: bool = True
    regression_weight: float = 0.5
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    fallback_to_cpu: bool = True

    def __post_init__(self) -> None:
        if len(self.conv_filters) != len(self.kernel_sizes) or not self.conv_filters:
            raise ConfigError(
                f"cnn_lstm.conv_filters {self.conv_filters} and cnn_lstm.kernel_sizes {self.kernel_sizes} "
                "must be non-empty lists of the same length (one entry per conv block)"
            )
        if self.attention_heads and self.lstm_hidden % self.attention_heads:
            raise ConfigError(
                f"cnn_lstm.attention_heads: {self.attention_heads} must divide lstm_hidden {self.lstm_hidden}; "
                "pick a divisor or 0 to disable attention"
            )
        if self.batch_size != "auto" and self.batch_size < 1:
            raise ConfigError(f"cnn_lstm.batch_size: must be >= 1 or auto, got {self.batch_size}")
        if not 1 <= self.min_batch_size <= self.max_batch_size:
            raise ConfigError(
                f"cnn_lstm.min_batch_size {self.min_batch_size} / max_batch_size {self.max_batch_size}: "
                "need 1 <= min_batch_size <= max_batch_size"
            )
        for key in ("epochs", "lstm_hidden", "lstm_layers", "patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"cnn_lstm.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("weight_decay", "attention_heads", "regression_weight", "grad_clip", "warmup_epochs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"cnn_lstm.{key}: must be >= 0, got {getattr(self, key)}")
        if min(self.conv_filters) < 1 or min(self.kernel_sizes) < 1:
            raise ConfigError(
                f"cnn_lstm.conv_filters {self.conv_filters} / kernel_sizes {self.kernel_sizes}: "
                "every entry must be >= 1"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"cnn_lstm.dropout: must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0:
            raise ConfigError(f"cnn_lstm.learning_rate: must be > 0, got {self.learning_rate}")
