"""Section ``distributed``: stage 1 on several processes (DeepSpeed or torchrun DDP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class DistributedConfig:
    """How ``--distributed`` (or ``enabled: true`` in the ``cnn_lstm`` stage) launches training.

    Attributes:
        enabled: the ``cnn_lstm`` DVC stage launches itself distributed.
        backend: ``deepspeed`` (ZeRO, its own launcher) or ``torchrun`` (plain DDP).
        nproc: processes per node. 0: one per visible GPU (CUDA), else 2 on CPU.
        threads_per_process: torch intra-op threads of each process on CPU.
        zero_stage: DeepSpeed ZeRO stage 0-3 (2 shards optimizer state and gradients).
        micro_batch_per_device: samples per forward/backward per process; ``auto`` keeps the
            global batch at ``cnn_lstm.batch_size`` (= micro x processes x accumulation), so the
            run matches a single-process run.
        gradient_accumulation: micro-batches per optimizer step on each process.
        precision: ``fp32``/``bf16``/``fp16``; null: ``cnn_lstm.precision``.
        grad_clip: global gradient-norm clip; null: ``cnn_lstm.grad_clip``.
        offload: ZeRO optimizer-state offload to host memory (CUDA only: on a CPU-only
            machine the state already lives in host memory, so it is refused).
        deepspeed_config: your own DeepSpeed JSON; its keys override the generated ones.
        nnodes / node_rank / master_addr / master_port: multi-node rendezvous (torchrun and
            DeepSpeed without a hostfile).
        hostfile: DeepSpeed hostfile (``host slots=N`` lines); the launcher starts every node.
        no_ssh: with a hostfile, every machine runs the command itself with its ``node_rank``
            and DeepSpeed's launcher starts only that machine's processes (its ``--no_ssh``:
            no ssh or pdsh between the machines; the hostfile still gives the world).
        retries: relaunches after a failed attempt; each resumes from the last complete
            checkpoint. Configuration and data errors are not retried.
        retry_backoff_s: wait before relaunch k is ``retry_backoff_s * 2**(k-1)`` seconds.
        timeout_s: collective-operation timeout (a hung peer fails the attempt after this).
    """

    enabled: bool = False
    backend: Literal["deepspeed", "torchrun"] = "deepspeed"
    nproc: int = 0
    threads_per_process: int = 1
    zero_stage: int = 2
    micro_batch_per_device: int | Literal["auto"] = "auto"
    gradient_accumulation: int = 1
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    grad_clip: float | None = None
    offload: bool = False
    deepspeed_config: str | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    hostfile: str | None = None
    no_ssh: bool = False
    retries: int = 2
    retry_backoff_s: float = 2.0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"distributed.zero_stage: must be 0, 1, 2 or 3, got {self.zero_stage}")
        for key in ("nproc", "node_rank", "retries"):
            if getattr(self, key) < 0:
                raise ConfigError(f"distributed.{key}: must be >= 0, got {getattr(self, key)}")
        for key in ("threads_per_process", "gradient_accumulation", "nnodes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"distributed.{key}: must be >= 1, got {getattr(self, key)}")
        if self.micro_batch_per_device != "auto" and self.micro_batch_per_device < 1:
            raise ConfigError(
                f"distributed.micro_batch_per_device: must be >= 1 or auto, got {self.micro_batch_per_device}"
            )
        if self.no_ssh and (not self.hostfile or self.backend != "deepspeed"):
            raise ConfigError("distributed.no_ssh is DeepSpeed's launch without ssh: it needs a hostfile (--hostfile)")
        if self.node_rank >= self.nnodes:
            raise ConfigError(f"distributed.node_rank: {self.node_rank} must be below nnodes {self.nnodes}")
        if not 0 < self.master_port < 65536:
            raise ConfigError(f"distributed.master_port: {self.master_port} is not a TCP port (1-65535)")
        if self.retry_backoff_s < 0 or self.timeout_s <= 0:
            raise ConfigError("distributed.retry_backoff_s must be >= 0 and distributed.timeout_s > 0")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ConfigError(f"distributed.grad_clip: must be >= 0 or null, got {self.grad_clip}")
