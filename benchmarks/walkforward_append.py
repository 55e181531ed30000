"""Appending bars to the walk-forward: which stages re-run, and how long it takes.

In a throw-away copy of the committed project (see ``pipeline_copy``) the embedded bars go
in as a file cut at ``--cut``; ``dvc repro walkforward`` builds ``--folds`` once. Then the
bars up to ``--append`` are written and ``dvc repro walkforward`` runs again, timed: only
the folds whose windows hold the new bars (and the aggregate) should run, the rest report
"didn't change". Prints both runs' stage lines and the second run's wall time.

    python benchmarks/walkforward_append.py --cut 2012-11-30 --append 2012-12-31
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pipeline_copy import _copy_files, copy_env, init_copy, source_commit


def _bars(until: str) -> pd.DataFrame:
    from trade_agent.config import DataConfig
    from trade_agent.data.ingest import load_market_data

    frame, _ = load_market_data(DataConfig())  # the embedded sample, validated and aligned
    return frame[frame["timestamp"] <= pd.Timestamp(until)]


def _repro(repo: Path, env: dict[str, str]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    done = subprocess.run(["dvc", "repro", "walkforward"], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dvc repro walkforward failed:\n{done.stderr[-3000:]}")
    lines = [x for x in done.stdout.splitlines() if x.startswith(("Running stage", "Stage '"))]
    return seconds, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cut", default="2012-11-30", help="the bars before the append")
    parser.add_argument("--append", default="2012-12-31", help="the bars after it")
    parser.add_argument("--folds", default="0,1,2,3,4", help="walkforward.folds (each needs test bars by --cut)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/trade-agent-walkforward-append"))
    args = parser.parse_args()
    repo = args.workdir / source_commit(False)
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    _copy_files(repo, worktree=False)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"] |= {"source": "file", "path": "data/raw/bars.csv"}
    params["walkforward"]["folds"] = [int(k) for k in args.folds.split(",")]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = copy_env(repo)
    init_copy(repo, env)
    for label, until in (("before", args.cut), ("after appending", args.append)):
        bars = _bars(until)
        bars.to_csv(repo / "data" / "raw" / "bars.csv", index=False)
        seconds, lines = _repro(repo, env)
        print(f"{label}: bars to {until} ({len(bars):,} rows), dvc repro walkforward {seconds:.1f} s")
        for line in lines:
            print(f"  {line}")


if __name__ == "__main__":
    main()
