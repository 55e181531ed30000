"""CNN-LSTM: convolutional feature mixing, an LSTM over time, optional self-attention.

Input ``(batch, sequence_length, n_features)``; outputs 3-class direction logits
(down/flat/up) and a forward-return estimate (in units of the training returns' standard
deviation). :meth:`CNNLSTM.encode` returns the ``lstm_hidden``-dimensional embedding of the
window that later stages use as features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trade_agent.config import CnnLstmConfig

# The columns the embed stage writes per row: emb_0..emb_{H-1}, the class probabilities and
# the predicted forward return (later stages read them by these names).
EMBEDDING_PREFIX = "emb_"
PROBABILITY_COLUMNS: tuple[str, str, str] = ("prob_down", "prob_flat", "prob_up")
PREDICTED_RETURN = "pred_return"


@dataclass(frozen=True)
class CNNLSTMSpec:
    """Everything needed to rebuild the network (saved as ``config.json``)."""

    n_features: int
    sequence_length: int
    conv_filters: list[int] = field(default_factory=lambda: [32, 64])
    kernel_sizes: list[int] = field(default_factory=lambda: [5, 3])
    norm: str = "layer"
    dropout: float = 0.1
    residual: bool = True
    lstm_hidden: int = 64
    lstm_layers: int = 1
    attention_heads: int = 4
    gradient_checkpointing: bool = False

    @classmethod
    def from_config(cls, config: CnnLstmConfig, n_features: int, sequence_length: int) -> CNNLSTMSpec:
        return cls(
            n_features=n_features,
            sequence_length=sequence_length,
            conv_filters=list(config.conv_filters),
            kernel_sizes=list(config.kernel_sizes),
            norm=config.norm,
            dropout=config.dropout,
            residual=config.residual,
            lstm_hidden=config.lstm_hidden,
            lstm_layers=config.lstm_layers,
            attention_heads=config.attention_heads,
            gradient_checkpointing=config.gradient_checkpointing,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _ChannelNorm(nn.Module):
    """Normalise over channels of a ``(batch, channels, time)`` tensor."""

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.norm: nn.Module
        if kind == "layer":
            self.norm = nn.LayerNorm(channels)
        elif kind == "batch":
            self.norm = nn.BatchNorm1d(channels)
        else:
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        out: torch.Tensor = self.norm(x)
        return out


class ConvBlock(nn.Module):
    """Conv1d ('same' padding) -> norm -> GELU -> dropout, with an optional residual."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, norm: str, dropout: float, residual: bool):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, padding="same")
        self.norm = _ChannelNorm(out_channels, norm)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.skip: nn.Module | None = None
        if residual:
            self.skip = nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.act(self.norm(self.conv(x))))
        return out + self.skip(x) if self.skip is not None else out


class CNNLSTM(nn.Module):
    """The stage-1 network. See the module docstring for shapes."""

    def __init__(self, spec: CNNLSTMSpec) -> None:
        super().__init__()
        self.spec = spec
        channels = [spec.n_features, *spec.conv_filters]
        self.conv = nn.ModuleList(
            ConvBlock(channels[i], channels[i + 1], k, spec.norm, spec.dropout, spec.residual)
            for i, k in enumerate(spec.kernel_sizes)
        )
        self.lstm = nn.LSTM(
            channels[-1],
            spec.lstm_hidden,
            num_layers=spec.lstm_layers,
            batch_first=True,
            dropout=spec.dropout if spec.lstm_layers > 1 else 0.0,
        )
        self.attention: nn.MultiheadAttention | None = None
        if spec.attention_heads:
            self.attention = nn.MultiheadAttention(
                spec.lstm_hidden, spec.attention_heads, dropout=spec.dropout, batch_first=True
            )
            self.attention_norm = nn.LayerNorm(spec.lstm_hidden)
        self.direction_head = nn.Linear(spec.lstm_hidden, 3)
        self.return_head = nn.Linear(spec.lstm_hidden, 1)

    @property
    def embedding_dim(self) -> int:
        return self.spec.lstm_hidden

    def _maybe_checkpoint(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.spec.gradient_checkpointing and self.training and x.requires_grad:
            out: torch.Tensor = checkpoint(module, x, use_reentrant=False)
            return out
        result: torch.Tensor = module(x)
        return result

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        assert self.attention is not None
        attended, _ = self.attention(h, h, h, need_weights=False)
        out: torch.Tensor = self.attention_norm(h + attended)
        return out

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of each window: ``(batch, seq, features) -> (batch, lstm_hidden)``."""
        h = x.transpose(1, 2)  # Conv1d wants (batch, channels, time)
        for block in self.conv:
            h = self._maybe_checkpoint(block, h)
        h, _ = self.lstm(h.transpose(1, 2))
        if self.attention is not None:
            if self.spec.gradient_checkpointing and self.training and h.requires_grad:
                h = checkpoint(self._attend, h, use_reentrant=False)
            else:
                h = self._attend(h)
        return h[:, -1]  # the representation at the decision bar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Direction logits ``(batch, 3)`` and standardised forward return ``(batch,)``."""
        z = self.encode(x)
        return self.direction_head(z), self.return_head(z).squeeze(-1)


def threshold_weights(probabilities: np.ndarray, threshold: float, max_leverage: float) -> np.ndarray:
    """The CNN-LSTM as a trading policy: target weights from its class probabilities.

    ``probabilities``: ``(..., N, 3)`` (down, flat, up) per asset. Each asset is held at
    ``+max_leverage / N`` when P(up) exceeds ``threshold``, ``-max_leverage / N`` when P(down)
    does, flat otherwise (or when both do). Returns ``(..., N)``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    direction = (p[..., 2] > threshold).astype(np.float64) - (p[..., 0] > threshold).astype(np.float64)
    return direction * max_leverage / p.shape[-2]
