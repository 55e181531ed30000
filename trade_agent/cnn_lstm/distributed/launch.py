"""Launch a distributed CNN-LSTM run (DeepSpeed or torchrun) and see it through.

The launcher process checks the settings (:mod:`trade_agent.cnn_lstm.distributed.setup`), writes a JSON run spec,
starts ``deepspeed`` or ``torchrun`` on :mod:`trade_agent.cnn_lstm.distributed.worker`, and relaunches
after a failed attempt - a crashed or SIGKILLed rank, a lost peer - up to
``distributed.retries`` times with exponential backoff. Every attempt resumes from the last
complete checkpoint in the run's own checkpoint directory. Errors in the user's input (a
rank reports a :class:`~trade_agent.errors.TradeAgentError`) are not retried.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trade_agent import paths
from trade_agent.cnn_lstm.device import select_device
from trade_agent.cnn_lstm.distributed.setup import (
    check_distributed,
    check_settings,
    deepspeed_config,
    grad_clip_of,
    precision_of,
    processes_per_node,
    world_size,
)
from trade_agent.cnn_lstm.distributed.worker import ERRORS_DIR, RESULT_FILE
from trade_agent.cnn_lstm.stage import load_window_data, run_settings
from trade_agent.config import Params, params_from_dict, to_plain
from trade_agent.errors import TrainingError
from trade_agent.io import read_json, run_key, write_json
from trade_agent.paths import FEATURES_FILE

log = logging.getLogger(__name__)

WORKER_MODULE = "trade_agent.cnn_lstm.distributed.worker"


class DistributedRunError(TrainingError):
    """A rank failed; carries that rank's exit code (2 for the user's input)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class DistributedRun:
    """Result of :func:`launch_cnn_lstm`."""

    model_id: str
    model_dir: Path
    metrics: dict[str, float]
    duration_s: float
    attempts: int
    world_size: int
    checkpoint_dir: Path
    train_seconds: float


def uses_cuda(params: Params) -> bool:
    """Whether the ranks train on GPUs: ``base.device`` resolved once, with the CPU fallback.

    Raises:
        DeviceError: CUDA requested and unusable without ``cnn_lstm.fallback_to_cpu``.
    """
    return select_device(params.base.device, params.cnn_lstm.fallback_to_cpu).device.type == "cuda"


def check_before_data(params: Params) -> None:
    """The settings checks that need no data: call before preparing anything."""
    check_settings(params, uses_cuda(params))


def launch_command(params: Params, spec_path: Path, master_port: int, cuda: bool = False) -> list[str]:
    """The ``torchrun`` or DeepSpeed launcher command line for one node."""
    d = params.distributed
    nproc = processes_per_node(params, torch.cuda.device_count() if cuda else 0)
    if d.backend == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={nproc}",
            f"--nnodes={d.nnodes}",
            f"--node-rank={d.node_rank}",
            f"--master-addr={d.master_addr}",
            f"--master-port={master_port}",
            "--max-restarts=0",  # relaunching is ours: it resumes from checkpoints with backoff
            "-m",
            WORKER_MODULE,
            str(spec_path),
        ]
    command = [sys.executable, "-m", "deepspeed.launcher.runner", f"--master_port={master_port}"]
    if d.hostfile and d.no_ssh:  # this machine's processes only; every machine runs its own command
        command += [
            f"--hostfile={d.hostfile}",
            "--no_ssh",
            f"--node_rank={d.node_rank}",
            f"--master_addr={d.master_addr}",
        ]
    elif d.hostfile:  # the launcher starts every host listed (over pdsh/ssh)
        command += [f"--hostfile={d.hostfile}", f"--master_addr={d.master_addr}"]
    else:
        command += [f"--num_gpus={nproc}", f"--num_nodes={d.nnodes}", f"--node_rank={d.node_rank}"]
        command += [f"--master_addr={d.master_addr}"]
    return [*command, "--module", WORKER_MODULE, str(spec_path)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_env(params: Params, cuda: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(params.distributed.threads_per_process)
    env["PYTHONUNBUFFERED"] = "1"
    if not cuda:  # CPU ranks even on a GPU host (--device cpu, or the CUDA fallback)
        env["DS_ACCELERATOR"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


# Lines the ranks log through trade_agent's plain (non-TTY) handler; the launchers' own
# chatter and tracebacks go to <run_dir>/launcher.log only.
_RANK_LOG_PREFIXES = ("INFO ", "WARNING ", "ERROR ", "CRITICAL ")


def _run_launcher(command: list[str], env: dict[str, str], log_path: Path) -> int:
    with (
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process,
        log_path.open("a") as launcher_log,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            launcher_log.write(line)
            if line.startswith(_RANK_LOG_PREFIXES):
                sys.stderr.write(line)
        return process.wait()


def distributed_settings(params: Params, world: int) -> dict[str, Any]:
    """What else shapes a distributed run: a relaunch resumes only the same layout and precision."""
    d = params.distributed
    return {
        "backend": d.backend,
        "world": world,
        "zero_stage": d.zero_stage,
        "micro": d.micro_batch_per_device,
        "accumulation": d.gradient_accumulation,
        "precision": precision_of(params),
        "grad_clip": grad_clip_of(params),
    }


def launch_cnn_lstm(
    params: Params,
    features_dir: Path,
    model_dir: Path,
    *,
    run_dir: Path,
    registry_root: Path,
    export_registry: bool | None = None,
    metrics_path: Path | None = None,
    live_dir: Path | None = None,
    checkpoint_root: Path = paths.CHECKPOINTS,
    resume: bool = True,
    keep_checkpoints: bool = False,
) -> DistributedRun:
    """Train stage 1 on several processes; rank 0 registers the model.

    Raises:
        ConfigError / InputError: bad settings, before any process starts.
        DistributedRunError: a rank reported an error, or every attempt failed.
    """
    d = params.distributed
    cuda = uses_cuda(params)
    data, _ = load_window_data(features_dir)
    check_distributed(params, len(data.ends["train"]), cuda)
    world = world_size(params, cuda)
    # Each rank runs threads_per_process threads; the params record it (it is in the model metadata).
    raw = to_plain(params)
    raw["base"]["threads"] = d.threads_per_process
    params = params_from_dict(raw)
    settings = run_settings(params, features_dir) | {"distributed": distributed_settings(params, world)}
    checkpoint_dir = checkpoint_root / "cnn_lstm" / run_key(settings, [features_dir / FEATURES_FILE])
    if not resume and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "params": raw,
        "features_dir": str(features_dir.resolve()),
        "model_dir": str(model_dir.resolve()),
        "metrics_path": str(metrics_path.resolve()) if metrics_path else None,
        "live_dir": str(live_dir.resolve()) if live_dir else None,
        "checkpoint_dir": str(checkpoint_dir.resolve()),
        "keep_checkpoints": keep_checkpoints,
        "run_dir": str(run_dir.resolve()),
        "registry": {"root": str(registry_root.resolve()), "export": export_registry},
        "cuda": cuda,
        "precision": precision_of(params),
        "grad_clip": grad_clip_of(params),
        "deepspeed_config": deepspeed_config(params, cuda) if d.backend == "deepspeed" else None,
    }
    spec_path = write_json(run_dir / "spec.json", spec)
    started = time.perf_counter()
    attempts = d.retries + 1
    reason = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            wait = d.retry_backoff_s * 2 ** (attempt - 2)
            log.warning(
                "attempt %d/%d in %.1f s (resuming from %s): %s", attempt, attempts, wait, checkpoint_dir, reason
            )
            time.sleep(wait)
        shutil.rmtree(run_dir / ERRORS_DIR, ignore_errors=True)
        (run_dir / RESULT_FILE).unlink(missing_ok=True)
        # One node: a fresh port per attempt (a killed attempt's port may linger in TIME_WAIT).
        single_node = d.nnodes == 1 and not d.hostfile
        port = _free_port() if single_node else d.master_port
        command = launch_command(params, spec_path, port, cuda)
        log.info("launching %d %s processes: %s", world, d.backend, " ".join(command[1:]))
        returncode = _run_launcher(command, _child_env(params, cuda), run_dir / "launcher.log")
        if returncode == 0 and d.node_rank > 0:  # node 0's rank 0 writes and registers the model
            log.info("this node's ranks finished; node 0 registers the model")
            return DistributedRun("", model_dir, {}, time.perf_counter() - started, attempt, world, checkpoint_dir, 0.0)
        if returncode == 0 and (run_dir / RESULT_FILE).is_file():
            result = read_json(run_dir / RESULT_FILE)
            return DistributedRun(
                result["model_id"],
                model_dir,
                result["metrics"],
                time.perf_counter() - started,
                attempt,
                world,
                checkpoint_dir,
                result["train_seconds"],
            )
        errors = [read_json(p) for p in sorted((run_dir / ERRORS_DIR).glob("rank*.json"))]
        for error in errors:
            if not error["transient"]:  # the user's input, or a bug: a relaunch would fail the same way
                message = error["message"] if error["exit_code"] == 2 else f"rank {error['rank']}: {error['message']}"
                raise DistributedRunError(message, int(error["exit_code"]))
        reason = (
            f"rank {errors[0]['rank']}: {errors[0]['message']}"
            if errors
            else f"a process was killed or crashed (launcher exit code {returncode}; see {run_dir / 'launcher.log'})"
        )
    raise DistributedRunError(
        f"distributed training failed after {attempts} attempt(s), last: {reason}; checkpoints are kept in "
        f"{checkpoint_dir}, run the same command again to resume"
    )
