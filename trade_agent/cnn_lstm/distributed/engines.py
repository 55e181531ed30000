"""How one rank turns micro-batch losses into parameter updates.

Three engines behind one interface, so :class:`~trade_agent.cnn_lstm.trainer.CNNLSTMTrainer`
has a single loop:

- :class:`LocalEngine`: one process; AdamW, gradient clipping, autocast and (CUDA fp16)
  GradScaler, learning-rate schedule.
- :class:`DDPEngine`: the same under ``torch.nn.parallel.DistributedDataParallel`` (torchrun);
  gradients are all-reduced on the last micro-batch of each step only.
- :class:`DeepSpeedEngine`: ``deepspeed.initialize`` with our AdamW and schedule (a client
  optimizer: no JIT-compiled fused Adam), ZeRO sharding, bf16/fp16, its own clipping.

Ranks average gradients, so a rank's loss is its share of the *global* batch loss times
``loss_multiplier``; the average is then exactly the gradient of the global batch loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trade_agent.cnn_lstm.device import autocast_dtype
from trade_agent.cnn_lstm.model import CNNLSTM
from trade_agent.errors import TrainingError
from trade_agent.io import atomic_path

STATE_FILE = "state.pt"


class LocalEngine:
    """One process: plain PyTorch."""

    def __init__(
        self,
        model: CNNLSTM,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        grad_clip: float,
        precision: str,
        device: torch.device,
    ) -> None:
        self.module, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.grad_clip, self.device = grad_clip, device
        self.autocast = autocast_dtype(precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.type == "cuda")
        self.loss_multiplier = 1.0
        self.optimizer.zero_grad(set_to_none=True)

    def _network(self) -> nn.Module:
        return self.module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        context = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with context:
            logits, predicted = self._network()(x)
        return logits, predicted

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    @contextlib.contextmanager
    def micro_batch(self, last: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward; ``last`` ends the step."""
        yield

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        """Apply the accumulated gradients and advance the schedule."""
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def discard(self) -> None:
        """Drop the gradients accumulated so far in this step."""
        self.optimizer.zero_grad(set_to_none=True)

    def cancel(self, loss: torch.Tensor | None, probe: Callable[[], torch.Tensor]) -> None:
        """Abandon a micro-batch whose forward pass ran out of memory on some rank."""

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Full fp32 weights (every rank calls it; collective under ZeRO-3)."""
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    # -- checkpoints ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def save_checkpoint(self, directory: Path, tag: str, client_state: dict[str, Any], is_main: bool) -> None:
        """Replicated state: rank 0 writes it (a plain state-dict file, loaded weights-only)."""
        if is_main:
            with atomic_path(directory / tag / STATE_FILE) as tmp:
                torch.save({**client_state, **self.state()}, tmp)

    def load_checkpoint(self, directory: Path, tag: str) -> dict[str, Any]:
        state: dict[str, Any] = torch.load(directory / tag / STATE_FILE, map_location=self.device, weights_only=True)
        self.load_state(state)
        return state


class DDPEngine(LocalEngine):
    """torchrun / DistributedDataParallel: replicated weights, all-reduced gradients."""

    def __init__(self, *args: Any, world_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # No buffer broadcast in forward: an out-of-memory rank re-enters forward (see cancel)
        # and the ranks' collectives must stay in step. (Distributed runs use LayerNorm.)
        self.ddp = nn.parallel.DistributedDataParallel(self.module, device_ids=device_ids, broadcast_buffers=False)
        self.loss_multiplier = float(world_size)
        self._syncing = False

    def _network(self) -> nn.Module:
        return self.ddp

    def train(self, mode: bool = True) -> None:
        self.ddp.train(mode)

    @contextlib.contextmanager
    def micro_batch(self, last: bool) -> Iterator[None]:
        # Only the step's last backward all-reduces; earlier ones just accumulate locally.
        self._syncing = last
        with contextlib.nullcontext() if last else self.ddp.no_sync():
            yield

    def cancel(self, loss: torch.Tensor | None, probe: Callable[[], torch.Tensor]) -> None:
        """A synchronising forward pass leaves DDP waiting for a backward on every rank:
        complete it with zero-weighted losses (a one-sample pass where the forward failed).

        That all-reduce averages the gradients accumulated so far early; the step's final
        all-reduce then adds the average of the rest, so the step's gradient is unchanged.
        """
        if self._syncing:
            self.backward((loss if loss is not None else probe()) * 0.0)


class DeepSpeedEngine:
    """``deepspeed.initialize`` around our model, AdamW and schedule.

    We mark gradient-accumulation boundaries ourselves, so the number of micro-batches per
    step may change (out-of-memory back-off) without reconfiguring DeepSpeed.
    """

    def __init__(
        self,
        model: CNNLSTM,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        config: dict[str, Any],
        world_size: int,
    ) -> None:
        import deepspeed

        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self.module: CNNLSTM = self.engine.module
        self.device = self.engine.device
        self.input_dtype = next(self.module.parameters()).dtype
        self.loss_multiplier = float(world_size)
        self.zero_stage = int(config.get("zero_optimization", {}).get("stage", 0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, predicted = self.engine(x.to(self.device, self.input_dtype))
        return logits, predicted

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    @contextlib.contextmanager
    def micro_batch(self, last: bool) -> Iterator[None]:
        self.engine.set_gradient_accumulation_boundary(last)
        yield

    def backward(self, loss: torch.Tensor) -> None:
        # Our losses are already normalised over the global batch: no division by the
        # configured accumulation steps. step() on every micro-batch is DeepSpeed's
        # contract; it updates (clip, optimizer, schedule) only at a boundary.
        self.engine.backward(loss, scale_wrt_gas=False)
        self.engine.step()

    def step(self) -> None:
        """Nothing left to do: the boundary micro-batch's backward stepped."""

    def cancel(self, loss: torch.Tensor | None, probe: Callable[[], torch.Tensor]) -> None:
        """Nothing to undo: up to ZeRO-2 DeepSpeed communicates in backward, not in forward
        (under ZeRO-3 a forward out-of-memory error relaunches the run instead)."""

    def discard(self) -> None:
        # The trainer never restarts a DeepSpeed step in place (it relaunches instead).
        raise TrainingError("DeepSpeed's partially reduced gradients cannot be discarded")

    @property
    def learning_rate(self) -> float:
        return float(self.engine.get_lr()[0])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        from deepspeed.utils import safe_get_full_fp32_param

        state: dict[str, torch.Tensor] = {}
        for name, param in self.module.named_parameters():
            full = safe_get_full_fp32_param(param)  # the fp32 master copy (gathered under ZeRO-3)
            state[name] = (full if full is not None else param.detach()).float().cpu().clone()
        for name, buffer in self.module.named_buffers():
            state[name] = (buffer.float() if buffer.is_floating_point() else buffer).detach().cpu().clone()
        return state

    def save_checkpoint(self, directory: Path, tag: str, client_state: dict[str, Any], is_main: bool) -> None:
        """Collective: every rank writes its ZeRO shard, rank 0 the module and client state."""
        self.engine.save_checkpoint(str(directory), tag=tag, client_state=client_state, save_latest=False)

    def load_checkpoint(self, directory: Path, tag: str) -> dict[str, Any]:
        # DeepSpeed checkpoints are pickles: only ever read from this run's own directory.
        path, client_state = self.engine.load_checkpoint(str(directory), tag=tag)
        if path is None:
            raise TrainingError(f"{directory / tag}: DeepSpeed could not load this checkpoint; delete the directory")
        return dict(client_state)


Engine = LocalEngine | DeepSpeedEngine
