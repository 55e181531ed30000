"""CLI trainings run as DVC experiments; queued sweeps register without conflicts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "trade_agent.cli"]


def models(repo: Path, model_type: str) -> list[dict]:
    listed = run([*CLI, "train", "list", "--model-type", model_type, "--json"], repo)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def commit_baseline(repo: Path) -> None:
    """Commit the reproduced pipeline (`dvc_repo`): what a project looks like after `make run`."""
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        done = run(cmd, repo)
        assert done.returncode == 0, done.stdout + done.stderr


def test_cli_run_is_a_dvc_experiment_and_an_unchanged_request_is_served_from_cache(dvc_repo: Path) -> None:
    commit_baseline(dvc_repo)
    params_before = (dvc_repo / "params.yaml").read_bytes()
    first = run([*CLI, "train", "cnn-lstm-enhanced", "synthetic", "--epochs", "3", "--json"], dvc_repo)
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads(first.stdout[first.stdout.index("{") :])
    assert not result["cached"] and result["model_id"].startswith("cnn_lstm_v1.1.0")
    # The stage's own lines are relayed while the experiment runs (not minutes of silence).
    assert "epoch 3/3 train/loss" in first.stderr and "cnn_lstm: 100% (" in first.stderr
    assert (dvc_repo / "params.yaml").read_bytes() == params_before  # the workspace is untouched
    entry = next(m for m in models(dvc_repo, "cnn_lstm") if m["model_id"] == result["model_id"])
    assert f"experiment:{result['experiment']}" in entry["tags"]
    assert any(tag.startswith("baseline:") for tag in entry["tags"])
    shown = run(["dvc", "exp", "show", "--json"], dvc_repo)
    assert result["experiment"] in shown.stdout

    again = run([*CLI, "train", "cnn-lstm-enhanced", "synthetic", "--epochs", "3", "--json"], dvc_repo)
    assert again.returncode == 0, again.stdout + again.stderr
    repeat = json.loads(again.stdout[again.stdout.index("{") :])
    assert repeat["cached"] and repeat["model_id"] == result["model_id"]
    assert len(models(dvc_repo, "cnn_lstm")) == 2  # the baseline's and the experiment's: nothing new

    applied = run(["dvc", "exp", "apply", result["experiment"]], dvc_repo)
    assert applied.returncode == 0, applied.stderr
    assert yaml.safe_load((dvc_repo / "params.yaml").read_text())["cnn_lstm"]["epochs"] == 3


def test_inputs_are_checked_before_dvc_and_stage_errors_are_the_stages_own(
    dvc_fresh_repo: Path, tmp_path: Path
) -> None:
    bad_value = run([*CLI, "train", "cnn-lstm-enhanced", "synthetic", "--precision", "fp64"], dvc_fresh_repo)
    assert bad_value.returncode == 2 and "cnn_lstm.precision" in bad_value.stderr
    assert "Traceback" not in bad_value.stderr and len(bad_value.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken.csv"  # outside the repo: copied in for the experiment
    broken.write_text("timestamp,open,high,low,close,volume\n2020-01-02,1,2,0.5,x,1\n")
    failed = run([*CLI, "train", "cnn-lstm-enhanced", str(broken)], dvc_fresh_repo)
    assert failed.returncode != 0
    copied = next((dvc_fresh_repo / "data").glob("broken.*.csv")).name  # named by content hash
    assert f"error: data/{copied}: column 'close', line 2: non-numeric value 'x'" in failed.stderr
    assert "ERROR" not in failed.stderr and "Traceback" not in failed.stderr


def test_a_queued_sweep_registers_each_distinct_model_once(dvc_fresh_repo: Path) -> None:
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        run(cmd, dvc_fresh_repo)
    queued = run(
        ["dvc", "exp", "run", "--queue", "-S", "cnn_lstm.learning_rate=0.001,0.003,0.01", "cnn_lstm"], dvc_fresh_repo
    )
    assert queued.returncode == 0, queued.stderr
    started = run(["dvc", "queue", "start", "-j", "2"], dvc_fresh_repo)
    assert started.returncode == 0, started.stderr
    deadline = time.time() + 600
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], dvc_fresh_repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status + run(["dvc", "queue", "logs", "--help"], dvc_fresh_repo).stdout
    registered = models(dvc_fresh_repo, "cnn_lstm")
    assert len(registered) == 3 and len({m["model_id"] for m in registered}) == 3
    assert sorted(m["training_config"]["learning_rate"] for m in registered) == [0.001, 0.003, 0.01]
    ranked = json.loads(run([*CLI, "exp", "compare", "--json"], dvc_fresh_repo).stdout)
    assert len(ranked) == 3 and len({r["experiment"] for r in ranked}) == 3
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


def test_a_model_trained_in_one_clone_is_fetched_by_id_in_another(dvc_repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    for cmd in (  # dvc_repo is reproduced: the CNN-LSTM it trained is pushed, exported and committed
        ["dvc", "remote", "add", "-d", "shared", str(remote)],
        ["dvc", "push"],
        [*CLI, "models", "export"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "trained"],
        ["git", "clone", "-q", str(dvc_repo), str(tmp_path / "clone")],
    ):
        done = run(cmd, dvc_repo)
        assert done.returncode == 0, done.stdout + done.stderr
    clone = tmp_path / "clone"
    (model,) = models(clone, "cnn_lstm")  # known from the committed models/registry.json
    got = run([*CLI, "models", "get", model["model_id"], "-o", "got"], clone)
    assert got.returncode == 0, got.stdout + got.stderr
    original = dvc_repo / "models" / "pipeline" / "cnn_lstm"
    for path in original.rglob("*"):
        if path.is_file():
            assert (clone / "got" / path.relative_to(original)).read_bytes() == path.read_bytes()
    assert not (clone / "models" / "pipeline" / "cnn_lstm").exists()  # fetched, not retrained

    # Experiments travel too: `dvc exp push` to a git remote, `dvc exp pull` in the clone.
    origin = tmp_path / "origin.git"
    for cmd, where in (
        (["git", "init", "-q", "--bare", str(origin)], dvc_repo),
        (["git", "remote", "add", "origin", str(origin)], dvc_repo),
        (["dvc", "exp", "run", "-n", "shared-exp", "-S", "cnn_lstm.epochs=3", "cnn_lstm"], dvc_repo),
        (["dvc", "exp", "push", "origin", "shared-exp"], dvc_repo),
        (["git", "remote", "set-url", "origin", str(origin)], clone),
        (["dvc", "exp", "pull", "origin", "shared-exp"], clone),
    ):
        done = run(cmd, where)
        assert done.returncode == 0, " ".join(cmd) + done.stdout + done.stderr
    assert "shared-exp" in run(["dvc", "exp", "list", "--name-only"], clone).stdout
