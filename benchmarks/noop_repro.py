"""A no-op ``dvc repro`` of this project against the floor: a toy pipeline of as many stages.

The toy is a chain of ``cp`` stages in a fresh git + DVC repository, one file dep and one
out each: what DVC costs when a pipeline has nothing to check but its stages. Ours must
check every code fingerprint, data dep, param and output. Both run ``dvc repro`` with
everything up to date, alternated run by run; reported: the median of ``--pairs`` pairs
and their ratio (target <= 1.2).

Run from an up-to-date checkout (``make run`` first; ``make bench`` does).

    python benchmarks/noop_repro.py [--pairs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} in {cwd} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def stage_count(repo: Path) -> int:
    return len(_run(["dvc", "stage", "list"], repo).stdout.splitlines())


def toy_pipeline(repo: Path, stages: int) -> Path:
    """A built chain of ``stages`` copy stages."""
    repo.mkdir(parents=True)
    (repo / "s0.txt").write_text("0\n")
    chain = {
        f"s{i}": {"cmd": f"cp s{i - 1}.txt s{i}.txt", "deps": [f"s{i - 1}.txt"], "outs": [f"s{i}.txt"]}
        for i in range(1, stages + 1)
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": chain}, sort_keys=False))
    commit = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "toy"]
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"], ["git", "add", "-A"], commit):
        _run(command, repo)
    return repo


def timed_repro(repo: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = _run(["dvc", "repro"], repo)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args()
    pairs = max(args.pairs, 5)
    _, output = timed_repro(ROOT)  # builds whatever is stale, so the timed runs are no-ops
    if "Running stage" in output:
        print("noop repro: the checkout was not up to date; `dvc repro` built it first")
    stages = stage_count(ROOT)
    with tempfile.TemporaryDirectory(prefix="noop-toy-") as tmp:
        toy = toy_pipeline(Path(tmp) / "toy", stages)
        timed_repro(toy)  # warm the OS caches for both alike
        times: dict[str, list[float]] = {"ours": [], "toy": []}
        for _ in range(pairs):
            for name, repo in (("ours", ROOT), ("toy", toy)):
                seconds, output = timed_repro(repo)
                if "Running stage" in output:
                    raise SystemExit(f"noop repro: `dvc repro` in {repo} ran a stage; it must be a no-op:\n{output}")
                times[name].append(seconds)
    ours, floor = statistics.median(times["ours"]), statistics.median(times["toy"])
    print(f"noop repro: `dvc repro` with nothing to do, {stages} stages, alternated, median of {pairs} pairs")
    print(f"  trade-agent pipeline:          {ours:6.2f} s")
    print(f"  toy floor ({stages} copy stages):  {floor:6.2f} s")
    print(f"  ratio (ours / floor, target <= 1.2): {ours / floor:5.2f}")


if __name__ == "__main__":
    main()
