"""Long work reports progress (CLI, logs, the Python API) and Ctrl-C ends it in one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import tiny_params_dict
from trade_agent.cli.main import app
from trade_agent.progress import Progress, ProgressEvent, reporting_to

CLI = [sys.executable, "-m", "trade_agent.cli"]


def _project(path: Path, **cnn_lstm: object) -> Path:
    raw = tiny_params_dict()
    raw["cnn_lstm"].update(cnn_lstm)
    path.mkdir(parents=True, exist_ok=True)
    (path / "params.yaml").write_text(yaml.safe_dump(raw))
    return path


def test_progress_lines_events_and_the_final_state(caplog: pytest.LogCaptureFixture) -> None:
    events: list[ProgressEvent] = []
    with (
        caplog.at_level("INFO", logger="trade_agent.progress"),
        reporting_to(events.append),
        Progress("ppo", 300, "steps", interval=0.0) as progress,
    ):
        for done in (100, 200, 300):
            progress.update(done, "val sharpe 0.4")
    assert [e.done for e in events] == [100, 200, 300] and events[-1].fraction == 1.0
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "ppo: 33% (100/300 steps, val sharpe 0.4)"
    assert lines[-1] == "ppo: 100% (300/300 steps, val sharpe 0.4)"  # the close line, also in the file log


def test_cli_training_prints_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(_project(tmp_path, epochs=2))
    monkeypatch.setenv("TRADE_AGENT_PROGRESS_INTERVAL", "0")
    args = ["train", "cnn-lstm-enhanced", "synthetic", "--params", "params.yaml", "--output-dir", "run", "--no-dvc"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cnn_lstm: 50% (" in result.output and "batches, epoch 1/2)" in result.output
    assert "cnn_lstm: 100% (" in result.output and "epoch 2/2 train/loss" in result.output


def test_api_training_logs_epochs_and_calls_back(tmp_path: Path) -> None:
    project = _project(tmp_path, epochs=2)
    script = (
        "from trade_agent.training import TrainingConfig, UnifiedTrainingManager\n"
        "events = []\n"
        "config = TrainingConfig('cnn_lstm', 'synthetic', 'out', epochs=2, params_file='params.yaml',"
        " progress=events.append)\n"
        "result = UnifiedTrainingManager().train_model(config)\n"
        "assert result.status == 'completed', result.error_message\n"
        "print('events', len(events), events[-1].line())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "events" in done.stdout and "cnn_lstm: 100% (" in done.stdout
    logged = (project / "logs" / "training.log").read_text()
    assert "epoch 1/2 train/loss" in logged and "epoch 2/2 train/loss" in logged
    assert "cnn_lstm: 100% (" in logged


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


@pytest.mark.slow
def test_ctrl_c_ends_a_cli_training_in_one_line_and_it_resumes(tmp_path: Path) -> None:
    project = _project(tmp_path, epochs=40, patience=100, batch_size=16)
    command = [*CLI, "train", "cnn-lstm-enhanced", "synthetic", "--params", "params.yaml", "--output-dir", "run"]
    # An ignored or blocked SIGINT is inherited across exec, and a Python that starts with it
    # ignored never raises KeyboardInterrupt: start the CLI as a shell would, whatever an
    # earlier test in this worker process left behind (the full suite lost the signal twice).
    inherited = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    process = subprocess.Popen(
        command,
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if list((project / "models" / "temp" / "cnn_lstm").glob("*/checkpoint.pt")):
            break
        time.sleep(0.02)
    assert process.poll() is None, "training finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, f"parent's SIGINT handler and blocked signals: {inherited}\n{stderr}"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "interrupted at epoch " in errors[0] and "/40; the checkpoint in models/temp/cnn_lstm/" in errors[0]
    assert errors[0].endswith("resumes on the next run")
    resumed = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
