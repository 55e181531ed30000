"""Supervised trainer for the CNN-LSTM: AdamW, warm-up + cosine LR, early stopping,
gradient clipping, mixed precision, atomic per-epoch checkpoints and exact resume.

Determinism: the model is initialised from ``seed``; batch order comes from a dedicated
``torch.Generator`` and dropout from torch's global RNG, and both states go into every
checkpoint, so a run killed after epoch k and resumed ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trade_agent.config import CnnLstmConfig
from trade_agent.evaluation.metrics import prediction_metrics
from trade_agent.io import atomic_path
from trade_agent.models.cnn_lstm import CNNLSTM
from trade_agent.training.device import autocast_dtype
from trade_agent.training.windows import WindowData

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainOutcome:
    """What :meth:`CNNLSTMTrainer.fit` returns."""

    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def class_weights(direction: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes; 0 for absent classes)."""
    counts = torch.bincount(direction, minlength=3).double()
    present = counts > 0
    weights = torch.zeros(3, dtype=torch.float64)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights.float()


class CNNLSTMTrainer:
    """Train a :class:`CNNLSTM` on :class:`WindowData`.

    Args:
        model: the network (already on ``device``).
        data: windows and targets.
        config: the ``cnn_lstm`` params section.
        device: where to train.
        seed: seeds the batch order.
        checkpoint_dir: where per-epoch checkpoints go (``None`` disables them). Keep it
            outside DVC outputs: DVC deletes outputs before re-running a stage.
        on_epoch: called with ``(epoch, logged metrics)`` after each epoch (dvclive).
    """

    def __init__(
        self,
        model: CNNLSTM,
        data: WindowData,
        config: CnnLstmConfig,
        device: torch.device,
        seed: int,
        checkpoint_dir: Path | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> None:
        self.model, self.data, self.config, self.device = model, data, config, device
        self.checkpoint_dir = checkpoint_dir
        self.on_epoch = on_epoch
        self.generator = torch.Generator().manual_seed(seed)
        train_ends = data.ends["train"]
        if len(train_ends) == 0:
            raise ValueError("no training windows; the features stage produced an empty train split")
        train_returns = data.returns[train_ends]
        # Regression in units of the training returns' spread keeps both losses O(1).
        self.return_scale = float(train_returns.std()) or 1.0
        weights = class_weights(data.direction[train_ends]) if config.class_weighting else torch.ones(3)
        self.class_weights = weights.to(device)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.steps_per_epoch = math.ceil(len(train_ends) / config.batch_size)
        total, warmup = config.epochs * self.steps_per_epoch, config.warmup_epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(config.lr_schedule, warmup, total)
        )
        self.autocast = autocast_dtype(config.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16" and device.type == "cuda")

    # -- one pass ------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _loss(self, logits: torch.Tensor, predicted: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        direction = self.data.direction[ends].to(self.device)
        target = (self.data.returns[ends] / self.return_scale).to(self.device)
        classification = F.cross_entropy(logits.float(), direction, weight=self.class_weights)
        regression = F.huber_loss(predicted.float(), target)
        return classification + self.config.regression_weight * regression

    def _train_epoch(self) -> float:
        self.model.train()
        ends = self.data.ends["train"]
        order = ends[torch.randperm(len(ends), generator=self.generator)]
        total, count = 0.0, 0
        for batch in order.split(self.config.batch_size):
            x = self.data.windows(batch).to(self.device, non_blocking=True)
            with self._autocast():
                logits, predicted = self.model(x)
            loss = self._loss(logits, predicted, batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.config.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        return total / max(count, 1)

    @torch.no_grad()
    def predict(self, ends: torch.Tensor, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray, float]:
        """(class probabilities, predicted returns in log-return units, loss) for ``ends``."""
        self.model.eval()
        probs, preds, loss_sum = [], [], 0.0
        for batch in ends.split(batch_size):
            x = self.data.windows(batch).to(self.device)
            with self._autocast():
                logits, predicted = self.model(x)
            if self.data.direction[batch].min() >= 0:
                loss_sum += float(self._loss(logits, predicted, batch)) * len(batch)
            probs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
            preds.append((predicted.float() * self.return_scale).cpu().numpy())
        if not probs:
            return np.zeros((0, 3)), np.zeros(0), float("nan")
        return np.concatenate(probs), np.concatenate(preds), loss_sum / max(len(ends), 1)

    def evaluate(self, split: str) -> dict[str, float]:
        """Loss and :func:`prediction_metrics` on one split, keys prefixed ``<split>/``."""
        ends = self.data.ends[split]
        probs, predicted, loss = self.predict(ends)
        metrics = prediction_metrics(
            self.data.direction[ends].numpy(), probs.argmax(1), self.data.returns[ends].numpy(), predicted
        )
        return {f"{split}/loss": loss, **{f"{split}/{k}": v for k, v in metrics.items()}}

    # -- checkpoints ----------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / CHECKPOINT_FILE if self.checkpoint_dir else None

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.checkpoint_path is None:
            return
        payload = {
            **state,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
        }
        if torch.cuda.is_available():
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(payload, tmp)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        path = self.checkpoint_path
        if path is None or not path.is_file():
            return None
        state: dict[str, Any] = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.generator.set_state(state["generator"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        return state

    # -- the loop -------------------------------------------------------------------

    def fit(self) -> TrainOutcome:
        """Train until ``epochs`` or early stopping; the model ends with the best weights."""
        resumed = self._load_checkpoint()
        state: dict[str, Any] = {
            "epoch": 0,
            "history": [],
            "best_val_loss": math.inf,
            "best_epoch": 0,
            "bad_epochs": 0,
            "best_model": copy.deepcopy(self.model.state_dict()),
        }
        if resumed is not None:
            state.update({k: resumed[k] for k in state})
            log.info("resuming from %s after epoch %d", self.checkpoint_path, state["epoch"])
            if self.on_epoch is not None:  # replay so the curves cover the whole run
                for entry in state["history"]:
                    self.on_epoch(int(entry["epoch"]), entry)
        start = int(state["epoch"])
        stopped_early = state["bad_epochs"] >= self.config.patience
        for epoch in _progress(range(start + 1, self.config.epochs + 1), total=self.config.epochs, done=start):
            if stopped_early:
                break
            lr = float(self.scheduler.get_last_lr()[0])  # the rate this epoch starts with
            train_loss = self._train_epoch()
            logged = {"train/loss": train_loss, "train/lr": lr}
            logged |= self.evaluate("val")
            state["history"].append({"epoch": epoch, **logged})
            if logged["val/loss"] < state["best_val_loss"]:
                state.update(best_val_loss=logged["val/loss"], best_epoch=epoch, bad_epochs=0)
                state["best_model"] = copy.deepcopy(self.model.state_dict())
            else:
                state["bad_epochs"] += 1
            stopped_early = state["bad_epochs"] >= self.config.patience
            state["epoch"] = epoch
            self._save_checkpoint(state)
            log.info(
                "epoch %d/%d train/loss %.4f val/loss %.4f val/accuracy %.3f",
                epoch,
                self.config.epochs,
                train_loss,
                logged["val/loss"],
                logged["val/accuracy"],
            )
            if self.on_epoch is not None:
                self.on_epoch(epoch, logged)
        self.model.load_state_dict(state["best_model"])
        return TrainOutcome(
            history=state["history"],
            best_epoch=int(state["best_epoch"]),
            stopped_early=bool(stopped_early),
            resumed_from_epoch=start,
        )


def _lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _progress(epochs: range, total: int, done: int) -> Iterator[int]:
    """A rich progress bar on a TTY; plain iteration in CI and pipes."""
    if not sys.stderr.isatty() or os.environ.get("CI"):
        yield from epochs
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("training", total=total, completed=done)
        for epoch in epochs:
            yield epoch
            progress.advance(task)
