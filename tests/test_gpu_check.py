"""`make gpu-check` on CPU: the no-CUDA path, the phases' timeouts and summary, the benchmark's
argument parsing, and the GPU machine's package set emulated (only its preinstalled packages
and wheels/'s, no DVC, TA-Lib, SB3, gymnasium, optuna)."""

from __future__ import annotations

import importlib.metadata as md
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks import run as bench_run
from trade_agent.devtools import gpu_check
from trade_agent.devtools.gpu_check import Budget, CheckSettings, run_check, run_phase

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CUDA_INFO: dict[str, Any] = {
    "python": "3.12.0",
    "torch": "2.11.0+cu130",
    "torch_cuda": "13.0",
    "cuda_available": True,
    "devices": [{"index": 0, "name": "Fake GPU", "memory_gib": 139.8, "capability": "9.0"}],
    "packages": {"pytest": "9.2.0", "PyYAML": "6.0.3", "deepspeed": "0.19.8"},
}

FAKE_TESTS = """
import pytest

def test_passes():
    pass

@pytest.mark.skip(reason="needs two GPUs")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known gap", strict=False)
def test_known_gap():
    assert False

def test_fails():
    assert 1 == 2, "one is not two"
"""


def fake_pytest(tmp_path: Path, source: str = FAKE_TESTS) -> list[str]:
    """A real pytest run on ``source`` (outside this repository's config), JUnit XML to {junit}."""
    (tmp_path / "test_fake.py").write_text(source)
    options = ["-v", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(tmp_path), "--junitxml={junit}"]
    return [PY, "-m", "pytest", *options, str(tmp_path / "test_fake.py")]


def write_figures(figures: dict[str, Any], code: int = 0) -> list[str]:
    """A benchmark phase that writes ``figures`` where the check reads them, then exits ``code``."""
    script = f"import sys; open(sys.argv[1], 'w').write({json.dumps(figures)!r}); sys.exit({code})"
    return [PY, "-c", script, "{figures}"]


def check(tmp_path: Path, info: dict[str, Any], **settings: Any) -> tuple[int, dict[str, Any], str]:
    out = io.StringIO()
    code, summary = run_check(CheckSettings(out=tmp_path / "summary.json", **settings), info=info, echo=out)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary, default=str))
    return code, summary, out.getvalue()


# -- the check without CUDA ---------------------------------------------------------------------


def test_without_cuda_nothing_runs_and_the_summary_says_so(tmp_path: Path) -> None:
    """This machine: the real probe, a CPU torch; pytest only lists the CUDA tests, all skipped."""
    out = tmp_path / "gpu-check.json"
    result = subprocess.run(
        [PY, "-m", "trade_agent.devtools.gpu_check"],
        cwd=ROOT,
        env={**os.environ, gpu_check.OUT_ENV: str(out), "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing was run" in result.stdout
    summary = json.loads(out.read_text())
    assert summary["status"] == "no_cuda" and summary["ran"] is False and summary["exit_code"] == 0
    assert summary["torch"] == torch.__version__ and summary["cuda_available"] is False
    assert summary["benchmark"] is None and "benchmark" not in summary["phases"]
    names = {t["name"] for t in summary["tests"]}
    assert "tests/test_gpu.py::test_oom_halves_the_micro_batch_on_the_real_allocator" in names
    assert len(names) >= 10 and {t["outcome"] for t in summary["tests"]} == {"skipped"}
    assert {t["message"] for t in summary["tests"]} == {"needs a CUDA GPU (torch.cuda.is_available() is False)"}
    assert summary["test_counts"]["skipped"] == len(names)


def test_make_gpu_check_needs_no_venv_and_exits_0_without_cuda(tmp_path: Path) -> None:
    out = tmp_path / "make.json"
    result = subprocess.run(
        ["make", "--no-print-directory", "gpu-check", f"GPU_PYTHON={PY}", f"{gpu_check.OUT_ENV}={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PYTHONPATH=")  # straight to the check: no `make install` first
    assert json.loads(out.read_text())["status"] == "no_cuda"


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"torch": "2.13.0+cpu", "torch_cuda": None, "cuda_available": False}, "CPU-only build"),
        ({"torch": "2.11.0+cu130", "torch_cuda": "13.0", "cuda_available": False}, "sees no usable CUDA device"),
    ],
)
def test_why_nothing_runs(info: dict[str, Any], reason: str, tmp_path: Path) -> None:
    assert reason in (gpu_check.no_cuda_reason(info) or "")
    code, summary, _ = check(tmp_path, info | {"packages": {}})  # no pytest: not even the listing
    assert code == 0 and summary["status"] == "no_cuda" and reason in summary["message"]
    assert summary["phases"] == {} and summary["tests"] == []
    assert gpu_check.no_cuda_reason(CUDA_INFO) is None


@pytest.mark.parametrize(
    ("info", "problem"),
    [
        ({"error": "the probe failed (timed out)"}, "the probe failed (timed out)"),
        ({"torch_error": "ModuleNotFoundError: No module named 'torch'"}, "torch cannot be imported"),
    ],
)
def test_a_failed_probe_is_an_error_not_a_machine_without_cuda(
    info: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    code, summary, _ = check(tmp_path, info)
    assert code == 1 and summary["status"] == "error" and problem in summary["message"]


def test_a_python_that_does_not_exist_fails_the_probe(tmp_path: Path) -> None:
    info = gpu_check.probe(str(tmp_path / "no-python"), timeout_s=10)
    assert "could not start" in info["error"]
    code, summary, _ = check(tmp_path, info)
    assert code == 1 and summary["status"] == "error"


# -- the check with CUDA, its phases faked -----------------------------------------------------------


def test_a_passing_check_records_each_test_and_the_figures(tmp_path: Path) -> None:
    passing = FAKE_TESTS.replace('assert 1 == 2, "one is not two"', "pass")
    figures = {"trainer": {"batches": {"256": {"fp32_samples_s": 1000.0, "bf16_samples_s": 2000.0}}}}
    code, summary, out = check(
        tmp_path,
        CUDA_INFO,
        tests_command=fake_pytest(tmp_path, passing),
        bench_command=write_figures(figures),
    )
    assert code == 0 and summary["status"] == "passed" and summary["ran"] is True, out
    assert summary["device_name"] == "Fake GPU" and summary["torch"] == "2.11.0+cu130"
    outcomes = {t["name"].rsplit("::", 1)[1]: (t["outcome"], t.get("message")) for t in summary["tests"]}
    assert outcomes == {
        "test_passes": ("passed", None),
        "test_skipped": ("skipped", "needs two GPUs"),
        "test_known_gap": ("xfailed", "known gap"),
        "test_fails": ("passed", None),
    }
    assert summary["test_counts"] == {"passed": 2, "failed": 0, "error": 0, "skipped": 1, "xfailed": 1, "xpassed": 0}
    assert summary["benchmark"] == figures
    assert summary["phases"]["benchmark"]["ok"] and summary["wall_s"] >= 0
    assert "== tests:" in out and "== benchmark:" in out and "gpu-check: passed" in out


def test_a_failing_test_or_benchmark_fails_the_check(tmp_path: Path) -> None:
    code, summary, out = check(
        tmp_path, CUDA_INFO, tests_command=fake_pytest(tmp_path), bench_command=write_figures({}, code=1)
    )
    assert code == 1 and summary["status"] == "failed" and summary["exit_code"] == 1
    failed = [t for t in summary["tests"] if t["outcome"] == "failed"]
    assert [t["name"].rsplit("::", 1)[1] for t in failed] == ["test_fails"]
    assert "one is not two" in failed[0]["message"]
    assert "1 failed" in summary["message"] and "benchmark exited with code 1" in summary["message"]
    assert "tests exited" not in summary["message"]  # the failure itself says it
    assert "FAILED" in out and "test_fails" in out


def test_a_hanging_phase_times_out_and_keeps_what_it_printed(tmp_path: Path) -> None:
    hang = (
        "import sys, time; print('tests/test_gpu.py::test_one PASSED [ 50%]'); "
        "print('tests/test_gpu.py::test_two SKIPPED (needs two GPUs) [100%]', flush=True); time.sleep(60)"
    )
    started = time.monotonic()
    code, summary, _ = check(
        tmp_path,
        CUDA_INFO,
        tests_s=2.0,
        tests_command=[PY, "-c", hang],
        bench_command=[PY, "-c", "pass"],
    )
    assert time.monotonic() - started < 30
    assert code == 1 and summary["phases"]["tests"]["timed_out"] and summary["phases"]["tests"]["returncode"] is None
    assert summary["tests"] == [
        {"name": "tests/test_gpu.py::test_one", "outcome": "passed"},
        {"name": "tests/test_gpu.py::test_two", "outcome": "skipped", "message": "needs two GPUs"},
    ]
    assert "tests timed out after 2 s" in summary["message"]
    assert summary["phases"]["benchmark"]["ok"]  # the benchmark still ran in the time kept for it


def test_missing_pytest_is_named_with_the_fix(tmp_path: Path) -> None:
    info = CUDA_INFO | {"packages": {"PyYAML": "6.0.3"}}
    code, summary, _ = check(tmp_path, info, run_benchmark=False)
    assert code == 1 and summary["phases"]["tests"]["skipped"].startswith("pytest not installed")
    assert "pip install line of README.md" in summary["message"]


# -- phases and budget ----------------------------------------------------------------------------


def test_a_timed_out_phase_takes_its_child_processes_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    spawn = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(120)"
    )
    phase = run_phase("hang", [PY, "-c", spawn], 3.0, echo=None, grace_s=2.0)
    assert phase.timed_out and phase.returncode is None and not phase.ok
    assert "started" in phase.output_tail and "timed out after 3 s" in phase.output_tail
    assert phase.seconds < 15
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(grandchild):
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_the_budget_shrinks_later_phases() -> None:
    now = [0.0]
    budget = Budget(100.0, clock=lambda: now[0])
    assert budget.timeout(60, reserve=30) == 60
    now[0] = 50.0
    assert budget.timeout(60, reserve=30) == 20 and budget.timeout(60) == 50
    now[0] = 120.0
    assert budget.remaining() == 0 and budget.timeout(60) == 0
    phase = run_phase("late", [PY, "-c", "pass"], budget.timeout(60), echo=None)
    assert phase.skipped == "no time left in the check's budget" and not phase.ok


def test_the_default_budget_fits_in_8_minutes() -> None:
    grace = 10.0  # SIGTERM to SIGKILL, per timed-out phase
    worst = gpu_check.PROBE_S + gpu_check.TESTS_S + gpu_check.BENCH_S
    assert gpu_check.TOTAL_S + 3 * grace <= 8 * 60 and worst >= gpu_check.TOTAL_S
    command = gpu_check.default_tests_command("python3")
    assert command[:5] == ["python3", "-m", "pytest", "-m", "cuda"] and "tests/test_gpu.py" in command
    bench = gpu_check.default_bench_command("python3")
    assert bench[2:6] == ["--only", "trainer,distributed", "--device", "cuda"]


# -- benchmarks/run.py --------------------------------------------------------------------------


def test_only_takes_a_comma_separated_list() -> None:
    parser = bench_run.build_parser()
    args = parser.parse_args(["--only", "trainer,distributed", "--device", "cuda", "--train-batch", "256,4096"])
    assert args.only == ("trainer", "distributed") and args.device == "cuda" and args.train_batch == (256, 4096)
    assert parser.parse_args(["--only", " trainer , trainer "]).only == ("trainer",)
    assert parser.parse_args([]).only == bench_run.BENCHMARKS
    for bad in ("trainer,gpu", ",", "nothing"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--only", bad])
    with pytest.raises(SystemExit):
        parser.parse_args(["--train-batch", "256,0"])


def test_cuda_benchmarks_refuse_a_machine_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_info:
        bench_run.main(["--only", "trainer", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


def test_trainer_benchmark_writes_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    args = ["--only", "trainer", "--train-rows", "400", "--repeat", "1", "--threads", "1", "--json", str(out)]
    figures = bench_run.main([*args, "--train-batch", "128,256"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    assert set(figures) == {"trainer"} and set(figures["trainer"]["batches"]) == {"128", "256"}
    assert all(row["fp32_samples_s"] > 0 for row in figures["trainer"]["batches"].values())
    assert "trainer: 371 windows (30 x 35) per epoch, batch 128, 1 threads" in capsys.readouterr().out


def test_the_cuda_trainer_benchmark_compares_fp32_and_bf16(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its logic and output on CPU: torch.cuda's calls stubbed, the same trainers on the CPU."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    for bf16 in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        figures = bench_run._bench_trainer_cuda(300, 1, (64,), device=torch.device("cpu"))
        row = figures["batches"]["64"]
        out = capsys.readouterr().out
        assert figures["device"] == "Fake GPU" and figures["windows"] == 271
        assert "trainer: 271 windows (30 x 35) per epoch, default CNN-LSTM, cuda (Fake GPU), best of 1" in out
        assert row["fp32_samples_s"] > 0 and row["plain_fp32_samples_s"] > 0
        if bf16:
            assert row["bf16_over_fp32"] == pytest.approx(row["bf16_samples_s"] / row["fp32_samples_s"])
            assert "bf16 / fp32:" in out
        else:
            assert row["bf16_samples_s"] is None and "Fake GPU has no bf16: fp32 only" in out


@pytest.mark.slow
def test_the_cuda_distributed_benchmark_says_one_gpu_is_not_a_comparison(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One (stubbed) GPU: the launched runs get nproc=1 and the output says what that measures.
    The runs themselves fall back to CPU here (cnn_lstm.fallback_to_cpu)."""
    from benchmarks.distributed import bench_distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    figures = bench_distributed(300, 1, device="cuda")
    out = capsys.readouterr().out
    assert figures["nproc"] == 1 and figures["gpus"] == 1 and figures["features"] == "synthetic"
    assert "errors" not in figures and figures["single"]["train_samples_s"] > 0
    assert "default CNN-LSTM, cuda (Fake GPU x 1 visible), synthetic features" in out
    assert "1 GPU, in-process:" in out and "1 GPU (torchrun):" in out and "1 GPU (deepspeed):" in out
    assert "speed-up vs 1 GPU in-process:" in out
    assert "the 1 vs N GPU comparison needs 2 or more" in figures["note"] and figures["note"] in out


# -- the GPU machine's packages, emulated ---------------------------------------------------------

# What the GPU machine has before wheels/ (the list), each with its requirements.
PREINSTALLED = ("torch", "numpy", "pandas", "pyarrow", "matplotlib", "rich", "typer")


def requirements_closure(names: list[str]) -> set[str]:
    """The installed distributions ``names`` need, transitively (markers evaluated here)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # e.g. nvidia-* and triton: not needed by the CPU torch here
        seen.add(name)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def wheelhouse_names() -> list[str]:
    lines = (ROOT / "requirements-gpu.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def gpu_machine_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the GPU machine's packages: the preinstalled ones with their
    requirements, plus exactly requirements-gpu.txt (installed there with --no-deps)."""
    root = tmp_path_factory.mktemp("gpu-machine")
    subprocess.run([PY, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    allowed = requirements_closure(list(PREINSTALLED)) | {canonicalize_name(n) for n in wheelhouse_names()}
    for name in sorted(allowed):
        dist = md.distribution(name)
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in sorted(tops - {"__pycache__"}):
            if not (site / top).exists() and (base / top).exists():
                (site / top).symlink_to(base / top)
    return python


def test_the_gpu_check_runs_with_only_the_gpu_machines_packages(gpu_machine_python: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    absent = "import importlib.util as u; print([m for m in ('dvc', 'talib', 'stable_baselines3', 'gymnasium', "
    absent += "'optuna', 'bokeh_sampledata', 'xdist') if u.find_spec(m)])"
    result = subprocess.run([str(gpu_machine_python), "-c", absent], env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr  # the emulation lacks them

    out = tmp_path / "summary.json"
    result = subprocess.run(
        [str(gpu_machine_python), "-m", "trade_agent.devtools.gpu_check", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["status"] == "no_cuda" and summary["phases"]["tests"]["returncode"] == 0  # conftest imports
    assert summary["test_counts"]["skipped"] >= 10 and summary["probe"]["packages"]["deepspeed"]


@pytest.mark.slow
def test_the_gpu_benchmarks_run_with_only_the_gpu_machines_packages(gpu_machine_python: Path, tmp_path: Path) -> None:
    """The benchmark phase's command on CPU: synthetic features (no TA-Lib), torchrun and the
    DeepSpeed launcher with wheels/'s DeepSpeed and its requirements only."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "figures.json"
    command = [str(gpu_machine_python), str(ROOT / "benchmarks" / "run.py"), "--only", "trainer,distributed"]
    command += ["--dist-features", "synthetic", "--dist-bars", "300", "--dist-epochs", "1", "--train-rows", "300"]
    command += ["--repeat", "1", "--threads", "1", "--json", str(out)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["distributed"]["features"] == "synthetic" and "errors" not in figures["distributed"]
    for backend in ("torchrun", "deepspeed"):
        assert figures["distributed"][backend]["train_samples_s"] > 0
    assert "default CNN-LSTM, cpu, synthetic features" in result.stdout
