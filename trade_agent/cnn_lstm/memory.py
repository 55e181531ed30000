"""Out-of-memory recovery and dynamic batch sizing.

A training step processes ``global_batch`` samples (across all ranks) as micro-batches of
at most ``micro_batch`` samples per rank, accumulating gradients in between. An
out-of-memory error halves the micro-batch: the optimizer step still sees the same samples
with the same loss normalisation, so recovery changes memory use, not the result.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from trade_agent.errors import TrainingError

log = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/CPU allocator failures (torch raises several types and plain RuntimeErrors)."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or (
        # CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."
        isinstance(exc, RuntimeError) and any(s in text for s in ("out of memory", "allocate memory"))
    )


def release_memory() -> None:
    """Drop what the failed step allocated before trying again."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class BatchPlan:
    """Samples per optimizer step and per micro-batch, and the back-offs that happened.

    Attributes:
        global_batch: samples per optimizer step over all ranks.
        micro_batch: samples per forward/backward on one rank.
        world_size: ranks sharing each step.
        minimum: smallest micro-batch before giving up.
        oom_events: one record per back-off (step, from, to).
    """

    global_batch: int
    micro_batch: int
    world_size: int = 1
    minimum: int = 1
    oom_events: list[dict[str, int]] = field(default_factory=list)

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step on each rank."""
        return math.ceil(math.ceil(self.global_batch / self.world_size) / self.micro_batch)

    def shrink(self, step: int, error: BaseException) -> None:
        """Halve the micro-batch after an out-of-memory error.

        Raises:
            TrainingError: the halved size would fall below ``minimum``.
        """
        halved = self.micro_batch // 2
        if halved < self.minimum:
            raise TrainingError(
                f"out of memory at micro-batch {self.micro_batch} (step {step}) and cnn_lstm.min_batch_size is "
                f"{self.minimum}; use a smaller model or sequence_length, more devices, or lower min_batch_size "
                f"({error})"
            )
        log.warning(
            "out of memory at micro-batch %d (step %d): continuing with %d x %d-sample micro-batches per step",
            self.micro_batch,
            step,
            math.ceil(math.ceil(self.global_batch / self.world_size) / halved),
            halved,
        )
        self.oom_events.append({"step": step, "from": self.micro_batch, "to": halved})
        self.micro_batch = halved
        release_memory()

    def to_dict(self) -> dict[str, object]:
        return {
            "global": self.global_batch,
            "micro_per_device": self.micro_batch,
            "accumulation": self.accumulation,
            "world_size": self.world_size,
            "oom_events": list(self.oom_events),
        }


def probe_micro_batch(
    try_batch: Callable[[int], None], start: int, minimum: int, agree: Callable[[bool], bool] = lambda oom: oom
) -> int:
    """Largest micro-batch, halving from ``start``, for which ``try_batch`` fits in memory.

    ``agree`` turns this rank's out-of-memory flag into the flag all ranks act on (any).

    Raises:
        TrainingError: not even ``minimum`` fits.
    """
    size = start
    while True:
        try:
            try_batch(size)
            oom = False
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            oom = True
        if not agree(oom):
            log.info("batch_size auto: micro-batch %d fits", size)
            return size
        release_memory()
        if size // 2 < minimum:
            raise TrainingError(
                f"batch_size auto: not even {size} samples fit in memory (cnn_lstm.min_batch_size {minimum}); "
                "use a smaller model or sequence_length, or more devices"
            )
        log.info("batch_size auto: micro-batch %d is out of memory, trying %d", size, size // 2)
        size //= 2
