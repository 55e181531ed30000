"""`make bench` keeps working, and the figures it prints agree with one another (tiny sizes)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"(-?[\d,]+(?:\.\d+)?)"  # a share can be negative when timing noise favours ours


def value(text: str) -> float:
    return float(text.replace(",", ""))


def row(stdout: str, label: str, *units: str) -> list[float]:
    """The numbers printed on the line that starts with ``label``, each followed by its unit."""
    pattern = re.escape(label) + "".join(rf"\s*{NUMBER}\s*{re.escape(unit)}" for unit in units)
    found = re.findall(rf"^\s*{pattern}", stdout, flags=re.MULTILINE)
    assert len(found) == 1, f"{label!r} with units {units} not printed exactly once:\n{stdout}"
    return [value(v) for v in (found[0] if isinstance(found[0], tuple) else (found[0],))]


def assert_quotient(printed: float, decimals: int, numerator: float, denominator: float) -> None:
    """``printed`` is ``numerator / denominator`` up to the rounding of all three as printed
    (rates to integers, the quotient to ``decimals`` places)."""
    assert numerator > 0 and denominator > 0, f"a rate is not positive: {numerator}, {denominator}"
    expected = numerator / denominator
    slack = 0.5 * 10.0**-decimals + abs(expected) * (0.5 / numerator + 0.5 / denominator) * 1.01 + 1e-12
    assert abs(printed - expected) <= slack, f"printed {printed}, but {numerator} / {denominator} = {expected:.6f}"


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
            "--timestamp-rows",
            "2000",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout

    # Timestamps: each detected layout parses to exactly what pandas gives with the format.
    assert "timestamps: 2,000 rows per layout" in out
    for layout in ("m/d/yyyy HH:MM (Yahoo-like, month-first)", "dd.mm.yyyy HH:MM:SS.fff (Dukascopy)", "ISO 8601"):
        ours, baseline, ratio = row(out, f"{layout}: ours", "s detected, pandas with the format", "s:", "x;")
        assert ours > 0 and baseline > 0 and ratio > 0
        assert next(x for x in out.splitlines() if layout in x).endswith("identical: True")

    # Features: 2 symbols x 3,000 bars; each rate is rows / the seconds on its line, and the
    # speed-up is the pandas baseline's time over ours (= our rate over its rate).
    (rows,) = row(out, "features:", "rows (2 symbols x 3,000 bars)")
    assert rows == 2 * 3000
    ours_s, ours_rate = row(out, "trade-agent (TA-Lib per symbol):", "s", "rows/s")
    base_s, base_rate = row(out, "pandas rolling/ewm baseline:", "s", "rows/s")
    for seconds, rate in ((ours_s, ours_rate), (base_s, base_rate)):
        # Seconds printed to 2 decimals, the rate to an integer (which moves rows / rate by rows / rate^2 / 2).
        assert rate > 0 and abs(seconds - rows / rate) <= 0.005 + 0.5 * rows / rate**2 + 1e-9
    (speed_up,) = row(out, "speed-up vs pandas baseline:", "x")
    assert_quotient(speed_up, 1, ours_rate, base_rate)

    # Trainer: one window per row once 30 rows are there; 1 thread as asked.
    (windows,) = row(out, "trainer:", "windows (30 x 35) per epoch, batch 256,")
    assert windows == 600 - 30 + 1 and "256, 1 threads, default CNN-LSTM" in out
    trainer_s, trainer_rate = row(out, "trade-agent trainer:", "s/epoch", "samples/s")
    plain_s, plain_rate = row(out, "plain PyTorch loop:", "s/epoch", "samples/s")
    for seconds, rate in ((trainer_s, trainer_rate), (plain_s, plain_rate)):
        assert rate > 0 and abs(seconds - windows / rate) <= 0.005 + 0.5 * windows / rate**2 + 1e-9
    (throughput,) = row(out, "throughput ratio (ours / plain, target >= 0.95):", "")
    assert_quotient(throughput, 2, trainer_rate, plain_rate)

    # gym-anytrading is a bench-only extra: measured when installed, named when not.
    if "gym-anytrading is not installed" not in out:
        (single,) = row(out, "trade-agent PortfolioEnv:", "steps/s")
        (anytrading,) = row(out, "gym-anytrading stocks-v0:", "steps/s")
        assert_quotient(row(out, "ratio (ours / gym-anytrading):", "x")[0], 2, single, anytrading)
        (envs, vector_steps) = row(out, "vec env:", "envs,", "vector steps")
        assert (envs, vector_steps) == (4, max(400 // 4, 200))
        (native,) = row(out, "trade-agent VecPortfolioEnv:", "env-steps/s")
        (dummy,) = row(out, "DummyVecEnv of gym-anytrading stocks-v0:", "env-steps/s")
        assert_quotient(row(out, "ratio (native / gym-anytrading):", "x")[0], 2, native, dummy)

    # Backtest: our bars/s over the loop's bars/s, on the sizes asked for.
    (bars, assets) = row(out, "backtest:", "bars x", "assets, random targets")
    assert (bars, assets) == (3000, 4)
    vectorised, vectorised_s = row(out, "trade-agent (vectorised):", "bars/s  (", "s)")
    assert vectorised > 0 and abs(vectorised_s - bars / vectorised) <= 0.005 + 1e-9
    loop_bars, loop_rate = row(out, "share-and-cash loop (", "bars):", "bars/s")
    assert loop_bars == 500
    assert_quotient(row(out, "ratio (ours / loop):", "x")[0], 1, vectorised, loop_rate)
    if "vectorbt is not installed" not in out:
        vectorbt, _ = row(out, "vectorbt from_orders:", "bars/s  (", "s)")
        # Ours timed again, alternated with vectorbt: the ratio is against that rate.
        ratio, ours_here = row(out, "ratio (ours / vectorbt):", "x  (ours", "bars/s here)")
        assert_quotient(ratio, 1, ours_here, vectorbt)
        difference = re.search(r"same returns as vectorbt without fees: max \|difference\| (\S+)", out)
        assert difference is not None and float(difference.group(1)) < 1e-8

    # PPO: the ratio is real over constant, and the env's share is what the ratio leaves.
    assert re.search(r"^PPO: 512 steps, 8 envs, 4 assets x window 10 -> observation of \d+$", out, re.MULTILINE)
    (real,) = row(out, "on VecPortfolioEnv:", "steps/s")
    (constant,) = row(out, "on a constant-observation env:", "steps/s")
    ratio, share = row(out, "ratio (real / constant):", "(env share of PPO time", "%)")
    assert_quotient(ratio, 2, real, constant)
    assert abs(share / 100 - (1 - real / constant)) <= 0.005 + (real / constant) * (0.5 / real + 0.5 / constant)

    # Distributed: each speed-up is the launched run's rate over the single process's, once
    # for torchrun and once for DeepSpeed; training is part of the wall time, never faster.
    header = r"^distributed: ([\d,]+) training windows x 1 epochs, batch 256, default CNN-LSTM, cpu$"
    match = re.search(header, out, re.MULTILINE)
    assert match is not None and value(match.group(1)) > 0, out
    single_train, single_wall = row(out, "1 process x 2 threads:", "samples/s training", "end to end")
    assert single_train >= single_wall
    speed_ups = re.findall(rf"speed-up vs 1 process x 2 threads:\s*{NUMBER}x training,\s*{NUMBER}x end to end", out)
    assert len(speed_ups) == 2  # torchrun and DeepSpeed, in that order
    for backend, (training, end_to_end) in zip(("torchrun", "deepspeed"), speed_ups, strict=True):
        train_rate, wall_rate = row(out, f"2 processes x 1 thread ({backend}):", "samples/s training", "end to end")
        assert train_rate >= wall_rate
        assert_quotient(value(training), 2, train_rate, single_train)
        assert_quotient(value(end_to_end), 2, wall_rate, single_wall)
