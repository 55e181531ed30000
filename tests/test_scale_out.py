"""Scale-out for real on one machine (docs/scale-out.md): Optuna workers in separate processes
on a real PostgreSQL server and on a journal file, workers killed mid-trial, two-node
training rendezvous, and sweeps across two clones sharing a DVC remote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from tests import servers
from tests.conftest import tiny_params_dict
from trade_agent.registry import ModelRegistry
from trade_agent.tuning.study import WORKER_ATTR

pytestmark = [pytest.mark.scale_out, pytest.mark.slow]

N_TRIALS = 6


def search_params() -> dict:
    """Tiny trials (3 epochs each) with a 1 s heartbeat: a killed worker's trial is stale after 5 s
    (margin for a live worker starved of CPU by a loaded test run)."""
    raw = tiny_params_dict()
    raw["cnn_lstm"]["patience"] = 100
    raw["optimize"].update(n_startup_trials=2, n_warmup_steps=1, heartbeat_s=1, stale_after_s=5, retries=1)
    raw["optimize"]["cnn_lstm"] = {
        "budget": 3,
        "space": {"cnn_lstm.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}},
    }
    return raw


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    reason = servers.missing_reason()
    if reason:
        pytest.skip(reason)
    with servers.postgres_server() as url:
        yield url


def start_worker(workdir: Path, storage: str, study: str, faults: str | None = None) -> subprocess.Popen[str]:
    """``trade-agent train cnn-lstm-enhanced synthetic --optimize`` in its own folder, as on its own machine."""
    workdir.mkdir(parents=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(search_params(), sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if faults:
        env["TRADE_AGENT_FAULTS"] = faults
    command = ["train", "cnn-lstm-enhanced", "synthetic", "--optimize", "--n-trials", str(N_TRIALS)]
    command += ["--storage", storage, "--study-name", study, "--epochs", "1", "--json"]
    return subprocess.Popen(
        [sys.executable, "-m", "trade_agent.cli", *command],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 150) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def load(storage: str, study: str) -> optuna.Study:
    """The study as the workers left it (KeyError before one created it: never created here)."""
    from trade_agent.config import params_from_dict
    from trade_agent.tuning.study import open_storage

    return optuna.load_study(
        study_name=study, storage=open_storage(storage, params_from_dict(search_params()).optimize)
    )


def wait_for_running_trial(storage: str, study: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    """Until ``process`` has claimed a trial (it then dies inside it, by its fault rule)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None or process.returncode == -signal.SIGKILL, finish(process)[1]
        try:
            trials = load(storage, study).get_trials(deepcopy=False)
        except KeyError:
            trials = []  # not created yet
        if any(t.system_attrs.get(WORKER_ATTR, "").endswith(f":{process.pid}") for t in trials):
            return
        time.sleep(0.2)
    raise AssertionError(f"worker {process.pid} claimed no trial in {timeout} s")


def assert_exactly_n_finished(study: optuna.Study, killed: int = 0) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == N_TRIALS + killed, numbers  # no duplicate numbers
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == N_TRIALS, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    return finished


def registered_checksum(workdir: Path) -> str:
    (model,) = ModelRegistry(workdir / "models").list_models("cnn_lstm")
    return model.checksum


def test_three_workers_on_postgresql_run_exactly_n_trials(postgres_url: str, tmp_path: Path) -> None:
    workers = [start_worker(tmp_path / f"machine{k}", postgres_url, "pg-exact") for k in range(3)]
    results = [finish(w) for w in workers]
    assert [code for code, _ in results] == [0, 0, 0], results
    finished = assert_exactly_n_finished(load(postgres_url, "pg-exact"))
    assert len({t.system_attrs[WORKER_ATTR] for t in finished}) >= 2  # the trials were shared out
    # Every worker waited for the whole study, so each trained the same best params to the same model.
    bests = {
        json.loads((tmp_path / f"machine{k}/models/runs/cnn_lstm/optuna/best_params.json").read_text())["best_trial"]
        for k in range(3)
    }
    assert len(bests) == 1
    assert len({registered_checksum(tmp_path / f"machine{k}") for k in range(3)}) == 1


def killed_worker_is_retried(storage: str, study_name: str, tmp_path: Path) -> None:
    """One worker SIGKILLs itself inside its first trial (after epoch 1 of 3): its trial goes
    stale, a survivor marks it FAIL and runs its retry; the study still ends with N finished."""
    doomed = start_worker(tmp_path / "doomed", storage, study_name, faults="kill_after_epoch=1")
    wait_for_running_trial(storage, study_name, doomed)
    survivors = [start_worker(tmp_path / f"machine{k}", storage, study_name) for k in range(2)]
    assert finish(doomed)[0] == -signal.SIGKILL
    results = [finish(w) for w in survivors]
    assert [code for code, _ in results] == [0, 0], results
    study = load(storage, study_name)
    finished = assert_exactly_n_finished(study, killed=1)
    (failed,) = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.FAIL]
    assert failed.system_attrs[WORKER_ATTR].endswith(f":{doomed.pid}")
    (retry,) = [t for t in finished if t.system_attrs.get("failed_trial") == failed.number]
    assert retry.params == failed.params  # the same configuration, run to the end by a survivor
    assert not retry.system_attrs[WORKER_ATTR].endswith(f":{doomed.pid}")


def test_a_worker_killed_mid_trial_on_postgresql_is_failed_and_retried(postgres_url: str, tmp_path: Path) -> None:
    killed_worker_is_retried(postgres_url, "pg-killed", tmp_path)


def test_journal_file_storage_runs_n_trials_and_retries_a_killed_worker(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()  # the NFS folder every machine mounts
    killed_worker_is_retried(f"journal://{tmp_path / 'shared' / 'optuna.log'}", "journal-killed", tmp_path)


# -- two nodes on localhost -------------------------------------------------------------

# LayerNorm, no dropout: the same two ranks compute the same steps however they are placed.
EXACT_CNN_LSTM = {"dropout": 0.0, "norm": "layer", "epochs": 3, "batch_size": 32, "patience": 10}


def node_params(backend: str) -> dict:
    raw = tiny_params_dict(cnn_lstm=EXACT_CNN_LSTM)
    raw["distributed"].update({"backend": backend, "retries": 1, "retry_backoff_s": 0.2, "timeout_s": 30.0})
    return raw


def start_node(workdir: Path, *args: str, backend: str = "torchrun", faults: str = "") -> subprocess.Popen[str]:
    """One machine's ``trade-agent train cnn-lstm-enhanced synthetic --distributed`` (its own folder,
    so its own data preparation, features and registry)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(node_params(backend), sort_keys=False))
    command = ["train", "cnn-lstm-enhanced", "synthetic", "--distributed", "--no-dvc", "--json", *args]
    return subprocess.Popen(
        [sys.executable, "-m", "trade_agent.cli", *command],
        cwd=workdir,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TRADE_AGENT_FAULTS": faults},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def node_result(process: subprocess.Popen[str]) -> tuple[dict, str]:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{") :]), err


def two_nodes(root: Path, backend: str = "torchrun", faults_node1: str = "") -> tuple[dict, str, dict, str]:
    """Node 0 and node 1 on this machine. Their models/temp is one folder (node 1's is a link to
    node 0's), as the shared mount docs/distributed.md asks for: the sharded checkpoints.
    DeepSpeed: both read one hostfile and launch their own processes (``--no-ssh``)."""
    (root / "node0" / "models" / "temp").mkdir(parents=True)
    (root / "node1" / "models").mkdir(parents=True)
    (root / "node1" / "models" / "temp").symlink_to(root / "node0" / "models" / "temp")
    rendezvous = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(servers.free_port())]
    if backend == "deepspeed":
        hostfile = root / "hostfile"
        hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
        rendezvous += ["--hostfile", str(hostfile), "--no-ssh"]
    else:
        rendezvous += ["--nproc", "1"]
    nodes = [
        start_node(root / f"node{rank}", *rendezvous, "--node-rank", str(rank), backend=backend, faults=faults)
        for rank, faults in ((0, ""), (1, faults_node1))
    ]
    (out0, err0), (out1, err1) = (node_result(n) for n in nodes)
    return out0, err0, out1, err1


Reference = tuple[dict, dict]


@pytest.fixture(scope="module")
def single_node_two_processes(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Reference]:
    """The reference of a backend: the same training as 2 processes on one node (made once)."""
    made: dict[str, Reference] = {}

    def reference(backend: str) -> Reference:
        if backend not in made:
            root = tmp_path_factory.mktemp(f"single-node-{backend}")
            out, _ = node_result(start_node(root, "--nproc", "2", backend=backend))
            made[backend] = (out, model_weights(root, out["model_id"]))
        return made[backend]

    return reference


def model_weights(root: Path, model_id: str) -> dict:
    from trade_agent.cnn_lstm.store import load_cnn_lstm

    registry = ModelRegistry(root / "models")
    assert [m.model_id for m in registry.list_models()] == [model_id]  # node 0 alone registered, once
    model, _ = load_cnn_lstm(registry.restore(model_id, root / "restored"))
    return model.state_dict()


def assert_same_training(out: dict, weights: dict, reference: Reference) -> None:
    import torch

    ref_out, ref_weights = reference
    for key in ("val/loss", "val/accuracy", "test/loss", "test/accuracy", "best_epoch"):
        assert out["metrics"][key] == ref_out["metrics"][key], key
    for name, tensor in ref_weights.items():
        assert torch.equal(weights[name], tensor), name


@pytest.mark.parametrize("backend", ["torchrun", "deepspeed"])
def test_two_nodes_on_localhost_train_what_one_node_with_two_processes_trains(
    backend: str, single_node_two_processes: Callable[[str], Reference], tmp_path: Path
) -> None:
    out0, _, out1, err1 = two_nodes(tmp_path, backend)
    assert out1 == {"model_id": None, "message": "this node's ranks finished; node 0 writes and registers the model"}
    assert "node 0 registers the model" in err1
    assert not (tmp_path / "node1" / "models" / "registry.json").exists()
    reference = single_node_two_processes(backend)
    assert_same_training(out0, model_weights(tmp_path / "node0", out0["model_id"]), reference)


def test_a_killed_node1_process_relaunches_both_nodes_from_the_checkpoint(
    single_node_two_processes: Callable[[str], Reference], tmp_path: Path
) -> None:
    out0, err0, _, err1 = two_nodes(tmp_path, faults_node1="kill_after_epoch=1")
    for err in (err0, err1):  # each node's launcher saw the failure and relaunched its side
        assert "attempt 2/2 in 0.2 s" in err, err[-2000:]
    assert "resuming from" in err0 and "after epoch 1" in err0
    reference = single_node_two_processes("torchrun")
    assert_same_training(out0, model_weights(tmp_path / "node0", out0["model_id"]), reference)


# -- a sweep across two clones ------------------------------------------------------------


def sweep_origin(root: Path) -> tuple[Path, Path]:
    """A project repository (git + DVC, a local-folder DVC remote, params) and that remote."""
    origin, remote = root / "origin", root / "remote"
    origin.mkdir()
    remote.mkdir()
    raw = search_params()
    raw["optimize"]["cnn_lstm"]["space"]["cnn_lstm.dropout"] = {"type": "float", "low": 0.0, "high": 0.3}
    (origin / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    # A stage of the project's own, so a clone has a run-cache entry to share.
    stage = {"cmd": "echo prepared > prepared.txt", "deps": ["params.yaml"], "outs": ["prepared.txt"]}
    (origin / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"prepare": stage}}))
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "remote", "add", "-d", "shared", str(remote)],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "sweep project"],
    ):
        done = subprocess.run(command, cwd=origin, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    return origin, remote


def cli(clone: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trade_agent.cli", *args],
        cwd=clone,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def json_of(process: subprocess.Popen[str]) -> list[dict]:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out[out.index("[") :])


def test_a_sweep_across_two_clones_lists_every_model_once_restorable_in_either(
    postgres_url: str, tmp_path: Path
) -> None:
    origin, remote = sweep_origin(tmp_path)
    clones = []
    for name in ("clone_a", "clone_b"):  # each pulls the same commit, as on its own machine
        subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / name)], check=True)
        clones.append(tmp_path / name)
    built = subprocess.run(["dvc", "repro"], cwd=clones[0], capture_output=True, text=True, check=False)
    assert built.returncode == 0 and "Running stage 'prepare'" in built.stdout, built.stdout + built.stderr
    sweep = ["sweep", "cnn_lstm", "synthetic", "--storage", postgres_url, "--study", "two-clones", "--n-trials", "4"]
    workers = [cli(clone, *sweep, "--json") for clone in clones]
    ran = [json_of(w) for w in workers]
    trials = sorted(row["trial"] for rows in ran for row in rows)
    assert trials == [0, 1, 2, 3]  # every point once, none twice
    assert any(remote.rglob("*")), "the models' files reached the shared remote"
    assert (remote / "runs").is_dir()
    # Clone A's run-cache went with them: clone B restores A's stage run instead of running it.
    restored = subprocess.run(["dvc", "repro", "--pull"], cwd=clones[1], capture_output=True, text=True, check=False)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "Stage 'prepare' is cached - skipping run" in restored.stdout and "Running stage" not in restored.stdout
    assert (clones[1] / "prepared.txt").read_text() == "prepared\n"

    collect = ["exp", "collect", "--storage", postgres_url, "--study", "two-clones", "--json"]
    first = json_of(cli(clones[0], *collect))
    again = json_of(cli(clones[0], *collect))  # collecting again adds nothing
    assert [row["trial"] for row in first] == [row["trial"] for row in again]
    assert sorted(row["trial"] for row in first) == trials
    values = [row["value"] for row in first]
    assert values == sorted(values)  # ranked: lowest validation loss first
    assert {row["availability"] for row in first} == {"here"}  # restored and verified, pulled where needed

    registry_a = ModelRegistry(clones[0] / "models")
    listed = registry_a.list_models("cnn_lstm")
    assert len(listed) == 4 and len({m.checksum for m in listed}) == 4  # each model exactly once
    # Clone B's models restore in clone A byte for byte.
    registry_b = ModelRegistry(clones[1] / "models")
    by_checksum = {m.checksum: m.model_id for m in listed}
    for row in ran[1]:
        theirs = registry_b.restore(row["model_id"], tmp_path / "b" / row["model_id"])
        ours_id = by_checksum[registry_b.get_model(row["model_id"]).checksum]
        ours = registry_a.restore(ours_id, tmp_path / "a" / ours_id)
        files = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
        assert all((theirs / f).read_bytes() == (ours / f).read_bytes() for f in files)
