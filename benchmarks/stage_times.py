"""Wall time of every stage of the default ``dvc repro``, in a throw-away copy of this project.

Each stage runs alone (``dvc repro --single-item <stage>``) in ``dvc.yaml`` order, which is
a topological order, so one figure is one stage's process: imports, training, evaluation,
registration and DVC's own hashing of its outputs. ``--worktree`` copies the working tree
instead of HEAD, to measure an uncommitted change against a ``HEAD`` run.

    python benchmarks/stage_times.py [--worktree] [--out /tmp/stage_times.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pipeline_copy import _copy_files, copy_env, init_copy, source_commit


def stage_times(repo: Path, worktree: bool) -> dict[str, float]:
    """Copy the pipeline into ``repo`` and time each stage; returns seconds per stage."""
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    _copy_files(repo, worktree)
    env = copy_env(repo)
    init_copy(repo, env)
    listed = subprocess.run(["dvc", "stage", "list"], cwd=repo, env=env, capture_output=True, text=True, check=True)
    times: dict[str, float] = {}
    for line in listed.stdout.splitlines():
        stage = line.split()[0]
        start = time.perf_counter()
        done = subprocess.run(
            ["dvc", "repro", "--single-item", stage], cwd=repo, env=env, capture_output=True, text=True
        )
        times[stage] = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{stage} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        print(f"  {stage:<22} {times[stage]:7.1f} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worktree", action="store_true", help="copy the working tree, not HEAD")
    parser.add_argument("--out", type=Path, default=None, help="write {stage: seconds} JSON here")
    args = parser.parse_args()
    print(f"default dvc repro, stage by stage, at {source_commit(args.worktree)}")
    with tempfile.TemporaryDirectory(prefix="stage-times-") as tmp:
        times = stage_times(Path(tmp) / "repo", args.worktree)
    print(f"  {'total':<22} {sum(times.values()):7.1f} s")
    if args.out is not None:
        args.out.write_text(json.dumps(times, indent=1))


if __name__ == "__main__":
    main()
