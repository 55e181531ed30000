"""Stage 1's CUDA paths on a real GPU: what ``make gpu-check`` runs (``pytest -m cuda``).

Every test drives the project's own code (device selection, the trainer and its engines, the
DeepSpeed config, the launchers, the out-of-memory back-off) on synthetic features that need
no TA-Lib, which the GPU machine lacks. Without CUDA every test here is skipped; the logic
around these paths is covered on CPU by test_trainer, test_memory, test_distributed and
test_gpu_check.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import tiny_params_dict
from trade_agent.cnn_lstm.device import DeviceError, check_precision, select_device
from trade_agent.cnn_lstm.distributed.engines import DeepSpeedEngine, LocalEngine
from trade_agent.cnn_lstm.distributed.launch import _child_env, _free_port, launch_cnn_lstm, uses_cuda
from trade_agent.cnn_lstm.distributed.process_group import Ranks
from trade_agent.cnn_lstm.distributed.setup import (
    check_settings,
    deepspeed_config,
    grad_clip_of,
    precision_of,
    processes_per_node,
)
from trade_agent.cnn_lstm.model import CNNLSTM, CNNLSTMSpec
from trade_agent.cnn_lstm.stage import load_window_data, train_cnn_lstm
from trade_agent.cnn_lstm.store import load_cnn_lstm
from trade_agent.cnn_lstm.trainer import CHECKPOINT_FILE, CNNLSTMTrainer, Parallelism
from trade_agent.cnn_lstm.windows import WindowData
from trade_agent.config import CnnLstmConfig, Params, params_from_dict
from trade_agent.devtools.synthetic_features import write_synthetic_features
from trade_agent.errors import TrainingInterrupted
from trade_agent.io import read_json

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (README, GPU check: the pip install line installs it from wheels/)",
)

# A small CNN-LSTM that learns the planted signal of the synthetic features in a few epochs.
SMALL = {
    "conv_filters": [16, 32],
    "kernel_sizes": [5, 3],
    "lstm_hidden": 32,
    "attention_heads": 4,
    "dropout": 0.0,
    "epochs": 4,
    "batch_size": 128,
    "patience": 10,
    "learning_rate": 0.003,
}
CHANCE = 1 / 3  # three balanced classes; the planted signal gives ~0.6 after 3 epochs on CPU
LEARNED = 0.5
DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gpu_params(**sections: dict[str, object]) -> Params:
    raw = tiny_params_dict(cnn_lstm=SMALL, base={"device": "cuda"})
    for section, values in sections.items():
        raw[section].update(values)
    return params_from_dict(raw)


def new_trainer(data: WindowData, config: CnnLstmConfig, device: torch.device, **kwargs: Any) -> CNNLSTMTrainer:
    torch.manual_seed(0)
    model = CNNLSTM(CNNLSTMSpec.from_config(config, data.n_features, data.sequence_length)).to(device)
    return CNNLSTMTrainer(model, data, config, device, seed=0, **kwargs)


def assert_learned(history: list[dict[str, float]], val_accuracy: float) -> None:
    losses = [entry["train/loss"] for entry in history]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < losses[0], losses
    assert val_accuracy > LEARNED, f"val accuracy {val_accuracy:.3f} (chance {CHANCE:.2f})"


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 symbols x 1,500 bars, 8 features, windows of 20: ~2,100 training windows."""
    root = tmp_path_factory.mktemp("gpu-features")
    return write_synthetic_features(root, symbols=2, bars=1500, n_features=8, sequence_length=20, signal=0.9)


@pytest.fixture(scope="module")
def oom_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long windows for the memory tests: 2 x 12,000 bars, windows of 60 (~16,700 training windows)."""
    root = tmp_path_factory.mktemp("gpu-oom-features")
    return write_synthetic_features(root, symbols=2, bars=12_000, n_features=8, sequence_length=60, signal=0.9)


# -- device selection and fallback ----------------------------------------------------------


def test_device_selection_picks_the_gpu() -> None:
    for requested in ("auto", "cuda", "cuda:0"):
        choice = select_device(requested, fallback_to_cpu=False)
        assert choice.device.type == "cuda" and choice.fallback_reason is None, requested
    assert select_device("cpu").device == torch.device("cpu")
    for precision in DTYPE:
        check_precision(precision, torch.device("cuda"))  # fp16 (GradScaler) is refused on CPU only
    params = gpu_params(distributed={"nproc": 0})
    assert uses_cuda(params)
    assert processes_per_node(params) == torch.cuda.device_count()  # one rank per visible GPU


def test_a_gpu_index_that_does_not_exist_is_refused_up_front() -> None:
    with pytest.raises(DeviceError):
        select_device(f"cuda:{torch.cuda.device_count()}", fallback_to_cpu=False)


FALLBACK_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from trade_agent.cnn_lstm.device import DeviceError, check_precision, select_device
from trade_agent.cnn_lstm.distributed.launch import uses_cuda
from trade_agent.cnn_lstm.stage import train_cnn_lstm
from trade_agent.config import params_from_dict
from trade_agent.errors import ConfigError

out = {"cuda_available": torch.cuda.is_available()}
choice = select_device("cuda", fallback_to_cpu=True)
out["choice"] = choice.to_dict()
try:
    select_device("cuda", fallback_to_cpu=False)
except DeviceError as exc:
    out["refused"] = str(exc)
try:
    check_precision("fp16", choice.device)
except ConfigError as exc:
    out["fp16"] = str(exc)
params = params_from_dict(json.loads(Path(sys.argv[1]).read_text()))
out["uses_cuda"] = uses_cuda(params)
run = train_cnn_lstm(params, Path(sys.argv[2]), Path(sys.argv[3]), checkpoint_root=None)
out["trained_on"] = str(run.device.device)
out["metadata"] = json.loads((Path(sys.argv[3]) / "metadata.json").read_text())
print("RESULT " + json.dumps(out))
"""


def test_cpu_fallback_when_the_gpu_is_hidden(features: Path, tmp_path: Path) -> None:
    """On a GPU host with CUDA_VISIBLE_DEVICES empty: loud, recorded CPU fallback; no silent fp16."""
    raw = tiny_params_dict(cnn_lstm={**SMALL, "epochs": 1}, base={"device": "cuda"})
    (tmp_path / "params.json").write_text(json.dumps(raw))
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": pythonpath}
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT, str(tmp_path / "params.json"), str(features), str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["cuda_available"] is False
    assert out["choice"]["device"] == "cpu" and "not available" in out["choice"]["fallback_reason"]
    assert "use --device cpu or set cnn_lstm.fallback_to_cpu: true" in out["refused"]
    assert "fp16 needs a CUDA device" in out["fp16"]
    assert out["uses_cuda"] is False
    assert out["trained_on"] == "cpu"
    assert out["metadata"]["device"]["requested"] == "cuda"
    assert out["metadata"]["warnings"] == ["trained on CPU: CUDA is not available on this machine"]

    # Ranks asked to run on CPU on this GPU host get no GPU (and DeepSpeed's CPU accelerator).
    cpu_params = gpu_params(base={"device": "cpu"})
    assert not uses_cuda(cpu_params)
    child = _child_env(cpu_params, cuda=False)
    assert child["CUDA_VISIBLE_DEVICES"] == "" and child["DS_ACCELERATOR"] == "cpu"


# -- one process on the GPU -------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trainer_on_the_gpu(precision: str, features: Path) -> None:
    """fp32, bf16 autocast and fp16 autocast + GradScaler: the right dtypes, and it learns."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    data, _ = load_window_data(features)
    device = torch.device("cuda")
    trainer = new_trainer(data, gpu_params(cnn_lstm={"precision": precision}).cnn_lstm, device)
    engine = trainer.engine
    assert isinstance(engine, LocalEngine)
    assert engine.autocast == (None if precision == "fp32" else DTYPE[precision])
    assert engine.scaler.is_enabled() == (precision == "fp16")
    logits, predicted = engine.forward(data.windows(data.ends["train"][:8]))
    assert logits.device.type == "cuda" and logits.dtype == DTYPE[precision] and predicted.dtype == DTYPE[precision]
    outcome = trainer.fit()
    assert_learned(outcome.history, trainer.evaluate("val")["val/accuracy"])
    # Autocast leaves the weights (and AdamW's state) in fp32 on the GPU.
    assert {(p.dtype, p.device.type) for p in trainer.model.parameters()} == {(torch.float32, "cuda")}
    if precision == "fp16":
        scale = engine.scaler.get_scale()
        assert math.isfinite(scale) and scale > 0, scale


def test_stage_trains_on_the_gpu_and_its_model_loads_on_cpu(features: Path, tmp_path: Path) -> None:
    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    run = train_cnn_lstm(
        gpu_params(cnn_lstm={"precision": precision}), features, tmp_path / "model", checkpoint_root=None
    )
    assert run.device.device.type == "cuda" and run.device.fallback_reason is None
    metadata = read_json(tmp_path / "model" / "metadata.json")
    assert metadata["device"]["device"] == "cuda" and metadata["warnings"] == []
    assert run.metrics["val/accuracy"] > LEARNED and run.metrics["test/accuracy"] > LEARNED
    cpu_model, _ = load_cnn_lstm(tmp_path / "model")
    data, _ = load_window_data(features)
    x = data.windows(data.ends["test"][:64])
    with torch.no_grad():
        on_gpu = run.model.eval()(x.cuda())[0].float().cpu()
        on_cpu = cpu_model(x)[0]
    # cuDNN convolutions and RNNs use TF32 on Ampere and later: close, not equal.
    torch.testing.assert_close(on_gpu, on_cpu, rtol=2e-2, atol=2e-2)


def test_checkpoint_resume_on_the_gpu(features: Path, tmp_path: Path) -> None:
    """Interrupted after epoch 2, resumed: the checkpoint holds the CUDA RNG states too."""
    data, _ = load_window_data(features)
    device = torch.device("cuda")
    config = gpu_params(cnn_lstm={"epochs": 3}).cnn_lstm

    def stop_after_two(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    interrupted = new_trainer(data, config, device, checkpoint_dir=tmp_path / "ckpt", on_epoch=stop_after_two)
    with pytest.raises(TrainingInterrupted, match="after epoch 2"):
        interrupted.fit()
    state = torch.load(tmp_path / "ckpt" / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and len(state["cuda_rng"]) == torch.cuda.device_count()
    resumed = new_trainer(data, config, device, checkpoint_dir=tmp_path / "ckpt").fit()
    assert resumed.resumed_from_epoch == 2 and [e["epoch"] for e in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == state["history"]


# -- out-of-memory back-off on the real allocator -----------------------------------------------

OOM_MODEL = {"conv_filters": [64, 128], "kernel_sizes": [5, 3], "lstm_hidden": 128, "attention_heads": 4}


def step_bytes(model: CNNLSTM, data: WindowData, n: int) -> int:
    """Peak bytes one training forward + backward on ``n`` windows adds on the GPU."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    model.train()
    logits, predicted = model(data.windows(data.ends["train"][:n]).cuda())
    (logits.float().sum() + predicted.float().sum()).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    model.zero_grad(set_to_none=True)
    del logits, predicted
    return peak


def memory_model(data: WindowData, config: CnnLstmConfig) -> tuple[float, float]:
    """(fixed bytes, bytes per sample) of a training step, from steps on 512 and 2,048 windows."""
    torch.manual_seed(0)
    model = CNNLSTM(CNNLSTMSpec.from_config(config, data.n_features, data.sequence_length)).cuda()
    step_bytes(model, data, 64)  # cuBLAS/cuDNN handles and workspaces: allocated once, then kept
    small, large = step_bytes(model, data, 512), step_bytes(model, data, 2048)
    per_sample = (large - small) / 1536
    del model
    return max(small - 512 * per_sample, 0.0), per_sample


@contextlib.contextmanager
def gpu_memory_cap(extra_bytes: float) -> Iterator[int]:
    """Let this process's caching allocator hold only ``extra_bytes`` more than it holds now.

    ``torch.cuda.set_per_process_memory_fraction``: past the cap the allocator raises a real
    ``torch.OutOfMemoryError``, as a full GPU does (the H200's 139 GiB would take long to fill).
    """
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    limit = int(torch.cuda.memory_reserved() + extra_bytes)
    torch.cuda.set_per_process_memory_fraction(min(limit / total, 1.0))
    try:
        yield limit
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        gc.collect()
        torch.cuda.empty_cache()


HEADROOM = 64 * 2**20  # weights, AdamW state, cuDNN workspaces, the allocator's 2 MiB rounding


def test_oom_halves_the_micro_batch_on_the_real_allocator(oom_features: Path) -> None:
    """A micro-batch of 8,192 against room for ~2,700: the trainer halves until it fits and finishes."""
    data, _ = load_window_data(oom_features)
    config = CnnLstmConfig(**OOM_MODEL, epochs=1, batch_size=8192, min_batch_size=64, patience=5)
    fixed, per_sample = memory_model(data, config)
    budget = fixed + per_sample * 8192 / 3 + HEADROOM
    assert fixed + per_sample * 8192 > 1.5 * budget, f"model too small to run out: {per_sample:.0f} B/sample"
    with gpu_memory_cap(budget):
        trainer = new_trainer(data, config, torch.device("cuda"))
        assert trainer.plan.micro_batch == 8192
        outcome = trainer.fit()
    events = trainer.plan.oom_events
    assert events, "no out-of-memory error under the cap"
    assert all(e["to"] == e["from"] // 2 for e in events) and 64 <= trainer.plan.micro_batch < 8192
    assert trainer.plan.global_batch == 8192  # the step still sees 8,192 samples, by accumulation
    assert len(outcome.history) == 1 and math.isfinite(outcome.history[0]["train/loss"])


def test_auto_batch_size_probes_what_fits_on_the_real_allocator(oom_features: Path) -> None:
    """batch_size auto from 16,384 down, against room for ~2,600: the largest power of two that fits."""
    data, _ = load_window_data(oom_features)
    config = CnnLstmConfig(
        **OOM_MODEL, epochs=1, batch_size="auto", max_batch_size=16384, min_batch_size=64, patience=5
    )
    fixed, per_sample = memory_model(data, config)
    budget = fixed + per_sample * 2048 * 1.3 + HEADROOM
    with gpu_memory_cap(budget):
        trainer = new_trainer(data, config, torch.device("cuda"))
        outcome = trainer.fit()
    assert 64 <= trainer.plan.micro_batch <= 4096, trainer.plan.to_dict()
    assert len(outcome.history) == 1 and math.isfinite(outcome.history[0]["train/loss"])


# -- DeepSpeed ZeRO on one GPU, in this process -------------------------------------------------


@pytest.fixture(scope="module")
def deepspeed_rank() -> Iterator[Ranks]:
    """This process as rank 0 of 1 over NCCL, joined as a launched worker joins."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    import torch.distributed as dist

    from trade_agent.cnn_lstm.distributed.worker import init_process_group

    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_RANK": "0",
        }.items():
            patch.setenv(key, value)
        ranks = init_process_group("deepspeed", timeout_s=120.0, cuda=True)
        try:
            yield ranks
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()


@needs_deepspeed
@pytest.mark.parametrize(
    ("stage", "precision", "offload"),
    [
        pytest.param(2, "fp16", False, id="zero2-fp16"),
        pytest.param(3, "bf16", False, id="zero3-bf16"),
        pytest.param(2, "fp32", True, id="zero2-offload-fp32"),
        pytest.param(3, "bf16", True, id="zero3-offload-bf16"),
    ],
)
def test_deepspeed_zero_on_one_gpu(
    stage: int, precision: str, offload: bool, deepspeed_rank: Ranks, features: Path, tmp_path: Path
) -> None:
    """The worker's trainer under DeepSpeed: ZeRO stage, precision and optimizer offload as
    configured, it learns, writes sharded checkpoints and resumes from them."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    params = gpu_params(
        distributed={
            "backend": "deepspeed",
            "zero_stage": stage,
            "precision": precision,
            "offload": offload,
            "nproc": 1,
        }
    )
    check_settings(params, cuda=True)  # the launcher's checks: offload and fp16 are allowed on CUDA
    config = deepspeed_config(params, cuda=True)
    assert config["zero_optimization"].get("offload_optimizer") == (
        {"device": "cpu", "pin_memory": True} if offload else None
    )
    parallelism = Parallelism(
        backend="deepspeed",
        precision=precision_of(params),
        grad_clip=grad_clip_of(params),
        deepspeed_config=config,
    )
    data, _ = load_window_data(features)
    device = torch.device("cuda", deepspeed_rank.local_rank)
    kwargs = {"checkpoint_dir": tmp_path / "ckpt", "ranks": deepspeed_rank, "parallelism": parallelism}
    trainer = new_trainer(data, params.cnn_lstm, device, **kwargs)
    engine = trainer.engine
    assert isinstance(engine, DeepSpeedEngine) and engine.zero_stage == stage
    assert engine.engine.zero_optimization_stage() == stage
    assert engine.engine.zero_cpu_offload() == offload
    assert engine.engine.bfloat16_enabled() == (precision == "bf16")
    assert engine.engine.fp16_enabled() == (precision == "fp16")
    assert engine.input_dtype == DTYPE[precision]
    outcome = trainer.fit()
    assert_learned(outcome.history, trainer.evaluate("val")["val/accuracy"])
    epochs = params.cnn_lstm.epochs
    assert (tmp_path / "ckpt" / f"epoch-{epochs:04d}" / "complete.json").is_file()
    # A relaunch finds the last complete ZeRO checkpoint and has nothing left to train.
    resumed = new_trainer(data, params.cnn_lstm, device, **kwargs).fit()
    assert resumed.resumed_from_epoch == epochs and resumed.history == outcome.history


# -- the launchers: one rank per visible GPU over NCCL ------------------------------------------


@pytest.mark.parametrize(
    ("backend", "settings"),
    [
        pytest.param("torchrun", {}, id="torchrun-ddp"),
        pytest.param(
            "deepspeed",
            {"zero_stage": 3, "precision": "bf16", "offload": True},
            marks=needs_deepspeed,
            id="deepspeed-zero3-bf16-offload",
        ),
    ],
)
def test_launched_run_on_every_gpu(backend: str, settings: dict[str, object], features: Path, tmp_path: Path) -> None:
    """`--distributed` as a user runs it on a GPU machine: ranks, NCCL, rank 0 registers the model."""
    if settings.get("precision") == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    params = gpu_params(distributed={"backend": backend, "nproc": 0, "retries": 0, "timeout_s": 120.0, **settings})
    try:
        run = launch_cnn_lstm(
            params,
            features,
            tmp_path / "model",
            run_dir=tmp_path / "run",
            registry_root=tmp_path / "models",
            checkpoint_root=tmp_path / "temp",
        )
    except Exception as exc:
        log = tmp_path / "run" / "launcher.log"
        tail = log.read_text()[-4000:] if log.is_file() else "(no launcher.log)"
        pytest.fail(f"{type(exc).__name__}: {exc}\n--- launcher.log (tail) ---\n{tail}")
    gpus = torch.cuda.device_count()
    assert run.world_size == gpus and run.model_id
    metadata = read_json(tmp_path / "model" / "metadata.json")
    assert metadata["device"]["device"].startswith("cuda") and metadata["warnings"] == []
    assert metadata["distributed"]["backend"] == backend and metadata["distributed"]["world_size"] == gpus
    assert run.metrics["val/accuracy"] > LEARNED
    load_cnn_lstm(tmp_path / "model")  # the registered model loads on CPU, without DeepSpeed
