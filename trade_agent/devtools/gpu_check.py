"""``make gpu-check``: every CUDA path of stage 1 on a real GPU, one command, at most 8 minutes.

Phases, each with a timeout inside one overall budget:

1. probe (a subprocess, so a broken driver cannot hang the check): torch, CUDA, the GPUs and
   the versions of the packages the GPU paths need;
2. tests: ``pytest -m cuda tests/test_gpu.py`` (device selection, fp32/bf16/fp16 + GradScaler
   training, checkpoint resume, DeepSpeed ZeRO-2/3 and optimizer offload on one GPU, the
   launchers over NCCL, out-of-memory back-off on the real allocator, the CPU fallback);
3. benchmark: ``benchmarks/run.py --only trainer,distributed --device cuda`` (fp32 vs bf16
   samples/s, 1 vs N GPUs).

It writes one JSON summary: ``--out``, else ``$GPU_CHECK_OUT``, else ``reports/gpu-check.json``.
Without CUDA (a CPU-only torch, or no visible device) it runs nothing, says so, still writes
the summary and exits 0; when the probe itself fails (no torch, a crash) it exits 1; otherwise
the exit code is 0 only when no test failed and nothing timed out.

This module uses the standard library only: the GPU machine's own python runs it with
``PYTHONPATH`` at the repository (no install, no .venv), and the phases run there as
subprocesses of that python.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path("reports") / "gpu-check.json"
OUT_ENV = "GPU_CHECK_OUT"
TEST_FILES = ("tests/test_gpu.py",)
# Distributions the GPU paths import beyond the standard library (reported with their versions).
PACKAGES = (
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "rich",
    "PyYAML",
    "filelock",
    "pytest",
    "deepspeed",
    "pydantic",
)
# Seconds: the whole check stays within 8 minutes; each phase gets at most its cap and never
# more than what is left.
TOTAL_S = 450.0
PROBE_S = 60.0
TESTS_S = 260.0
BENCH_S = 170.0
BENCH_ARGS = ("--only", "trainer,distributed", "--device", "cuda", "--train-batch", "256,4096")
TAIL_CHARS = 6000

PROBE_CODE = """
import importlib.metadata as md, json, platform, sys
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
try:
    import torch
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
else:
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = bool(torch.cuda.is_available())
    info["devices"] = []
    if info["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                    "capability": f"{p.major}.{p.minor}"})
        for key, get in (("bf16_supported", lambda: bool(torch.cuda.is_bf16_supported())),
                         ("cudnn", lambda: torch.backends.cudnn.version()),
                         ("nccl", lambda: str(torch.cuda.nccl.version()))):
            try:
                info[key] = get()
            except Exception as exc:
                info[key] = f"unknown ({type(exc).__name__}: {exc})"
packages = {}
for name in sys.argv[1:]:
    try:
        packages[name] = md.version(name)
    except md.PackageNotFoundError:
        packages[name] = None
info["packages"] = packages
print("GPU_CHECK_PROBE " + json.dumps(info))
"""
_PROBE_PREFIX = "GPU_CHECK_PROBE "
_VERBOSE_LINE = re.compile(r"^(\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b(.*?)(?:\s+\[\s*\d+%\])?$")
_VERBOSE_OUTCOME = {
    "PASSED": "passed",
    "FAILED": "failed",
    "SKIPPED": "skipped",
    "ERROR": "error",
    "XFAIL": "xfailed",
    "XPASS": "xpassed",
}


@dataclass
class PhaseResult:
    """One subprocess phase: how it ended and the tail of what it printed."""

    name: str
    command: list[str]
    timeout_s: float
    returncode: int | None = None  # None: it did not end by itself (timed out, killed)
    timed_out: bool = False
    seconds: float = 0.0
    output_tail: str = ""
    skipped: str | None = None  # why the phase did not run
    collected: list[str] = field(default_factory=list)  # every line ``collect`` matched, not just the tail

    @property
    def ok(self) -> bool:
        return self.skipped is None and not self.timed_out and self.returncode == 0


@dataclass
class Budget:
    """Wall-clock budget of the whole check (monotonic seconds)."""

    total_s: float = TOTAL_S
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float:
        return max(self.total_s - self.elapsed(), 0.0)

    def timeout(self, cap: float, reserve: float = 0.0) -> float:
        """A phase's timeout: at most ``cap``, leaving ``reserve`` seconds for later phases."""
        return max(min(cap, self.remaining() - reserve), 0.0)


def _kill_group(process: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def run_phase(
    name: str,
    command: Sequence[str],
    timeout_s: float,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    echo: TextIO | None = sys.stdout,
    grace_s: float = 10.0,
    collect: re.Pattern[str] | None = None,
) -> PhaseResult:
    """Run ``command`` in its own process group, echoing its output, for at most ``timeout_s``.

    On timeout the whole group gets SIGTERM, then SIGKILL after ``grace_s``; whatever the
    command started (pytest's launcher processes, DeepSpeed's ranks) goes with it. After a
    normal exit, stragglers left in the group are killed too, so no GPU process outlives
    its phase.
    """
    result = PhaseResult(name, list(command), round(timeout_s, 1))
    if timeout_s <= 0:
        result.skipped = "no time left in the check's budget"
        return result
    lines: collections.deque[str] = collections.deque(maxlen=400)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
    except OSError as exc:  # e.g. the python given does not exist
        result.skipped = f"could not start {command[0]}: {exc}"
        return result

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if collect is not None and collect.match(line.strip()):
                result.collected.append(line.rstrip("\n"))
            if echo is not None:
                echo.write(line)
                echo.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        result.returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        result.timed_out = True
        _kill_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            process.wait()
        message = f"\n[gpu-check] {name}: timed out after {timeout_s:.0f} s; its processes were stopped\n"
        lines.append(message)
        if echo is not None:
            echo.write(message)
    finally:
        _kill_group(process, signal.SIGKILL)
        reader.join(timeout=5.0)
        if not reader.is_alive() and process.stdout is not None:
            process.stdout.close()
    result.seconds = round(time.monotonic() - started, 1)
    result.output_tail = "".join(lines)[-TAIL_CHARS:]
    return result


def probe(python: str, timeout_s: float = PROBE_S, env: dict[str, str] | None = None) -> dict[str, Any]:
    """What the phases' python sees: torch, CUDA, GPUs, package versions (``error`` on failure)."""
    phase = run_phase("probe", [python, "-c", PROBE_CODE, *PACKAGES], timeout_s, env=env, echo=None)
    for line in reversed(phase.output_tail.splitlines()):
        if line.startswith(_PROBE_PREFIX):
            info: dict[str, Any] = json.loads(line[len(_PROBE_PREFIX) :])
            return info
    why = phase.skipped or ("timed out" if phase.timed_out else f"exit code {phase.returncode}")
    return {"error": f"the probe of {python} failed ({why}): {phase.output_tail.strip()[-1000:]}".rstrip(": ")}


def no_cuda_reason(info: dict[str, Any]) -> str | None:
    """None when the probe saw a usable CUDA device, else why nothing can run (or the probe failed)."""
    if "error" in info:
        return str(info["error"])
    if "torch_error" in info:
        return f"torch cannot be imported ({info['torch_error']})"
    if info.get("cuda_available") and info.get("devices"):
        return None
    if not info.get("torch_cuda"):
        return f"this torch ({info.get('torch')}) is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    return f"torch {info.get('torch')} (CUDA {info.get('torch_cuda')}) sees no usable CUDA device{hidden}"


def parse_junit(path: Path) -> list[dict[str, Any]]:
    """Per-test outcomes from pytest's JUnit XML: passed, failed, error, skipped, xfailed."""
    tests: list[dict[str, Any]] = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "")
        entry: dict[str, Any] = {
            "name": f"{module.replace('.', '/')}.py::{case.get('name', '')}" if module else case.get("name", ""),
            "outcome": "passed",
            "seconds": round(float(case.get("time", "0") or 0), 2),
        }
        for child in case:
            if child.tag in ("failure", "error"):
                entry["outcome"] = "failed" if child.tag == "failure" else "error"
                entry["message"] = child.get("message", "")
                entry["details"] = (child.text or "")[-2000:]
                break
            if child.tag == "skipped":
                entry["outcome"] = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
                entry["message"] = _skip_reason(child.get("message", ""))
                break
        tests.append(entry)
    return tests


def _skip_reason(message: str) -> str:
    return message.removeprefix("Skipped: ").strip()


def parse_verbose(output: str) -> list[dict[str, Any]]:
    """Per-test outcomes from ``pytest -v`` lines (what is left when no JUnit XML was written)."""
    tests: dict[str, dict[str, Any]] = {}
    for line in output.splitlines():
        match = _VERBOSE_LINE.match(line.strip())
        if match:
            entry: dict[str, Any] = {"name": match.group(1), "outcome": _VERBOSE_OUTCOME[match.group(2)]}
            reason = match.group(3).strip().strip("()")
            if reason:
                entry["message"] = reason
            tests[match.group(1)] = entry
    return list(tests.values())


def count_outcomes(tests: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = collections.Counter(str(t["outcome"]) for t in tests)
    return {
        outcome: counts.get(outcome, 0) for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    }


@dataclass
class CheckSettings:
    """Where the summary goes, which python runs the phases, and each phase's command and cap."""

    out: Path
    python: str = sys.executable
    total_s: float = TOTAL_S
    probe_s: float = PROBE_S
    tests_s: float = TESTS_S
    bench_s: float = BENCH_S
    # Commands of the phases ({junit} / {figures}: where they write their results); None: the defaults.
    tests_command: list[str] | None = None
    bench_command: list[str] | None = None
    run_benchmark: bool = True


def default_tests_command(python: str) -> list[str]:
    return [python, "-m", "pytest", "-m", "cuda", "-v", "-p", "no:cacheprovider", "--junitxml={junit}", *TEST_FILES]


def default_bench_command(python: str) -> list[str]:
    return [python, str(ROOT / "benchmarks" / "run.py"), *BENCH_ARGS, "--json", "{figures}"]


def child_env() -> dict[str, str]:
    """The phases' environment: the repository importable without installing it, output unbuffered."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        paths.insert(0, str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    """Atomically write the summary (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def _phase_dict(phase: PhaseResult) -> dict[str, Any]:
    data = asdict(phase)
    del data["collected"]
    data["ok"] = phase.ok
    return data


def run_check(
    settings: CheckSettings,
    info: dict[str, Any] | None = None,
    echo: TextIO = sys.stdout,
    budget: Budget | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run the phases and write the summary; returns (exit code, summary).

    ``info``: a probe result to use instead of probing (tests drive both branches with it).
    """
    budget = budget or Budget(settings.total_s)
    env = child_env()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    if info is None:
        info = probe(settings.python, budget.timeout(settings.probe_s), env)
    summary: dict[str, Any] = {
        "schema": 1,
        "started": started,
        "host": platform.node(),
        "python": info.get("python"),
        "torch": info.get("torch"),
        "torch_cuda": info.get("torch_cuda"),
        "cuda_available": bool(info.get("cuda_available")),
        "devices": info.get("devices", []),
        "device_name": (info.get("devices") or [{}])[0].get("name"),
        "probe": info,
        "tests": [],
        "test_counts": count_outcomes([]),
        "benchmark": None,
        "phases": {},
    }
    if "error" in info or "torch_error" in info:  # a broken set-up, not a machine without CUDA
        problem = info.get("error") or f"torch cannot be imported ({info['torch_error']})"
        summary |= {"status": "error", "ran": False, "message": f"{problem}; nothing was run"}
        return _finish(settings.out, summary, budget, 1, echo)
    reason = no_cuda_reason(info)
    missing = [name for name in ("pytest", "PyYAML") if not info.get("packages", {}).get(name)]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        junit, figures = Path(tmp) / "junit.xml", Path(tmp) / "bench.json"
        tests_command = _expand(settings.tests_command or default_tests_command(settings.python), junit, figures)
        if reason is not None:
            # Nothing runs; pytest only lists the CUDA tests with their skip reasons (a few seconds).
            listed = ""
            if not missing:
                echo.write(f"gpu-check: no CUDA: {reason}. Nothing runs; pytest lists the CUDA tests, all skipped:\n")
                timeout = budget.timeout(min(settings.tests_s, 90.0))
                phase = run_phase("tests", tests_command, timeout, env=env, echo=echo, collect=_VERBOSE_LINE)
                summary["phases"]["tests"] = _phase_dict(phase)
                _read_tests(summary, junit, phase)
                if not phase.ok:
                    listed = f"; listing them failed ({_phase_problem(phase) or 'see the output'})"
            skipped = summary["test_counts"]["skipped"]
            listed = listed or (f" ({skipped} CUDA tests skipped)" if skipped else "")
            summary |= {"status": "no_cuda", "ran": False, "message": f"no CUDA: {reason}; nothing was run{listed}"}
            return _finish(settings.out, summary, budget, 0, echo)

        echo.write(
            f"gpu-check: torch {info.get('torch')} (CUDA {info.get('torch_cuda')}), "
            + ", ".join(f"{d['name']} ({d['memory_gib']} GiB)" for d in info["devices"])
            + "\n"
        )
        reserve = min(settings.bench_s, 60.0) if settings.run_benchmark else 0.0
        if missing:
            tests_phase = PhaseResult("tests", tests_command, 0.0)
            tests_phase.skipped = (
                f"{' and '.join(missing)} not installed for {settings.python}: run the pip install line of "
                "README.md (GPU check) first"
            )
        else:
            echo.write(f"\n== tests: {' '.join(tests_command[1:])}\n")
            timeout = budget.timeout(settings.tests_s, reserve)
            tests_phase = run_phase("tests", tests_command, timeout, env=env, echo=echo, collect=_VERBOSE_LINE)
        summary["phases"]["tests"] = _phase_dict(tests_phase)
        _read_tests(summary, junit, tests_phase)

        if settings.run_benchmark:
            bench_command = _expand(settings.bench_command or default_bench_command(settings.python), junit, figures)
            echo.write(f"\n== benchmark: {' '.join(bench_command[1:])}\n")
            bench_phase = run_phase("benchmark", bench_command, budget.timeout(settings.bench_s), env=env, echo=echo)
            summary["phases"]["benchmark"] = _phase_dict(bench_phase)
            if figures.is_file():
                summary["benchmark"] = json.loads(figures.read_text())

    counts = summary["test_counts"]
    problems = [f"{counts[k]} {k}" for k in ("failed", "error") if counts[k]]
    for phase in (tests_phase, *([bench_phase] if settings.run_benchmark else [])):
        problem = _phase_problem(phase)
        if problem and not (phase is tests_phase and phase.returncode == 1 and problems):
            problems.append(problem)
    done = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no tests"
    if problems:
        summary |= {"status": "failed", "ran": True, "message": f"{done}; problems: {'; '.join(problems)}"}
        return _finish(settings.out, summary, budget, 1, echo)
    bench = "benchmark done" if settings.run_benchmark else "benchmark not asked for"
    summary |= {"status": "passed", "ran": True, "message": f"{done}; {bench}"}
    return _finish(settings.out, summary, budget, 0, echo)


def _expand(command: Sequence[str], junit: Path, figures: Path) -> list[str]:
    """``{junit}`` and ``{figures}`` in a command: where the phase writes its results."""
    return [part.replace("{junit}", str(junit)).replace("{figures}", str(figures)) for part in command]


def _read_tests(summary: dict[str, Any], junit: Path, phase: PhaseResult) -> None:
    if junit.is_file():
        summary["tests"] = parse_junit(junit)
    else:  # timed out or crashed before pytest wrote it: what its -v lines said
        summary["tests"] = parse_verbose("\n".join(phase.collected))
    summary["test_counts"] = count_outcomes(summary["tests"])


def _phase_problem(phase: PhaseResult) -> str | None:
    """Why a phase counts against the check (None: it ran and exited 0)."""
    if phase.skipped:
        return f"{phase.name} not run ({phase.skipped})"
    if phase.timed_out:
        return f"{phase.name} timed out after {phase.timeout_s:.0f} s"
    if phase.returncode == 5 and phase.name == "tests":
        return "no cuda-marked tests were collected"
    if phase.returncode != 0:
        return f"{phase.name} exited with code {phase.returncode}"
    return None


def _finish(out: Path, summary: dict[str, Any], budget: Budget, code: int, echo: TextIO) -> tuple[int, dict[str, Any]]:
    summary["wall_s"] = round(budget.elapsed(), 1)
    summary["exit_code"] = code
    for test in summary["tests"]:
        if test["outcome"] in ("failed", "error"):
            echo.write(f"  {test['outcome'].upper()} {test['name']}: {test.get('message', '')}\n")
    write_summary(out, summary)
    echo.write(f"gpu-check: {summary['status']}: {summary['message']} ({summary['wall_s']:.0f} s); summary in {out}\n")
    return code, summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trade_agent.devtools.gpu_check", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=None, help=f"summary JSON (default: ${OUT_ENV}, else {DEFAULT_OUT})"
    )
    parser.add_argument("--python", default=sys.executable, help="the python that runs the phases")
    parser.add_argument("--total-timeout", type=float, default=TOTAL_S, help="seconds for the whole check")
    parser.add_argument("--tests-timeout", type=float, default=TESTS_S)
    parser.add_argument("--bench-timeout", type=float, default=BENCH_S)
    parser.add_argument("--no-benchmark", action="store_true", help="run the CUDA tests only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or Path(os.environ.get(OUT_ENV) or DEFAULT_OUT)
    settings = CheckSettings(
        out=out,
        python=args.python,
        total_s=args.total_timeout,
        tests_s=args.tests_timeout,
        bench_s=args.bench_timeout,
        run_benchmark=not args.no_benchmark,
    )
    code, _ = run_check(settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
