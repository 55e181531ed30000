"""Distributed stage 1 on CPU: DeepSpeed ZeRO-2 and torchrun DDP with 2 processes each,
killed ranks resumed from the last complete checkpoint, and the launch settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import tiny_params_dict
from trade_agent.cnn_lstm.distributed.launch import launch_command
from trade_agent.cnn_lstm.distributed.setup import check_distributed, deepspeed_config, world_size
from trade_agent.cnn_lstm.stage import train_cnn_lstm
from trade_agent.cnn_lstm.store import load_cnn_lstm
from trade_agent.config import params_from_dict
from trade_agent.errors import ConfigError, InputError
from trade_agent.io import read_json
from trade_agent.registry import ModelRegistry

pytestmark = pytest.mark.slow

# LayerNorm and no dropout: N processes compute the single-process steps up to rounding.
EXACT = {"dropout": 0.0, "norm": "layer", "epochs": 3, "batch_size": 32, "patience": 10}
COMPARED = ("val/loss", "val/accuracy", "test/loss", "test/accuracy", "test/ic", "best_epoch")


def distributed_params(**distributed: object) -> dict:
    raw = tiny_params_dict(cnn_lstm=EXACT)
    raw["distributed"].update({"nproc": 2, "retry_backoff_s": 0.2, "timeout_s": 60.0, **distributed})
    return raw


def train_cli(root: Path, *args: str, faults: str = "") -> subprocess.CompletedProcess[str]:
    """`trade-agent train cnn-lstm-enhanced synthetic --distributed ...` in ``root``."""
    env = {**os.environ, "TRADE_AGENT_FAULTS": faults}
    command = [str(Path(sys.executable).parent / "trade-agent"), "train", "cnn-lstm-enhanced", "synthetic"]
    return subprocess.run(
        [*command, "--distributed", "--no-dvc", "--json", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def payload(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{") :])


@pytest.fixture(scope="module")
def single_process(tiny_features_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: the same tiny CNN-LSTM trained in this process (same features: only
    the cnn_lstm section differs from the session's tiny params)."""
    params = params_from_dict(distributed_params())
    run = train_cnn_lstm(params, tiny_features_dir, tmp_path_factory.mktemp("single") / "m", checkpoint_root=None)
    return {"metrics": run.metrics, "weights": run.model.state_dict()}


def assert_matches(metrics: dict, weights: dict, reference: dict) -> None:
    for key in COMPARED:
        assert metrics[key] == pytest.approx(reference["metrics"][key], rel=1e-5, abs=1e-6), key
    for name, tensor in reference["weights"].items():
        mine = weights[name]
        if name.endswith("attention.in_proj_bias"):
            # The key bias cancels in softmax: its gradient is rounding noise, which Adam
            # rescales to lr-sized steps. Compare the query and value biases only.
            third = len(tensor) // 3
            mine, tensor = (
                torch.cat([mine[:third], mine[2 * third :]]),
                torch.cat([tensor[:third], tensor[2 * third :]]),
            )
        torch.testing.assert_close(mine, tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_single_process_deepspeed_checkpoints_and_registers(single_process: dict, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(distributed_params(nproc=1, zero_stage=0)))
    out = payload(train_cli(tmp_path))
    model, _ = load_cnn_lstm(tmp_path / "models" / "runs" / "cnn_lstm" / "model")
    assert_matches(out["metrics"], model.state_dict(), single_process)


@pytest.mark.parametrize(
    ("backend", "faults"),
    [
        ("deepspeed", ""),
        # An out-of-memory error on rank 1 only: both ranks halve their micro-batch together.
        ("torchrun", "rank=1,oom_at_step=2"),
    ],
)
def test_two_process_run_registers_one_model_matching_single_process(
    backend: str, faults: str, single_process: dict, tmp_path: Path
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(distributed_params(backend=backend)))
    result = train_cli(tmp_path, "--nproc", "2", "--zero-stage", "2", faults=faults)
    out = payload(result)
    registry = ModelRegistry(tmp_path / "models")
    assert [e.model_id for e in registry.list_models()] == [out["model_id"]]  # rank 0 alone registered
    model_dir = registry.restore(out["model_id"], tmp_path / "restored")
    model, _ = load_cnn_lstm(model_dir)  # a plain state dict, loaded weights-only
    assert_matches(out["metrics"], model.state_dict(), single_process)
    meta = read_json(model_dir / "metadata.json")
    assert meta["distributed"]["world_size"] == 2 and meta["distributed"]["backend"] == backend
    assert meta["training"]["batch"]["global"] == 32 and meta["training"]["batch"]["world_size"] == 2
    if backend == "deepspeed":
        config = read_json(model_dir / "deepspeed_config.json")  # saved with the model
        assert config["zero_optimization"]["stage"] == 2 and config["train_micro_batch_size_per_gpu"] == 16
        assert config["train_batch_size"] == 32
    else:
        assert "out of memory at micro-batch 16 (step 2)" in result.stderr
        assert meta["training"]["batch"]["oom_events"] == [{"step": 2, "from": 16, "to": 8}]
    assert not list((tmp_path / "models" / "temp").rglob("epoch-*")), "checkpoints are removed after success"


def test_killed_rank_resumes_from_last_complete_checkpoint(single_process: dict, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(distributed_params(backend="deepspeed", retries=0)))
    killed = train_cli(tmp_path, faults="rank=1,kill_after_epoch=2")
    assert killed.returncode == 1
    last = killed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: distributed training failed after 1 attempt(s)")
    assert "run the same command again to resume" in last
    assert "Traceback" not in killed.stderr  # launcher chatter goes to launcher.log, ranks' lines to stderr
    (checkpoint,) = (tmp_path / "models" / "temp" / "cnn_lstm").iterdir()
    assert [p.parent.name for p in checkpoint.glob("epoch-*/complete.json")] == ["epoch-0002"]
    assert not (tmp_path / "models" / "registry.json").exists()

    resumed = train_cli(tmp_path)  # the same command, no fault
    out = payload(resumed)
    assert f"resuming from {checkpoint.resolve()} after epoch 2" in resumed.stderr
    model, _ = load_cnn_lstm(tmp_path / "models" / "runs" / "cnn_lstm" / "model")
    assert_matches(out["metrics"], model.state_dict(), single_process)


def test_zero3_oom_relaunches_with_a_smaller_micro_batch(single_process: dict, tmp_path: Path) -> None:
    # Under ZeRO-3 a forward pass all-gathers parameters, so an out-of-memory rank cannot back
    # off in place: the attempt ends, leaving a hint, and the relaunch starts with half the
    # micro-batch (same global batch, so the same training).
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(distributed_params(zero_stage=3, retries=1)))
    result = train_cli(tmp_path, faults="rank=1,oom_above=12")
    out = payload(result)
    assert "relaunching from the last checkpoint with micro-batch 8" in result.stderr
    assert "attempt 2/2" in result.stderr
    model, _ = load_cnn_lstm(tmp_path / "models" / "runs" / "cnn_lstm" / "model")
    assert_matches(out["metrics"], model.state_dict(), single_process)
    meta = read_json(tmp_path / "models" / "runs" / "cnn_lstm" / "model" / "metadata.json")
    assert meta["distributed"]["zero_stage"] == 3 and meta["distributed"]["world_size"] == 2
    assert meta["training"]["batch"]["micro_per_device"] == 8


def test_retries_relaunch_after_rank0_is_killed(single_process: dict, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(distributed_params(backend="torchrun", retries=1)))
    result = train_cli(tmp_path, faults="rank=0,kill_after_epoch=1")
    out = payload(result)
    assert "attempt 2/2 in 0.2 s" in result.stderr
    assert "after epoch 1" in result.stderr
    model, _ = load_cnn_lstm(tmp_path / "models" / "runs" / "cnn_lstm" / "model")
    assert_matches(out["metrics"], model.state_dict(), single_process)


# -- settings, without launching anything ---------------------------------------------


def test_deepspeed_config_from_params_and_user_json(tmp_path: Path) -> None:
    raw = distributed_params(zero_stage=3, precision="bf16", grad_clip=0.5)
    config = deepspeed_config(params_from_dict(raw), cuda=False)
    assert config["zero_optimization"] == {"stage": 3}
    assert config["gradient_clipping"] == 0.5 and config["bf16"]["enabled"] and not config["fp16"]["enabled"]
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 1000}, "gradient_clipping": 2.0}))
    raw["distributed"]["deepspeed_config"] = str(user)
    merged = deepspeed_config(params_from_dict(raw), cuda=False)
    assert merged["zero_optimization"] == {"stage": 3, "reduce_bucket_size": 1000}  # user keys win, merged deeply
    assert merged["gradient_clipping"] == 2.0
    user.write_text(json.dumps({"optimizer": {"type": "Adam"}}))
    with pytest.raises(InputError, match=r"ds.json: remove 'optimizer'"):
        deepspeed_config(params_from_dict(raw), cuda=False)
    user.write_text("{not json")
    with pytest.raises(InputError, match=r"ds.json: line 1: not valid JSON"):
        deepspeed_config(params_from_dict(raw), cuda=False)
    # Offload (CUDA machines) steps our torch AdamW on the host copy, not DeepSpeed's JIT-built CPU Adam.
    offload = deepspeed_config(params_from_dict(distributed_params(offload=True)), cuda=True)
    assert offload["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert offload["zero_force_ds_cpu_optimizer"] is False


@pytest.mark.parametrize(
    ("distributed", "cnn_lstm", "message"),
    [
        ({"offload": True}, {}, "this machine has no usable CUDA device"),
        ({}, {"norm": "batch"}, "cnn_lstm.norm: batch keeps batch statistics per process"),
        ({"nnodes": 2}, {}, "nnodes > 1 with DeepSpeed needs --hostfile"),
        ({"precision": "fp16"}, {}, "precision fp16 needs a CUDA device"),
        ({"hostfile": "missing-hosts"}, {}, "missing-hosts: hostfile not found"),
        ({"backend": "torchrun", "zero_stage": 2, "deepspeed_config": "x.json"}, {}, "needs backend deepspeed"),
        ({"nproc": 64}, {}, "cnn_lstm.batch_size 32 is smaller than 64 processes"),
        ({"nproc": 500, "micro_batch_per_device": 1}, {}, "training windows cannot be shared by 500 processes"),
    ],
)
def test_bad_distributed_settings_fail_before_launch(distributed: dict, cnn_lstm: dict, message: str) -> None:
    raw = distributed_params(**distributed)
    raw["cnn_lstm"].update(cnn_lstm)
    with pytest.raises((ConfigError, InputError), match=message):
        check_distributed(params_from_dict(raw), train_windows=300, cuda=False)


def test_cli_refuses_offload_on_cpu_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(distributed_params()))
    result = train_cli(tmp_path, "--offload")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: distributed.offload / --offload: ZeRO offload")
    assert "Traceback" not in result.stderr
    command = [str(Path(sys.executable).parent / "trade-agent"), "train", "cnn-lstm-enhanced", "synthetic"]
    bare = subprocess.run([*command, "--nproc", "2"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert bare.returncode == 2 and "error: --nproc needs --distributed" in bare.stderr


def test_multi_node_options_reach_the_launchers(tmp_path: Path) -> None:
    raw = distributed_params(backend="torchrun", nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29600)
    command = launch_command(params_from_dict(raw), tmp_path / "spec.json", 29600)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29600"} <= set(command)
    hosts = tmp_path / "hostfile"
    hosts.write_text("node1 slots=2\nnode2 slots=2\n")
    raw = distributed_params(backend="deepspeed", hostfile=str(hosts), master_addr="node1")
    command = launch_command(params_from_dict(raw), tmp_path / "spec.json", 29600)
    assert command[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert {f"--hostfile={hosts}", "--master_addr=node1", "--master_port=29600", "--module"} <= set(command)
    assert command[-2:] == ["trade_agent.cnn_lstm.distributed.worker", str(tmp_path / "spec.json")]
    assert np.all([not arg.startswith("--num_gpus") for arg in command])  # the hostfile lists the slots
    assert world_size(params_from_dict(raw), cuda=False) == 4
    assert "--no_ssh" not in command  # node 0's launcher starts every host over pdsh/ssh
    # --no-ssh: each machine runs its own command with its node rank; the hostfile gives the world.
    raw = distributed_params(backend="deepspeed", hostfile=str(hosts), no_ssh=True, nnodes=2, node_rank=1)
    command = launch_command(params_from_dict(raw), tmp_path / "spec.json", 29600)
    assert {f"--hostfile={hosts}", "--no_ssh", "--node_rank=1", "--master_port=29600"} <= set(command)
    assert world_size(params_from_dict(raw), cuda=False) == 4
    check_distributed(params_from_dict(raw), train_windows=300, cuda=False)
    with pytest.raises(ConfigError, match=r"lists 2 machine\(s\) and nnodes is 3; pass --nnodes"):
        check_distributed(params_from_dict({**raw, "distributed": {**raw["distributed"], "nnodes": 3}}), 300, False)
    with pytest.raises(ConfigError, match=r"distributed\.no_ssh is DeepSpeed's launch without ssh: it needs a host"):
        params_from_dict(distributed_params(no_ssh=True))
    hosts.write_text("node1 slots=2\nnode2\n")
    with pytest.raises(InputError, match=r"hostfile: line 2: expected 'host slots=N', got 'node2'"):
        world_size(params_from_dict(raw), cuda=False)


def test_optimize_then_train_the_best_distributed(tmp_path: Path) -> None:
    raw = distributed_params(backend="torchrun")
    raw["optimize"] = {
        "n_startup_trials": 2,
        "cnn_lstm": {"budget": 2, "space": {"cnn_lstm.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2}}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = train_cli(tmp_path, "--optimize", "--n-trials", "2")
    out = payload(result)  # trials ran in this process, the best params on 2 ranks
    best = read_json(tmp_path / "models" / "runs" / "cnn_lstm" / "optuna" / "best_params.json")
    meta = read_json(tmp_path / "models" / "runs" / "cnn_lstm" / "model" / "metadata.json")
    assert best["trials"] == 2 and meta["distributed"]["world_size"] == 2
    assert meta["params"]["learning_rate"] == pytest.approx(best["best_params"]["cnn_lstm.learning_rate"])
    assert [e.model_id for e in ModelRegistry(tmp_path / "models").list_models()] == [out["model_id"]]


def test_agent_on_a_new_cnn_lstm_trained_distributed(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(distributed_params(backend="torchrun")))
    command = [str(Path(sys.executable).parent / "trade-agent"), "train", "ppo", "synthetic"]
    result = subprocess.run(
        [*command, "--cnn-lstm-model", "new", "--distributed", "--timesteps", "128", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    out = payload(result)
    registry = ModelRegistry(tmp_path / "models")
    (cnn_lstm,) = registry.list_models("cnn_lstm")
    assert registry.get_model(out["model_id"]).dependencies == [cnn_lstm.model_id]
    assert cnn_lstm.training_config["runtime"]["threads"] == 1  # threads_per_process of the 2 ranks
    refused = subprocess.run(
        [*command, "--cnn-lstm-model", cnn_lstm.model_id, "--distributed"], cwd=tmp_path, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert f"--distributed trains the CNN-LSTM (stage 1) and {cnn_lstm.model_id} is already trained" in refused.stderr
