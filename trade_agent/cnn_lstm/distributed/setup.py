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

from trade_agent.cnn_lstm.device import check_precision
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
    if d.offload:
        # Our torch AdamW steps on the offloaded state (DeepSpeed would insist on its
        # JIT-built CPU Adam otherwise).
        config["zero_force_ds_cpu_optimizer"] = False
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


def hostfile_slots(path: str) -> int:
    """Total ``slots=N`` of a DeepSpeed hostfile (one ``host slots=N`` line per machine).

    Raises:
        InputError: a line without a positive slot count.
    """
    return sum(hostfile_machines(path))


def hostfile_machines(path: str) -> list[int]:
    """The slot count of each machine of a DeepSpeed hostfile, in order.

    Raises:
        InputError: a line without a positive slot count, or no machine at all.
    """
    machines: list[int] = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
        if not fields.get("slots", "").isdigit() or int(fields["slots"]) < 1:
            raise InputError(f"{path}: line {number}: expected 'host slots=N', got '{line}'")
        machines.append(int(fields["slots"]))
    if not machines:
        raise InputError(f"{path}: no 'host slots=N' lines; list one machine per line")
    return machines


def world_size(params: Params, cuda: bool) -> int:
    """Processes of the whole job: the hostfile's slots, else per node x nodes."""
    d = params.distributed
    if d.hostfile:
        return hostfile_slots(d.hostfile)
    return processes_per_node(params, torch.cuda.device_count() if cuda else 0) * d.nnodes


def check_settings(params: Params, cuda: bool) -> None:
    """Checks that need only the params (run before any data work).

    Raises:
        ConfigError / InputError: with the key and the fix.
    """
    d = params.distributed
    if d.backend == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            "distributed.backend deepspeed: the deepspeed package is not installed; pip install deepspeed"
        )
    if d.offload and not cuda:
        raise ConfigError(
            "distributed.offload / --offload: ZeRO offload moves optimizer state from GPU to host memory, and this "
            "machine has no usable CUDA device (the state is already in host memory); drop --offload"
        )
    if d.offload and (d.backend != "deepspeed" or d.zero_stage == 0):
        raise ConfigError("distributed.offload needs backend deepspeed with zero_stage >= 1")
    check_precision(precision_of(params), torch.device("cuda" if cuda else "cpu"))
    if params.cnn_lstm.norm == "batch":
        raise ConfigError(
            "cnn_lstm.norm: batch keeps batch statistics per process, so ranks would train different models; "
            "use norm: layer (or none) with --distributed"
        )
    if d.hostfile and not Path(d.hostfile).is_file():
        raise InputError(f"{d.hostfile}: hostfile not found; fix distributed.hostfile / --hostfile")
    if d.no_ssh and d.hostfile and len(hostfile_machines(d.hostfile)) != d.nnodes:
        raise ConfigError(
            f"distributed.no_ssh: {d.hostfile} lists {len(hostfile_machines(d.hostfile))} machine(s) and nnodes is "
            f"{d.nnodes}; pass --nnodes with the hostfile's machine count and each machine's --node-rank"
        )
    if d.hostfile and d.backend != "deepspeed":
        raise ConfigError("distributed.hostfile is DeepSpeed's; with torchrun pass --nnodes/--node-rank/--master-addr")
    if d.backend == "deepspeed" and d.nnodes > 1 and not d.hostfile:
        raise ConfigError(
            "distributed.nnodes > 1 with DeepSpeed needs --hostfile (its launcher starts every machine); "
            "or use --backend torchrun and run the command on each machine with its --node-rank"
        )
    if d.deepspeed_config:
        if d.backend != "deepspeed":
            raise ConfigError("distributed.deepspeed_config needs backend deepspeed")
        read_user_config(d.deepspeed_config)
    if cuda and d.nproc > torch.cuda.device_count():
        raise ConfigError(
            f"distributed.nproc {d.nproc} exceeds the {torch.cuda.device_count()} visible GPUs; use 0 (one per GPU)"
        )
    world = world_size(params, cuda)
    batch = params.cnn_lstm.batch_size
    if d.micro_batch_per_device == "auto" and batch != "auto" and batch < world * d.gradient_accumulation:
        raise ConfigError(
            f"cnn_lstm.batch_size {batch} is smaller than {world} processes x {d.gradient_accumulation} "
            "accumulation steps; raise batch_size or use fewer processes"
        )


def check_distributed(params: Params, train_windows: int, cuda: bool) -> None:
    """:func:`check_settings`, then whether the data can be shared by every process.

    Raises:
        ConfigError / InputError: with the key and the fix.
    """
    check_settings(params, cuda)
    world = world_size(params, cuda)
    if train_windows < world:
        raise InputError(
            f"{train_windows} training windows cannot be shared by {world} processes; use more data or fewer processes"
        )
