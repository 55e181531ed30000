"""Out-of-memory recovery, dynamic batch size and the fault hook (single process)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_params_dict
from trade_agent.cnn_lstm import faults
from trade_agent.cnn_lstm.distributed.engines import LocalEngine
from trade_agent.cnn_lstm.memory import BatchPlan, is_out_of_memory
from trade_agent.cnn_lstm.stage import train_cnn_lstm
from trade_agent.config import params_from_dict
from trade_agent.errors import ConfigError, TrainingError
from trade_agent.io import read_json

EXACT = {"dropout": 0.0, "epochs": 2, "batch_size": 32}


@pytest.fixture
def inject(monkeypatch: pytest.MonkeyPatch):
    def set_faults(rules: str) -> None:
        monkeypatch.setenv(faults.FAULTS_ENV, rules)
        faults.reload()

    yield set_faults
    monkeypatch.delenv(faults.FAULTS_ENV, raising=False)
    faults.reload()


def train(features: Path, out: Path, **cnn_lstm: object):
    params = params_from_dict(tiny_params_dict(cnn_lstm={**EXACT, **cnn_lstm}))
    return train_cnn_lstm(params, features, out, checkpoint_root=None)


@pytest.fixture(scope="module")
def reference(tiny_features_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return train(tiny_features_dir, tmp_path_factory.mktemp("ref") / "m").model.state_dict()


def assert_same_weights(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    for name, tensor in reference.items():
        if name.endswith("in_proj_bias"):  # the key bias: zero-gradient noise that Adam rescales
            third = len(tensor) // 3
            state_part, tensor = state[name][2 * third :], tensor[2 * third :]
            torch.testing.assert_close(state_part, tensor, rtol=1e-4, atol=1e-5)
            continue
        torch.testing.assert_close(state[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_oom_halves_the_micro_batch_and_keeps_the_step(
    tiny_features_dir: Path, tmp_path: Path, reference: dict, inject, caplog: pytest.LogCaptureFixture
) -> None:
    inject("oom_above=10")  # a device with room for 10 samples: 32 -> 16 -> 8
    with caplog.at_level(logging.WARNING):
        run = train(tiny_features_dir, tmp_path / "m")
    assert "out of memory at micro-batch 32 (step 1): continuing with 2 x 16-sample micro-batches" in caplog.text
    assert "out of memory at micro-batch 16 (step 1): continuing with 4 x 8-sample micro-batches" in caplog.text
    batch = read_json(tmp_path / "m" / "metadata.json")["training"]["batch"]
    assert batch["global"] == 32 and batch["micro_per_device"] == 8 and batch["accumulation"] == 4
    assert batch["oom_events"] == [{"step": 1, "from": 32, "to": 16}, {"step": 1, "from": 16, "to": 8}]
    # Gradient accumulation over the same 32 samples: the same optimisation.
    assert_same_weights(run.model.state_dict(), reference)


def test_oom_in_backward_restarts_the_step(
    tiny_features_dir: Path, tmp_path: Path, reference: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_backward = LocalEngine.backward
    calls = {"n": 0}

    def backward(self: LocalEngine, loss: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # fails once, after earlier steps' backward passes succeeded
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_backward(self, loss)

    monkeypatch.setattr(LocalEngine, "backward", backward)
    run = train(tiny_features_dir, tmp_path / "m")
    events = read_json(tmp_path / "m" / "metadata.json")["training"]["batch"]["oom_events"]
    assert events == [{"step": 5, "from": 32, "to": 16}]
    assert_same_weights(run.model.state_dict(), reference)


def test_oom_below_minimum_gives_up_cleanly(tiny_features_dir: Path, tmp_path: Path, inject) -> None:
    inject("oom_at_step=2")
    with pytest.raises(TrainingError, match=r"out of memory at micro-batch 32 \(step 2\) and cnn_lstm.min_batch_size"):
        train(tiny_features_dir, tmp_path / "m", min_batch_size=32)
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_auto_batch_size_probes_the_largest_that_fits(tiny_features_dir: Path, tmp_path: Path, inject) -> None:
    inject("oom_above=40")
    run = train(tiny_features_dir, tmp_path / "m", batch_size="auto", max_batch_size=256)
    assert run.outcome.batch["micro_per_device"] == 32 and run.outcome.batch["global"] == 32
    assert run.outcome.batch["oom_events"] == []
    inject("oom_above=3")
    with pytest.raises(TrainingError, match=r"batch_size auto: not even 4 samples fit"):
        train(tiny_features_dir, tmp_path / "n", batch_size="auto", min_batch_size=4)


def test_fault_rules_and_oom_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert faults.Faults.parse("rank=1, kill_after_epoch=2") == faults.Faults(kill_after_epoch=2, rank=1)
    with pytest.raises(ConfigError, match="TRADE_AGENT_FAULTS: bad rule 'oom=3'"):
        faults.Faults.parse("oom=3")
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    plan = BatchPlan(global_batch=256, micro_batch=64, world_size=2, minimum=16)
    assert plan.accumulation == 2
    plan.shrink(7, RuntimeError("oom"))
    assert (plan.micro_batch, plan.accumulation) == (32, 4)
    with pytest.raises(ConfigError, match=r"cnn_lstm.batch_size: must be >= 1 or auto"):
        params_from_dict(tiny_params_dict(cnn_lstm={"batch_size": 0}))
