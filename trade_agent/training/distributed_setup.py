"""What a distributed run needs before any process starts: checks and the DeepSpeed config.

Everything here runs in the launching process, so a bad setting fails in a second with one
line naming the key, instead of N ranks failing after their imports.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from trade_agent.config import Params
from trade_agent.errors import ConfigError, InputError

# Keys of a user's DeepSpeed JSON that would replace the trainer's own AdamW and schedule.
_OWNED_KEYS = ("optimizer", "scheduler")
_NEVER_PRINT = 2**31 - 1  # steps_per_print: our own logging reports progress


def precision_of(params: Params) -> str:
    return params.distributed.precision or params.cnn_lstm.precision


def grad_clip_of(params: Params) -> float:
    d = params.distributed
    return params.cnn_lstm.grad_clip if d.grad_clip is None else d.grad_clip


def processes_per_node(params: Params, cuda_devices: int | None = None) -> int:
    """``distributed.nproc``, or one per visible GPU (2 on a CPU-only machine) when 0."""
    if params.distributed.nproc:
        return params.distributed.nproc
    devices = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    return devices or 2


def read_user_config(path: str) -> dict[str, Any]:
    """Raises: InputError naming the file when it is missing, not JSON, or owns our optimizer."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: DeepSpeed config not found; fix distributed.deepspeed_config / --deepspeed-config")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(config, dict):
        raise InputError(f"{file}: expected a JSON object of DeepSpeed settings")
    owned = [key for key in _OWNED_KEYS if key in config]
    if owned:
        raise InputError(
            f"{file}: remove '{owned[0]}': the trainer passes its own AdamW and learning-rate schedule to "
            "DeepSpeed (set cnn_lstm.learning_rate / lr_schedule / weight_decay instead)"
        )
    return config


def deepspeed_config(params: Params, cuda: bool) -> dict[str, Any]:
    """DeepSpeed config from the ``distributed`` section, then the user's JSON on top.

    Batch keys (micro-batch, accumulation, train batch) are filled in by the trainer once
    the batch plan is known (it may be probed).
    """
    d = params.distributed
    precision = precision_of(params)
    zero: dict[str, Any] = {"stage": d.zero_stage}
    if d.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cuda}
    config: dict[str, Any] = {
        "zero_optimization": zero,
        "gradient_clipping": grad_clip_of(params),
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": _NEVER_PRINT,
        "wall_clock_breakdown": False,
    }
    if d.deepspeed_config:
        config = _merge(config, read_user_config(d.deepspeed_config))
    return config


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def check_distributed(params: Params, train_windows: int, cuda: bool | None = None) -> None:
    """Fail fast on settings that cannot work on this machine or with this data.

    Raises:
        ConfigError / InputError: with the key and the fix.
    """
    d = params.distributed
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if d.backend == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            "distributed.backend deepspeed: the deepspeed package is not installed; pip install deepspeed"
        )
    if d.offload and not cuda:
        raise ConfigError(
            "distributed.offload / --offload: ZeRO offload moves optimizer state from GPU to host memory, and this "
            "machine has no CUDA device (the state is already in host memory); drop --offload"
        )
    if d.offload and (d.backend != "deepspeed" or d.zero_stage == 0):
        raise ConfigError("distributed.offload needs backend deepspeed with zero_stage >= 1")
    precision = precision_of(params)
    if precision == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs CUDA (loss scaling on GPU); use fp32 (or bf16) on CPU")
    if d.hostfile and not Path(d.hostfile).is_file():
        raise InputError(f"{d.hostfile}: hostfile not found; fix distributed.hostfile / --hostfile")
    if d.hostfile and d.backend != "deepspeed":
        raise ConfigError("distributed.hostfile is DeepSpeed's; with torchrun pass --nnodes/--node-rank/--master-addr")
    if d.deepspeed_config:
        if d.backend != "deepspeed":
            raise ConfigError("distributed.deepspeed_config needs backend deepspeed")
        read_user_config(d.deepspeed_config)
    world = processes_per_node(params) * d.nnodes
    if cuda and d.nproc > torch.cuda.device_count():
        raise ConfigError(
            f"distributed.nproc {d.nproc} exceeds the {torch.cuda.device_count()} visible GPUs; use 0 (one per GPU)"
        )
    batch = params.cnn_lstm.batch_size
    if d.micro_batch_per_device == "auto" and batch != "auto" and batch < world * d.gradient_accumulation:
        raise ConfigError(
            f"cnn_lstm.batch_size {batch} is smaller than {world} processes x {d.gradient_accumulation} "
            "accumulation steps; raise batch_size or use fewer processes"
        )
    if train_windows < world:
        raise InputError(
            f"{train_windows} training windows cannot be shared by {world} processes; use more data or fewer processes"
        )
