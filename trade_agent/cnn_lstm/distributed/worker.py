"""One rank of a distributed CNN-LSTM run: ``python -m trade_agent.cnn_lstm.distributed.worker SPEC``.

Started by :mod:`trade_agent.cnn_lstm.distributed.launch` through ``torchrun`` or DeepSpeed's launcher,
which set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. SPEC is the JSON run
description the launcher wrote. Rank 0 writes the model, metrics, registry entry and
``result.json``; a failing rank writes ``errors/rank<N>.json`` for the launcher to report.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trade_agent.cnn_lstm.distributed.process_group import Ranks
from trade_agent.cnn_lstm.trainer import Parallelism
from trade_agent.config import params_from_dict
from trade_agent.errors import TradeAgentError
from trade_agent.io import read_json, write_json
from trade_agent.log import setup_logging

log = logging.getLogger("trade_agent.cnn_lstm.distributed.worker")  # not __name__: this runs as __main__

RESULT_FILE = "result.json"
ERRORS_DIR = "errors"


def init_process_group(backend: str, timeout_s: float, cuda: bool) -> Ranks:
    """Join the job's process group (gloo on CPU, NCCL on CUDA)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    comm = "nccl" if cuda else "gloo"
    timeout = timedelta(seconds=timeout_s)
    if cuda:
        torch.cuda.set_device(local_rank)
    if backend == "deepspeed":
        import deepspeed

        # DeepSpeed JIT-compiles a shared-memory all-reduce for CPU runs (~40 s of C++ build
        # on first use, per machine). Our collectives are small; gloo's are fast enough.
        setattr(importlib.import_module("deepspeed.comm.torch"), "build_shm_op", lambda: None)  # noqa: B010
        deepspeed.init_distributed(dist_backend=comm, timeout=timeout, verbose=False)
    else:
        dist.init_process_group(comm, timeout=timeout)
    return Ranks.from_process_group(local_rank, f"cuda:{local_rank}" if cuda else "cpu")


def run(spec: dict[str, Any]) -> None:
    from trade_agent.cnn_lstm.registration import register_cnn_lstm
    from trade_agent.cnn_lstm.stage import train_cnn_lstm
    from trade_agent.registry import ModelRegistry

    started = time.perf_counter()
    params = params_from_dict(spec["params"])
    d = params.distributed
    ranks = init_process_group(d.backend, d.timeout_s, bool(spec["cuda"]))
    if not ranks.is_main:  # one copy of the progress lines; warnings from every rank
        logging.getLogger("trade_agent").handlers[0].setLevel(logging.WARNING)
    parallelism = Parallelism(
        backend="deepspeed" if d.backend == "deepspeed" else "ddp",
        micro_batch=None if d.micro_batch_per_device == "auto" else d.micro_batch_per_device,
        gradient_accumulation=d.gradient_accumulation,
        precision=spec["precision"],
        grad_clip=spec["grad_clip"],
        deepspeed_config=spec.get("deepspeed_config"),
    )
    info = {
        "backend": d.backend,
        "world_size": ranks.world_size,
        "nnodes": d.nnodes,
        "threads_per_process": d.threads_per_process,
        "precision": spec["precision"],
        **({"zero_stage": d.zero_stage} if d.backend == "deepspeed" else {}),
    }
    train = train_cnn_lstm(
        params,
        Path(spec["features_dir"]),
        Path(spec["model_dir"]),
        metrics_path=Path(spec["metrics_path"]) if spec.get("metrics_path") else None,
        live_dir=Path(spec["live_dir"]) if spec.get("live_dir") else None,
        checkpoint_dir=Path(spec["checkpoint_dir"]),
        keep_checkpoints=bool(spec.get("keep_checkpoints", False)),
        ranks=ranks,
        parallelism=parallelism,
        distributed_info=info,
    )
    if ranks.is_main:
        registry = ModelRegistry(spec["registry"]["root"], grading=params.grading, export=spec["registry"]["export"])
        duration = time.perf_counter() - started
        model_id = register_cnn_lstm(train.model_dir, params, registry, duration)
        write_json(
            Path(spec["run_dir"]) / RESULT_FILE,
            {
                "model_id": model_id,
                "metrics": train.metrics,
                "duration_s": duration,
                "train_seconds": train.outcome.train_seconds,
                "ranks": ranks.world_size,
            },
        )
    ranks.barrier()
    dist.destroy_process_group()


_COMMUNICATION_FAILURES = ("connection", "timed out", "timeout", "broken pipe", "peer", "nccl", "gloo")


def lost_peer(error: BaseException) -> bool:
    """A collective failed because another rank died or hung: a relaunch can succeed.

    Anything else (a bug, a bad setting) would fail the same way again and is not retried.
    """
    if isinstance(error, TradeAgentError):
        return False
    text = str(error).lower()
    return isinstance(error, dist.DistError | ConnectionError | TimeoutError) or (
        isinstance(error, RuntimeError) and any(word in text for word in _COMMUNICATION_FAILURES)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None)  # DeepSpeed's launcher adds it
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="deepspeed")
    setup_logging()
    spec = read_json(args.spec)
    rank = os.environ.get("RANK", "0")
    try:
        run(spec)
    except Exception as error:  # report on one line, for the launcher to relay
        transient = bool(getattr(error, "transient", False)) or lost_peer(error)
        code = getattr(error, "exit_code", 1)
        message = str(error) if isinstance(error, TradeAgentError) else f"{type(error).__name__}: {error}"
        log.debug("rank %s failed", rank, exc_info=True)
        write_json(
            Path(spec["run_dir"]) / ERRORS_DIR / f"rank{rank}.json",
            {"rank": int(rank), "message": " ".join(message.split()), "transient": transient, "exit_code": code},
        )
        log.error("rank %s: %s", rank, " ".join(message.split()))
        sys.exit(code)


if __name__ == "__main__":
    main()
