"""Device and precision selection with loud, recorded CPU fallback.

CUDA paths cannot run on the CPU-only machines this is developed on, so every decision is
a plain function of what torch reports; tests patch ``torch.cuda`` to drive each branch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from trade_agent.errors import ConfigError, TradeAgentError

log = logging.getLogger(__name__)


class DeviceError(TradeAgentError):
    """CUDA was requested without ``fallback_to_cpu`` but is missing or failed to initialise."""

    exit_code = 2


@dataclass(frozen=True)
class DeviceChoice:
    """The device training runs on, and why it differs from the request (if it does)."""

    device: torch.device
    requested: str
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"device": str(self.device), "requested": self.requested, "fallback_reason": self.fallback_reason}


def _cuda_problem() -> str | None:
    """None when CUDA works, else why not (missing, or failing on first allocation)."""
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    try:
        torch.zeros(1, device="cuda")
    except Exception as exc:  # driver/runtime errors come in many types
        return f"CUDA failed to initialise ({exc})"
    return None


def select_device(requested: str = "auto", fallback_to_cpu: bool = True) -> DeviceChoice:
    """Resolve ``auto``/``cpu``/``cuda`` (or ``cuda:N``).

    Raises:
        DeviceError: CUDA requested and unusable, without ``fallback_to_cpu``.
    """
    if requested == "cpu":
        return DeviceChoice(torch.device("cpu"), requested)
    problem = _cuda_problem()
    if requested == "auto":
        return DeviceChoice(torch.device("cpu" if problem else "cuda"), requested)
    if not requested.startswith("cuda"):
        raise ConfigError(f"device '{requested}' is unknown; use auto, cpu or cuda")
    if problem is None:
        device = torch.device(requested)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:  # a typo, not a broken driver: no fallback
            raise DeviceError(
                f"device '{requested}': this machine has {count} visible GPU(s) (cuda:0..cuda:{count - 1}); "
                "pick one of them, or use cuda"
            )
        return DeviceChoice(device, requested)
    if not fallback_to_cpu:
        raise DeviceError(
            f"device '{requested}' requested but {problem}; use --device cpu or set cnn_lstm.fallback_to_cpu: true"
        )
    log.warning("%s: TRAINING ON CPU INSTEAD of %s (recorded in the model metadata)", problem, requested)
    return DeviceChoice(torch.device("cpu"), requested, fallback_reason=problem)


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 needs CUDA (GradScaler); bf16 runs on CPU but slowly without native support.

    Raises:
        ConfigError: fp16 on CPU, or an unknown precision.
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"precision '{precision}' is unknown; use fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device (GradScaler); use fp32 or bf16 on CPU")
    if precision == "bf16" and device.type == "cpu":
        log.warning("bf16 autocast on a CPU without native bf16 is much slower than fp32; use it to test only")


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
