"""Stage 3: the CNN-LSTM encoder inside an SB3 policy, fine-tuned end to end.

Stage 2 observes ``[feature window (W bars) | embedding, class probabilities and
predicted return per asset | portfolio state]`` with the embedding precomputed by the
``embed`` stage. The hybrid observes the raw scaled feature window of the encoder's own
length ``L >= W`` plus the portfolio state, and its features extractor rebuilds exactly
the stage-2 observation with the embedding computed live. So:

* the policy/value heads of the stage-2 agent fit unchanged (copied where names and
  shapes match) and, with the stage-1 weights in the encoder, the hybrid takes the stage-2
  agent's actions before any fine-tuning (a test checks this);
* fine-tuning then trains encoder and heads jointly with the agent's algorithm, the encoder
  at its own learning rate and optionally frozen for the first K steps.

Embeddings do not depend on the portfolio state, so wherever the encoder's weights are
fixed (the frozen warm-up, every evaluation and backtest) they are computed once per split
in batch (:meth:`CNNLSTMExtractor.attach_panel`) and looked up, instead of re-running the
encoder in every env step and minibatch; fine-tuning steps run it live. A frozen encoder
also runs in eval mode (no dropout): it then computes the embeddings the stage-2 agent was
trained on, and a lookup is exact.

The registered form is pickle-free like the agents': ``policy.pt`` + ``policy.json``
(whose ``features_extractor`` entry names the extractor and its kwargs) + ``hybrid.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from trade_agent.cnn_lstm.model import (
    CNNLSTM,
    EMBEDDING_PREFIX,
    PREDICTED_RETURN,
    PROBABILITY_COLUMNS,
    CNNLSTMSpec,
)
from trade_agent.market.observation import CLIP

log = logging.getLogger(__name__)

EXTRACTOR_NAME = "cnn_lstm"
CONTEXT_EXTRA = 4  # prob_down, prob_flat, prob_up, pred_return (the embed stage's columns)


TABLE_CHUNK = 4096  # rows per fingerprint pass (bounds the int64 temporary)
ENCODE_BATCH = 256  # windows per encoder call when a split's embeddings are computed in batch


@dataclass
class _SplitTable:
    """Every encoder window of one split and, while the weights it was made with hold, its context.

    Windows are found by a fingerprint (a fixed random projection, sorted for
    ``searchsorted``) and confirmed by exact comparison, so a lookup never returns the
    context of another window.
    """

    windows: torch.Tensor  # (M, L * F) float32, one row per (bar, asset)
    keys: torch.Tensor  # (M,) sorted fingerprints
    order: torch.Tensor  # (M,) row of each sorted key
    context: torch.Tensor | None = None  # (M, C) [embedding | probabilities | predicted return]
    stamp: tuple[tuple[int, int], ...] = ()  # the encoder state the context was computed with


class CNNLSTMExtractor(BaseFeaturesExtractor):
    """Raw window ``(L, N, F)`` + portfolio state -> the stage-2 observation vector.

    Args:
        spec: the CNN-LSTM's ``CNNLSTMSpec`` as a dict (``config.json["spec"]``).
        n_assets / window: N and the stage-2 window W (the last W of the L bars).
        return_scale: the CNN-LSTM's return-head scale (``config.json``).
        feature_index: positions (in the encoder's features) of the features the stage-2
            agent observes; ``None``: all of them.
        context_index: positions, in ``[embedding | prob_down, prob_flat, prob_up |
            pred_return]``, of the stage-1 columns the agent observes; ``None``: all.
        normalization: the agent's state normalisation (``StateScaler.to_json()``) of those
            columns, applied as in stage 2; ``None``: none (agents saved without one).
    """

    _probe: torch.Tensor  # (L * F,) int64 multipliers: a window's fingerprint

    def __init__(
        self,
        observation_space: gym.Space[Any],
        spec: dict[str, Any],
        n_assets: int,
        window: int,
        return_scale: float,
        feature_index: list[int] | None = None,
        context_index: list[int] | None = None,
        normalization: dict[str, list[float]] | None = None,
    ) -> None:
        model_spec = CNNLSTMSpec(**spec)
        length, n_features = model_spec.sequence_length, model_spec.n_features
        if window > length:
            raise ValueError(f"stage-2 window {window} exceeds the encoder's sequence length {length}")
        hidden = model_spec.lstm_hidden
        observed_features = len(feature_index) if feature_index is not None else n_features
        observed_context = len(context_index) if context_index is not None else hidden + CONTEXT_EXTRA
        out = window * n_assets * observed_features + n_assets * observed_context + 3 * n_assets
        super().__init__(observation_space, features_dim=out)
        self.encoder = CNNLSTM(model_spec)
        self.n_assets, self.window, self.length, self.n_features = n_assets, window, length, n_features
        self.return_scale = return_scale
        self.feature_index = feature_index
        self.context_index = context_index
        self.normalized = normalization is not None
        # Not persistent: they come from policy.json's kwargs, so the state dict (and the
        # stage-2 tensors copied into it by name) is the same with or without them.
        for name in ("feature_mean", "feature_std", "context_mean", "context_std"):
            values = normalization[name] if normalization is not None else []
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32), persistent=False)
        # A private generator: building an extractor must not move the global RNG (the
        # policy's own initialisation draws from it).
        probe = torch.randint(1, 2**31, (length * n_features,), generator=torch.Generator().manual_seed(0))
        self.register_buffer("_probe", probe, persistent=False)
        self._tables: list[_SplitTable] = []
        self.lookups = self.live_windows = 0  # windows answered from a table / by the encoder

    def train(self, mode: bool = True) -> CNNLSTMExtractor:
        """A frozen encoder stays in eval mode (no dropout) while the heads train."""
        super().train(mode)
        self.encoder.train(mode and self.encoder_trainable)
        return self

    @property
    def encoder_trainable(self) -> bool:
        return any(p.requires_grad for p in self.encoder.parameters())

    def attach_panel(self, features: np.ndarray | torch.Tensor) -> None:
        """Compute the context of every window of a split's ``(T, N, F)`` scaled features in
        batch; observations from that split are then answered from it while the weights hold."""
        length, n_features = self.length, self.n_features
        values = torch.tensor(np.asarray(features, dtype=np.float32), device=self._probe.device)
        if values.ndim != 3 or values.shape[2] != n_features or values.shape[0] < length:
            raise ValueError(f"features {tuple(values.shape)} do not hold windows of {length} x {n_features}")
        # (T - L + 1, N, F, L) -> one contiguous (L, F) window per (bar, asset), as the env lays it out.
        windows = values.unfold(0, length, 1).permute(0, 1, 3, 2).reshape(-1, length * n_features).contiguous()
        keys, order = torch.sort(self._fingerprint(windows))
        table = _SplitTable(windows, keys, order)
        self._tables.append(table)
        self._refresh(table)

    def _fingerprint(self, flat: torch.Tensor) -> torch.Tensor:
        """An exact hash of each row's float32 bits. Integer sums do not depend on their
        order, so a window hashes alike alone or in any batch (a float projection does not)."""
        keys = torch.empty(len(flat), dtype=torch.int64, device=flat.device)
        for start in range(0, len(flat), TABLE_CHUNK):
            bits = flat[start : start + TABLE_CHUNK].contiguous().view(torch.int32).to(torch.int64)
            keys[start : start + TABLE_CHUNK] = (bits * self._probe).sum(dim=1)  # wraps mod 2**64
        return keys

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        # In-place updates (optimiser steps, load_state_dict) bump a tensor's version.
        tensors = [*self.encoder.parameters(), *self.encoder.buffers()]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def _refresh(self, table: _SplitTable) -> None:
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            shaped = table.windows.reshape(len(table.windows), self.length, self.n_features)
            table.context = torch.cat([self._padded_context(chunk) for chunk in shaped.split(ENCODE_BATCH)])
        self.encoder.train(was_training)
        table.stamp = self._stamp()

    def _padded_context(self, windows: torch.Tensor) -> torch.Tensor:
        """Context of up to ``ENCODE_BATCH`` windows, always computed as a full batch: CPU kernels
        pick their blocking by batch size, so a window's context would otherwise depend on
        how many others share its call (the split's length, a prediction's history)."""
        padding = windows.new_zeros(ENCODE_BATCH - len(windows), *windows.shape[1:])
        return self._live_context(torch.cat([windows, padding]))[: len(windows)]

    def _live_context(self, windows: torch.Tensor) -> torch.Tensor:
        z = self.encoder.encode(windows)
        probabilities = torch.softmax(self.encoder.direction_head(z), dim=-1)
        predicted = self.encoder.return_head(z) * self.return_scale
        return torch.cat([z, probabilities, predicted], dim=-1)

    def _context(self, windows: torch.Tensor, observations: int) -> torch.Tensor:
        """Context of the ``(K, L, F)`` windows of ``observations`` observations: from an attached
        split's table where the encoder is fixed for this call (eval mode, no gradient into it), else live."""
        fixed = not self.encoder.training and not (torch.is_grad_enabled() and self.encoder_trainable)
        if not self._tables or not fixed:
            self.live_windows += len(windows)
            return self._live_context(windows)
        flat = windows.reshape(len(windows), -1)
        keys = self._fingerprint(flat)
        found = torch.zeros(len(windows), dtype=torch.bool, device=windows.device)
        context: torch.Tensor | None = None
        stamp = self._stamp()
        for table in self._tables:
            position = torch.searchsorted(table.keys, keys).clamp(max=len(table.keys) - 1)
            row = table.order[position]
            hit = ~found & (table.windows[row] == flat).all(dim=1)
            if not bool(hit.any()):
                continue
            if table.stamp != stamp:
                # Weights changed since the table was made. An evaluation step (batch 1)
                # recomputes the split in batch; a rollout or minibatch runs live, since
                # it comes after every update.
                if observations != 1:
                    continue
                self._refresh(table)
            assert table.context is not None
            if context is None:
                context = torch.empty(len(windows), table.context.shape[1], device=windows.device)
            context[hit] = table.context[row[hit]]
            found |= hit
        if context is None:
            self.live_windows += len(windows)
            return self._live_context(windows)
        missing = ~found
        if bool(missing.any()):
            context[missing] = self._live_context(windows[missing])
        self.lookups += int(found.sum())
        self.live_windows += int(missing.sum())
        return context

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        b, n, length, f = observations.shape[0], self.n_assets, self.length, self.n_features
        raw = observations[:, : length * n * f].reshape(b, length, n, f)
        state = observations[:, length * n * f :]
        context = self._context(raw.permute(0, 2, 1, 3).reshape(b * n, length, f), b)
        window = raw[:, length - self.window :]
        if self.context_index is not None:
            context = context[:, self.context_index]
        if self.feature_index is not None:
            window = window[..., self.feature_index]
        if self.normalized:
            stats: dict[str, torch.Tensor] = dict(self.named_buffers(recurse=False))
            context = ((context - stats["context_mean"]) / stats["context_std"]).clamp(-CLIP, CLIP)
            window = ((window - stats["feature_mean"]) / stats["feature_std"]).clamp(-CLIP, CLIP)
        return torch.cat([window.reshape(b, -1), context.reshape(b, -1), state], dim=1)


EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {EXTRACTOR_NAME: CNNLSTMExtractor}


def extractor_kwargs(
    cnn_lstm_config: dict[str, Any], n_assets: int, window: int, observation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The extractor's JSON kwargs; ``observation``: the stage-2 agent's (``policy.json``), whose
    columns and normalisation the hybrid reproduces."""
    kwargs: dict[str, Any] = {
        "spec": dict(cnn_lstm_config["spec"]),
        "n_assets": n_assets,
        "window": window,
        "return_scale": float(cnn_lstm_config["return_scale"]),
    }
    if observation is not None:
        names = list(cnn_lstm_config["feature_names"])
        hidden = int(cnn_lstm_config["spec"]["lstm_hidden"])
        context_names = [f"{EMBEDDING_PREFIX}{i}" for i in range(hidden)] + [*PROBABILITY_COLUMNS, PREDICTED_RETURN]
        kwargs["feature_index"] = [names.index(c) for c in observation["features"]]
        kwargs["context_index"] = [context_names.index(c) for c in observation["context"]]
        kwargs["normalization"] = dict(observation["normalization"])
    return kwargs


def extractors(policy: nn.Module) -> list[CNNLSTMExtractor]:
    """Every encoder copy inside an SB3 policy (PPO: one; SAC/TD3: actor, critic and targets)."""
    return [m for m in policy.modules() if isinstance(m, CNNLSTMExtractor)]


def load_encoder(policy: nn.Module, encoder_state: dict[str, torch.Tensor]) -> int:
    """Put the stage-1 weights into every encoder copy; returns how many were loaded."""
    found = extractors(policy)
    for extractor in found:
        extractor.encoder.load_state_dict(encoder_state)
    return len(found)


def warm_start_heads(policy: nn.Module, agent_state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy the stage-2 policy's tensors whose names and shapes match (everything outside the
    features extractor); returns (copied, skipped) names."""
    own = policy.state_dict()
    copied, skipped = [], []
    for name, value in agent_state.items():
        if name in own and own[name].shape == value.shape and ".encoder." not in name:
            own[name] = value.clone()
            copied.append(name)
        else:
            skipped.append(name)
    policy.load_state_dict(own)
    return copied, skipped


class ScaledAdam(torch.optim.Adam):
    """Adam whose param groups may carry ``lr_scale``: SB3 resets every group's ``lr`` from
    its schedule each update, so the encoder's own rate is kept as a ratio to it."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        base = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, base, strict=True):
                group["lr"] = lr


def split_encoder_learning_rate(model: BaseAlgorithm, head_lr: float, encoder_lr: float) -> None:
    """Give an on-policy model's encoder its own learning rate (PPO: one optimiser)."""
    policy = model.policy
    encoder_ids = {id(p) for e in extractors(policy) for p in e.parameters()}
    encoder = [p for p in policy.parameters() if id(p) in encoder_ids]
    heads = [p for p in policy.parameters() if id(p) not in encoder_ids]
    defaults = dict(policy.optimizer.defaults)
    defaults.pop("lr", None)
    groups: list[dict[str, Any]] = [{"params": heads}, {"params": encoder, "lr_scale": encoder_lr / head_lr}]
    policy.optimizer = ScaledAdam(groups, lr=head_lr, **defaults)


def set_encoder_trainable(policy: nn.Module, trainable: bool) -> None:
    for extractor in extractors(policy):
        extractor.encoder.requires_grad_(trainable)
        extractor.train(extractor.training)  # a frozen encoder runs in eval mode


def attach_panels(policy: nn.Module, features: Iterable[np.ndarray]) -> None:
    """Batch-compute the embeddings of these splits in every encoder copy of ``policy``."""
    found = extractors(policy)
    for values in features:
        for extractor in found:
            extractor.attach_panel(values)


class EncoderWarmup(BaseCallback):
    """Keep the encoder frozen for the first ``steps`` environment steps, then train it."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.released = steps == 0

    def _on_training_start(self) -> None:
        if not self.released and self.model.num_timesteps < self.steps:
            set_encoder_trainable(self.model.policy, False)
        else:
            self.released = True

    def _on_step(self) -> bool:
        if not self.released and self.num_timesteps >= self.steps:
            set_encoder_trainable(self.model.policy, True)
            self.released = True
            log.info("hybrid: encoder trainable from step %d", self.num_timesteps)
        return True


def encoder_parameters(policy: nn.Module) -> Iterable[torch.nn.Parameter]:
    for extractor in extractors(policy):
        yield from extractor.encoder.parameters()
