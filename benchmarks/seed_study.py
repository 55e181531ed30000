"""Out-of-sample results over several seeds: the default pipeline, once per seed.

Each seed runs ``dvc repro`` in its own throw-away copy of the committed project (``git
archive HEAD``, imported ahead of any installed copy; own DVC cache and registry, nothing
written here) and contributes ``metrics/evaluate.json``. Prints a
Markdown table: per model the test Sharpe after costs as mean ± std over seeds, each
seed's value with its 95 % block-bootstrap interval, beside the baselines.

    python benchmarks/seed_study.py --seeds 42 1 2 [--workdir /tmp/seed-study]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", "stages", "trade_agent", "data/raw")  # from git HEAD


def run_seed(seed: int, workdir: Path) -> dict[str, dict[str, float]]:
    repo = workdir / f"seed-{seed}"
    result_file = repo / "metrics" / "evaluate.json"
    if result_file.is_file():  # resumable: a finished seed is not recomputed
        return json.loads(result_file.read_text())
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD", *COPIED], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["base"]["seed"] = seed
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(repo),  # this copy's trade_agent, not the editable install
    }
    commit = ["git", "-c", "user.name=seed-study", "-c", "user.email=seed-study@localhost", "commit", "-qm", "init"]
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], commit, ["dvc", "repro"]):
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"seed {seed}: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(result_file.read_text())


def table(results: dict[int, dict[str, dict[str, float]]]) -> str:
    seeds = sorted(results)
    models = list(results[seeds[0]])
    header = ["model", "Sharpe mean ± std", *(f"seed {s}: Sharpe [95% CI]" for s in seeds), "return mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in sorted(models, key=lambda m: -np.mean([results[s][m]["sharpe"] for s in seeds])):
        sharpes = [results[s][model]["sharpe"] for s in seeds]
        cells = [
            f"{results[s][model]['sharpe']:.2f} [{results[s][model]['sharpe_ci_low']:.2f}, "
            f"{results[s][model]['sharpe_ci_high']:.2f}]"
            for s in seeds
        ]
        returns = np.mean([results[s][model]["total_return"] for s in seeds])
        lines.append(
            f"| {model} | {np.mean(sharpes):.2f} ± {np.std(sharpes, ddof=1) if len(seeds) > 1 else 0.0:.2f} | "
            + " | ".join(cells)
            + f" | {100 * returns:.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/trade-agent-seed-study"))
    args = parser.parse_args()
    results = {seed: run_seed(seed, args.workdir) for seed in args.seeds}
    print(table(results))


if __name__ == "__main__":
    main()
