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
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pipeline_copy import read_metrics, run_pipeline, source_commit


def run_seed(seed: int, workdir: Path, worktree: bool = False) -> dict[str, dict[str, float]]:
    """``metrics/evaluate.json`` of the default pipeline with ``base.seed`` = ``seed``."""
    repo = run_pipeline(workdir / f"seed-{seed}", {"base.seed": seed}, worktree=worktree, threads=1)
    return read_metrics(repo, "metrics/evaluate.json")


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
    parser.add_argument("--worktree", action="store_true", help="copy the working tree instead of HEAD")
    args = parser.parse_args()
    commit = source_commit(args.worktree)
    results = {seed: run_seed(seed, args.workdir / commit, args.worktree) for seed in args.seeds}
    print(f"commit {commit}\n")
    print(table(results))


if __name__ == "__main__":
    main()
