"""Supervised trainer for the CNN-LSTM: AdamW, warm-up + cosine LR, early stopping,
gradient clipping, mixed precision, micro-batching with out-of-memory back-off, atomic
per-epoch checkpoints and exact resume, on one process or several (DDP, DeepSpeed).

Determinism: the model is initialised from ``seed``; batch order comes from a dedicated
``torch.Generator`` and dropout from torch's global RNG, and both states go into every
checkpoint, so a run killed after epoch k and resumed ends with the same weights as an
uninterrupted run.

Several processes: every rank draws the same batch order and takes its contiguous shard
of each global batch (no overlap). Losses are normalised over the global batch, so with
LayerNorm and no dropout N processes compute the single-process step up to rounding.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trade_agent.cnn_lstm import faults
from trade_agent.cnn_lstm.distributed.engines import DDPEngine, DeepSpeedEngine, Engine, LocalEngine
from trade_agent.cnn_lstm.distributed.process_group import Ranks
from trade_agent.cnn_lstm.memory import BatchPlan, is_out_of_memory, probe_micro_batch, release_memory
from trade_agent.cnn_lstm.metrics import prediction_metrics
from trade_agent.cnn_lstm.model import CNNLSTM
from trade_agent.cnn_lstm.windows import WindowData
from trade_agent.config import CnnLstmConfig
from trade_agent.errors import ConfigError, TrainingError, TrainingInterrupted
from trade_agent.io import atomic_path, read_json, write_json
from trade_agent.progress import Progress

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
COMPLETE_MARKER = "complete.json"
OOM_HINT = "oom-hint.json"  # a relaunch after an unrecoverable out-of-memory error starts smaller


class RelaunchNeeded(TrainingError):
    """This attempt cannot go on, but a relaunch from the last checkpoint can (retryable)."""

    transient = True


EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class Parallelism:
    """How the ranks share training (the default: one local process).

    Attributes:
        backend: ``local``, ``ddp`` (torchrun) or ``deepspeed``.
        micro_batch: samples per forward/backward per rank; ``None``: the global batch
            ``cnn_lstm.batch_size`` split evenly (or probed when it is ``auto``).
        gradient_accumulation: micro-batches per step per rank (when ``micro_batch`` is None).
        precision / grad_clip: the distributed run's (``distributed`` params, else cnn_lstm's).
        deepspeed_config: generated config; the batch keys are filled in by the trainer.
    """

    backend: str = "local"
    micro_batch: int | None = None
    gradient_accumulation: int = 1
    precision: str | None = None
    grad_clip: float | None = None
    deepspeed_config: dict[str, Any] | None = None


@dataclass
class TrainOutcome:
    """What :meth:`CNNLSTMTrainer.fit` returns."""

    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    batch: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0  # wall time of the training passes (not evaluation), this session


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
        data: windows and targets (every rank holds all of it and reads its shard).
        config: the ``cnn_lstm`` params section.
        device: where to train.
        seed: seeds the batch order.
        checkpoint_dir: where per-epoch checkpoints go (``None`` disables them). Keep it
            outside DVC outputs: DVC deletes outputs before re-running a stage.
        on_epoch: called with ``(epoch, logged metrics)`` after each epoch (dvclive).
        ranks: this process's rank among the training processes.
        parallelism: backend and batch split across ranks.
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
        ranks: Ranks | None = None,
        parallelism: Parallelism | None = None,
    ) -> None:
        self.model, self.data, self.config, self.device = model, data, config, device
        self.ranks = ranks or Ranks.single()
        self.parallelism = parallelism or Parallelism()
        self.checkpoint_dir = checkpoint_dir
        self.on_epoch = on_epoch
        self.generator = torch.Generator().manual_seed(seed)
        train_ends = data.ends["train"]
        if len(train_ends) < self.ranks.world_size:
            raise ConfigError(
                f"{len(train_ends)} training windows for {self.ranks.world_size} processes; "
                "use fewer processes or more data"
            )
        train_returns = data.returns[train_ends]
        # Regression in units of the training returns' spread keeps both losses O(1).
        self.return_scale = float(train_returns.std()) or 1.0
        weights = class_weights(data.direction[train_ends]) if config.class_weighting else torch.ones(3)
        self.class_weights, self._cpu_class_weights = weights.to(device), weights
        # Injected faults fire inside the network's forward, where real allocations fail
        # (after DDP's own pre-forward collectives).
        self.steps_done = 0
        self._fault_hook = model.register_forward_pre_hook(self._inject_faults)
        self.plan = self._batch_plan()
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.steps_per_epoch = math.ceil(len(train_ends) / self.plan.global_batch)
        total, warmup = config.epochs * self.steps_per_epoch, config.warmup_epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(config.lr_schedule, warmup, total)
        )
        self.deepspeed_config: dict[str, Any] | None = None
        self.engine = self._build_engine()
        self._fitted = False  # after fit(): evaluate with the plain best-weights model

    # -- batch sizes and engine -------------------------------------------------------

    def _batch_plan(self) -> BatchPlan:
        world, p = self.ranks.world_size, self.parallelism
        n_train = len(self.data.ends["train"])
        if p.micro_batch is not None:
            micro = p.micro_batch
            global_batch = micro * world * p.gradient_accumulation
        elif self.config.batch_size == "auto":
            # Powers of two from the largest that the data or max_batch_size allows.
            start = 2 ** int(math.log2(min(self.config.max_batch_size, math.ceil(n_train / world))))
            micro = probe_micro_batch(self._try_micro_batch, start, self.config.min_batch_size, self.ranks.any)
            global_batch = micro * world * p.gradient_accumulation
        else:
            global_batch = int(self.config.batch_size)
            micro = math.ceil(global_batch / (world * p.gradient_accumulation))
        plan = BatchPlan(global_batch, micro, world, minimum=min(self.config.min_batch_size, micro))
        hint_file = self.checkpoint_dir / OOM_HINT if self.checkpoint_dir else None
        previous = read_json(hint_file) if hint_file is not None and hint_file.is_file() else None
        if previous is not None and previous["micro_batch"] < plan.micro_batch:
            log.warning("a previous attempt ran out of memory: micro-batch %d", previous["micro_batch"])
            plan.oom_events.append({"step": previous["step"], "from": plan.micro_batch, "to": previous["micro_batch"]})
            plan.micro_batch = previous["micro_batch"]
        log.info(
            "batch: %d samples per step = %d rank(s) x %d micro-batch(es) of <= %d",
            plan.global_batch,
            world,
            plan.accumulation,
            plan.micro_batch,
        )
        return plan

    def _try_micro_batch(self, size: int) -> None:
        """Forward and backward on ``size`` training windows; leaves no gradients or RNG use."""
        rows = self.ranks.shard(self.data.ends["train"])[:size]
        rng = torch.get_rng_state()
        self.model.train()
        try:
            logits, predicted = self.model(self.data.windows(rows).to(self.device))
            (logits.float().sum() + predicted.float().sum()).backward()
        finally:
            self.model.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)

    def _inject_faults(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if module.training:
            faults.before_forward(len(inputs[0]), self.steps_done, self.ranks.rank)

    def _build_engine(self) -> Engine:
        p = self.parallelism
        precision = p.precision or self.config.precision
        grad_clip = self.config.grad_clip if p.grad_clip is None else p.grad_clip
        if p.backend == "deepspeed":
            self.deepspeed_config = {
                **(p.deepspeed_config or {}),
                "train_micro_batch_size_per_gpu": self.plan.micro_batch,
                "gradient_accumulation_steps": self.plan.accumulation,
                "train_batch_size": self.plan.micro_batch * self.plan.accumulation * self.ranks.world_size,
            }
            return DeepSpeedEngine(
                self.model, self.optimizer, self.scheduler, self.deepspeed_config, self.ranks.world_size
            )
        args = (self.model, self.optimizer, self.scheduler, grad_clip, precision, self.device)
        if p.backend == "ddp":
            return DDPEngine(*args, world_size=self.ranks.world_size)
        return LocalEngine(*args)

    # -- one step -------------------------------------------------------------------

    def _normalisers(self, rows: torch.Tensor) -> tuple[float, float]:
        """Class-weight total and row count of a whole (global) batch or split."""
        labelled = self.data.direction[rows] >= 0
        weight = float(self._cpu_class_weights[self.data.direction[rows][labelled]].sum())
        return weight or 1.0, float(max(int(labelled.sum()), 1))

    def _loss_sums(
        self, logits: torch.Tensor, predicted: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-weighted cross-entropy sum and Huber sum over the labelled ``rows``."""
        direction = self.data.direction[rows].to(self.device)
        labelled = direction >= 0
        target = (self.data.returns[rows] / self.return_scale).to(self.device)
        classification = F.cross_entropy(
            logits.float(), direction.clamp(min=0), weight=self.class_weights, reduction="none"
        )
        regression = F.huber_loss(predicted.float(), target, reduction="none")
        return (classification * labelled).sum(), (regression * labelled).sum()

    def _micro_loss(self, rows: torch.Tensor, norms: tuple[float, float]) -> torch.Tensor:
        logits, predicted = self.engine.forward(self.data.windows(rows))
        classification, regression = self._loss_sums(logits, predicted, rows)
        return classification / norms[0] + self.config.regression_weight * regression / norms[1]

    def _step(self, batch: torch.Tensor) -> float:
        """One optimizer step on a global batch; returns this rank's share of its loss.

        An out-of-memory error in a forward pass (on any rank: the ranks agree before
        backward) halves the micro-batch and re-splits what is left of this rank's shard;
        the gradients accumulated so far stay valid because every micro-batch is
        normalised over the global batch. One in a single-process backward restarts the step.
        """
        self.steps_done += 1
        norms = self._normalisers(batch)
        shard = self.ranks.shard(batch)
        done, share = 0, 0.0
        max_left = math.ceil(len(batch) / self.ranks.world_size)
        while True:
            n_micro = max(math.ceil(max_left / self.plan.micro_batch), 1)
            chunks = shard[done:].tensor_split(n_micro)
            for index, rows in enumerate(chunks):
                last = index == n_micro - 1
                with self.engine.micro_batch(last):
                    loss, oom = self._guarded_forward(rows, batch, norms)
                    if self.ranks.any(oom is not None):
                        self.engine.cancel(loss, lambda: self._micro_loss(batch[:1], norms))
                        self.plan.shrink(self.steps_done, oom or torch.OutOfMemoryError("on another rank"))
                        max_left = self.ranks.max(len(shard) - done)
                        break
                    assert loss is not None
                    try:
                        self.engine.backward(loss * self.engine.loss_multiplier)
                    except RuntimeError as exc:
                        if not is_out_of_memory(exc):
                            raise
                        if self.ranks.distributed or isinstance(self.engine, DeepSpeedEngine):
                            self._leave_oom_hint(exc)  # peers are inside the all-reduce: relaunch smaller
                        self.engine.discard()  # partial gradients of this step are unusable
                        self.plan.shrink(self.steps_done, exc)
                        done, share, max_left = 0, 0.0, len(shard)
                        break
                done += len(rows)
                share += float(loss.detach()) if len(rows) else 0.0
            else:
                break
        self.engine.step()
        return share

    def _leave_oom_hint(self, error: RuntimeError) -> NoReturn:
        """Record the halved micro-batch for the relaunch, then fail this attempt (retryable)."""
        halved = self.plan.micro_batch // 2
        if halved < self.plan.minimum or self.checkpoint_dir is None:
            self.plan.shrink(self.steps_done, error)  # raises the give-up error
        assert self.checkpoint_dir is not None
        write_json(self.checkpoint_dir / OOM_HINT, {"micro_batch": halved, "step": self.steps_done})
        raise RelaunchNeeded(
            f"out of memory at micro-batch {self.plan.micro_batch} (step {self.steps_done}) on rank "
            f"{self.ranks.rank}; relaunching from the last checkpoint with micro-batch {halved}"
        )

    def _guarded_forward(
        self, rows: torch.Tensor, batch: torch.Tensor, norms: tuple[float, float]
    ) -> tuple[torch.Tensor | None, RuntimeError | None]:
        """(loss, None), or (None, the error) when the forward pass ran out of memory."""
        try:
            if len(rows):
                return self._micro_loss(rows, norms), None
            # This rank has no samples left in the step but must join the gradient
            # reduction: a zero-weighted pass over one sample.
            return self._micro_loss(batch[:1], norms) * 0.0, None
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            if self.ranks.distributed and getattr(self.engine, "zero_stage", 0) == 3:
                # Peers are inside ZeRO-3's parameter all-gather of this forward.
                self._leave_oom_hint(exc)
            release_memory()
            return None, RuntimeError(str(exc))  # not the original: its traceback pins the activations

    def _batches_per_epoch(self) -> int:
        return math.ceil(len(self.data.ends["train"]) / self.plan.global_batch)

    def _train_epoch(self, progress: Progress | None = None, epoch: int = 0) -> float:
        self.engine.train()
        ends = self.data.ends["train"]
        order = ends[torch.randperm(len(ends), generator=self.generator)]
        total = 0.0
        per_epoch = self._batches_per_epoch()
        for i, batch in enumerate(order.split(self.plan.global_batch), 1):
            total += self._step(batch) * len(batch)
            if progress is not None:
                progress.update((epoch - 1) * per_epoch + i, f"epoch {epoch}/{self.config.epochs}")
        return float(self.ranks.sum(torch.tensor([total]))[0]) / max(len(ends), 1)

    @torch.no_grad()
    def predict(self, ends: torch.Tensor, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray, float]:
        """(class probabilities, predicted returns in log-return units, loss) for ``ends``.

        Each rank predicts its shard; the results are gathered in order on every rank.
        """
        forward = self.engine.forward if not self._fitted else self._plain_forward
        self.engine.train(False)
        self.model.eval()
        part = self.ranks.shard(ends)
        probs, preds = [torch.zeros((0, 3))], [torch.zeros(0)]
        sums = torch.zeros(2, dtype=torch.float64)
        batches = list(part.split(batch_size))
        # Every rank runs the same number of forwards (ZeRO-3 gathers parameters in each).
        for _ in range(self.ranks.max(len(batches)) - len(batches) if len(ends) else 0):
            forward(self.data.windows(ends[:1]))
        for batch in batches:
            logits, predicted = forward(self.data.windows(batch))
            classification, regression = self._loss_sums(logits, predicted, batch)
            sums += torch.tensor([float(classification), float(regression)], dtype=torch.float64)
            probs.append(torch.softmax(logits.float(), dim=-1).cpu())
            preds.append((predicted.float() * self.return_scale).cpu())
        if len(ends) == 0:
            return np.zeros((0, 3)), np.zeros(0), float("nan")
        sums = self.ranks.sum(sums)
        norms = self._normalisers(ends)
        loss = float(sums[0]) / norms[0] + self.config.regression_weight * float(sums[1]) / norms[1]
        all_probs = self.ranks.gather_rows(torch.cat(probs), len(ends))
        all_preds = self.ranks.gather_rows(torch.cat(preds), len(ends))
        return all_probs.numpy().astype(np.float64), all_preds.numpy().astype(np.float64), loss

    def _plain_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, predicted = self.model(x.to(self.device))
        return logits, predicted

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
    def sharded_checkpoints(self) -> bool:
        """Launched runs (any number of ranks) write ``epoch-N/`` directories per rank."""
        return self.parallelism.backend != "local"

    @property
    def checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / CHECKPOINT_FILE if self.checkpoint_dir else None

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch_rng": torch.get_rng_state(), "generator": self.generator.get_state()}
        # CPU kernels (LayerNorm's backward among them) reduce in an order that depends on
        # the intra-op thread count, so it is process state like the RNGs: with
        # cnn_lstm.threads 0 it comes from OMP_NUM_THREADS, which a resumed shell may not share.
        state["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def _restore_rng(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch_rng"].cpu())
        self.generator.set_state(state["generator"].cpu())
        threads = state.get("threads")  # absent in checkpoints written before it was saved
        if threads is not None and int(threads) != torch.get_num_threads():
            log.warning(
                "the checkpoint was trained with %d intra-op threads and this process has %d: "
                "continuing with %d so the result equals an uninterrupted run",
                int(threads),
                torch.get_num_threads(),
                int(threads),
            )
            torch.set_num_threads(int(threads))
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.checkpoint_dir is None:
            return
        if self.sharded_checkpoints:
            self._save_sharded(state)
            return
        assert isinstance(self.engine, LocalEngine) and self.checkpoint_path is not None
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save({**state, **self.engine.state(), **self._rng_state()}, tmp)

    def _save_sharded(self, state: dict[str, Any]) -> None:
        """Every rank writes its part of ``epoch-NNNN/``; rank 0 marks it complete last.

        A rank killed mid-save leaves no marker, so resume falls back to the previous epoch.
        """
        assert self.checkpoint_dir is not None
        tag = f"epoch-{int(state['epoch']):04d}"
        self.engine.save_checkpoint(self.checkpoint_dir, tag, state, self.ranks.is_main)
        with atomic_path(self.checkpoint_dir / tag / f"rng-rank{self.ranks.rank}.pt") as tmp:
            torch.save(self._rng_state(), tmp)
        self.ranks.barrier()
        if self.ranks.is_main:
            write_json(
                self.checkpoint_dir / tag / COMPLETE_MARKER, {"epoch": state["epoch"], "ranks": self.ranks.world_size}
            )
            for older in self.checkpoint_dir.glob("epoch-*"):
                if older.name != tag:
                    shutil.rmtree(older, ignore_errors=True)
        self.ranks.barrier()

    def _load_checkpoint(self) -> dict[str, Any] | None:
        if self.checkpoint_dir is None:
            return None
        if self.sharded_checkpoints:
            return self._load_sharded()
        path = self.checkpoint_path
        if path is None or not path.is_file():
            return None
        assert isinstance(self.engine, LocalEngine)
        state: dict[str, Any] = torch.load(path, map_location=self.device, weights_only=True)
        self.engine.load_state(state)
        self._restore_rng(state)
        return state

    def _load_sharded(self) -> dict[str, Any] | None:
        assert self.checkpoint_dir is not None
        markers = sorted(self.checkpoint_dir.glob(f"epoch-*/{COMPLETE_MARKER}"))
        if not markers:
            return None
        marker = read_json(markers[-1])
        if marker["ranks"] != self.ranks.world_size:
            raise ConfigError(
                f"{markers[-1].parent}: checkpoint written by {marker['ranks']} processes, this run has "
                f"{self.ranks.world_size}; use --nproc {marker['ranks']} or --no-resume"
            )
        tag = markers[-1].parent.name
        state = self.engine.load_checkpoint(self.checkpoint_dir, tag)
        self._restore_rng(torch.load(self.checkpoint_dir / tag / f"rng-rank{self.ranks.rank}.pt", weights_only=True))
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
            "best_model": self.engine.full_state_dict(),
            "steps_done": 0,
        }
        if resumed is not None:
            state.update({k: resumed[k] for k in state if k in resumed})
            self.steps_done = int(state["steps_done"])
            self._restore_plan(resumed)
            where = self.checkpoint_dir if self.sharded_checkpoints else self.checkpoint_path
            log.info("resuming from %s after epoch %d", where, state["epoch"])
            if self.on_epoch is not None:  # replay so the curves cover the whole run
                for entry in state["history"]:
                    self.on_epoch(int(entry["epoch"]), entry)
        start = int(state["epoch"])
        per_epoch = self._batches_per_epoch()
        progress = (
            Progress("cnn_lstm", self.config.epochs * per_epoch, "batches", done=start * per_epoch)
            if self.ranks.is_main
            else None
        )
        try:
            with progress or contextlib.nullcontext():
                outcome = self._epochs(state, start, progress)
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupted_message(int(state["epoch"]) + 1)) from None
        return outcome

    def _interrupted_message(self, epoch: int) -> str:
        where = self.checkpoint_dir if self.sharded_checkpoints else self.checkpoint_path
        done = epoch - 1
        if where is not None and done >= 1:
            resumes = f"the checkpoint in {where} (after epoch {done}) resumes on the next run"
        elif where is not None:
            resumes = "no epoch had finished, so the next run starts over"
        else:
            resumes = "this run keeps no checkpoints, so the next run starts over"
        return f"interrupted at epoch {epoch}/{self.config.epochs}; {resumes}"

    def _epochs(self, state: dict[str, Any], start: int, progress: Progress | None) -> TrainOutcome:
        train_seconds = 0.0
        stopped_early = state["bad_epochs"] >= self.config.patience
        for epoch in range(start + 1, self.config.epochs + 1):
            if stopped_early:
                break
            lr = self.engine.learning_rate  # the rate this epoch starts with
            started = time.perf_counter()
            train_loss = self._train_epoch(progress, epoch)
            train_seconds += time.perf_counter() - started
            logged = {"train/loss": train_loss, "train/lr": lr}
            logged |= self.evaluate("val")
            state["history"].append({"epoch": epoch, **logged})
            if logged["val/loss"] < state["best_val_loss"]:
                state.update(best_val_loss=logged["val/loss"], best_epoch=epoch, bad_epochs=0)
                state["best_model"] = self.engine.full_state_dict()
            else:
                state["bad_epochs"] += 1
            stopped_early = state["bad_epochs"] >= self.config.patience
            state["epoch"], state["steps_done"] = epoch, self.steps_done
            state["batch"] = {"global": self.plan.global_batch, "micro": self.plan.micro_batch}
            state["oom_events"] = list(self.plan.oom_events)
            self._save_checkpoint(state)
            faults.after_checkpoint(epoch, self.ranks.rank)
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
        self._finish(state["best_model"])
        return TrainOutcome(
            history=state["history"],
            best_epoch=int(state["best_epoch"]),
            stopped_early=bool(stopped_early),
            resumed_from_epoch=start,
            batch=self.plan.to_dict(),
            train_seconds=train_seconds,
        )

    def _restore_plan(self, resumed: dict[str, Any]) -> None:
        """Continue with the checkpoint's batch plan (its schedule assumed that global batch)."""
        saved = resumed.get("batch")
        if saved is None:
            return
        if int(saved["global"]) != self.plan.global_batch:
            raise ConfigError(
                f"{self.checkpoint_dir}: checkpoint trained with {saved['global']} samples per step, this run has "
                f"{self.plan.global_batch} (batch_size auto probed differently); set cnn_lstm.batch_size: "
                f"{saved['global']} to resume, or --no-resume"
            )
        self.plan.micro_batch = min(self.plan.micro_batch, int(saved["micro"]))
        known = list(resumed.get("oom_events", []))
        self.plan.oom_events = known + [e for e in self.plan.oom_events if e not in known]

    def _finish(self, best: dict[str, torch.Tensor]) -> None:
        """Leave ``self.model`` a plain fp32 network with the best weights."""
        self._fault_hook.remove()
        if isinstance(self.engine, DeepSpeedEngine):  # its module may be bf16 or ZeRO-3 partitioned
            self.model = CNNLSTM(self.model.spec).to(self.device)
        self.model.load_state_dict(best)
        self._fitted = True

    def clear_checkpoints(self) -> None:
        """After success: remove what this trainer wrote (the directory if that empties it)."""
        if self.checkpoint_dir is None or not self.ranks.is_main:
            return
        (self.checkpoint_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        for tag in self.checkpoint_dir.glob("epoch-*"):
            shutil.rmtree(tag, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.checkpoint_dir.rmdir()


def _lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor
