"""`make bench` keeps working (tiny sizes; the figures themselves are not asserted here)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_run_and_report_ratios() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--symbols",
            "2",
            "--bars",
            "3000",
            "--train-rows",
            "600",
            "--repeat",
            "1",
            "--threads",
            "1",
            "--env-steps",
            "400",
            "--n-envs",
            "4",
            "--ppo-steps",
            "512",
            "--backtest-bars",
            "3000",
            "--loop-bars",
            "500",
            "--dist-bars",
            "400",
            "--dist-epochs",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "speed-up vs pandas baseline" in result.stdout and "throughput ratio" in result.stdout
    assert result.stdout.count("speed-up vs 1 process x 2 threads") == 2  # torchrun and DeepSpeed
    assert "ratio (real / constant)" in result.stdout and "ratio (ours / loop)" in result.stdout
    # gym-anytrading is a bench-only extra: measured when installed, named when not.
    assert "ratio (native / gym-anytrading)" in result.stdout or "gym-anytrading is not installed" in result.stdout
