"""Planted-signal benchmark of the real pipeline: does every stage learn what is learnable?

For each AR coefficient phi and seed, the whole default pipeline (``dvc repro``: features,
CNN-LSTM, PPO/SAC/TD3, hybrid, ensemble, evaluate) runs in a throw-away copy of this
project on the ``synthetic`` source. Only ``data.*`` and ``base.seed`` differ from
params.yaml. Per stage it reports the test Sharpe after costs (from ``metrics/evaluate.json``,
the pipeline's own backtest), its share of an oracle's, and the CNN-LSTM's share of the
Bayes edge:

* the oracle holds ``sign(phi * r_t) / N`` of each asset after bar t's close (``r_t`` that
  bar's close-to-close log return, the planted predictor), filled and charged by the same
  backtester (:func:`trade_agent.evaluation.suite.run_backtest`) on the same test bars;
* the Bayes edge is ``bayes_directional_accuracy - 0.5`` for the label horizon
  (``data/features/metrics.json``); the CNN-LSTM's edge is its test directional accuracy
  (sign of its predicted forward return) minus 0.5.

Pure noise (phi = 0) runs too, unless ``--no-noise``. Prints a Markdown table per phi and
writes everything as JSON (``--out``). Each pipeline copy is kept under ``--workdir``, so an
interrupted study resumes where it stopped.

    python benchmarks/learning.py --ar 0.3 --symbols 4 --bars 4000 --seeds 1 2 3
    python benchmarks/learning.py --ar 0.3 0.15 --seeds 1 2 3 --worktree   # uncommitted code
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pipeline_copy import read_metrics, run_pipeline, source_commit

STAGES = ("cnn_lstm", "ppo", "sac", "td3", "hybrid_ppo", "ensemble")
BASELINES = ("oracle", "buy_and_hold")


def oracle_sharpe(repo: Path, ar: float) -> dict[str, float]:
    """The oracle's test metrics after costs, by the pipeline's own backtester and params."""
    from trade_agent.config import load_params
    from trade_agent.evaluation.positions import SplitData
    from trade_agent.evaluation.suite import run_backtest

    params = load_params(repo / "params.yaml")
    common = params.rl.common
    data = SplitData.load(repo / "data/features", None, repo / "data/prepared/market.parquet", params.evaluate.split)
    open_, close, _, _ = data.prices()
    # The decision bars are 0..K-1 of the split; r_t needs the close before the first one,
    # which the prepared bars hold (the split starts after the warm-up).
    market = data.market.pivot(index="timestamp", columns="symbol", values="close").sort_index()
    times = data.prices()[2]
    previous = market.shift(1).loc[times].to_numpy(np.float64)
    r = np.log(close / previous)[:-1]
    weights = np.sign(ar * r) * common.max_leverage / close.shape[1]
    return run_backtest(weights, open_, close, common, data.frequency.periods_per_year).metrics


def measure(ar: float, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    repo = args.workdir / f"ar{ar:g}-seed{seed}"
    overrides = {
        "base.seed": seed,
        "data.source": "synthetic",
        "data.synthetic_symbols": args.symbols,
        "data.synthetic_bars": args.bars,
        "data.synthetic_ar": ar,
    }
    started = time.perf_counter()
    fresh = not (repo / "metrics" / "evaluate.json").is_file()
    run_pipeline(repo, overrides, worktree=args.worktree, threads=1)
    evaluate = read_metrics(repo, "metrics/evaluate.json")
    cnn_lstm = read_metrics(repo, "metrics/cnn_lstm.json")
    bayes = read_metrics(repo, "data/features/metrics.json")["bayes_directional_accuracy"]
    oracle = oracle_sharpe(repo, ar)
    sharpe = {name: float(evaluate[name]["sharpe"]) for name in STAGES if name in evaluate}
    sharpe["buy_and_hold"] = float(evaluate["buy_and_hold"]["sharpe"])
    sharpe["oracle"] = float(oracle["sharpe"])
    accuracy = float(cnn_lstm["test/directional_accuracy"])
    result = {
        "ar": ar,
        "seed": seed,
        "sharpe": sharpe,
        "cnn_lstm_directional_accuracy": accuracy,
        "bayes_directional_accuracy": float(bayes),
        "cnn_lstm_edge_share": (accuracy - 0.5) / (bayes - 0.5) if bayes > 0.5 else None,
        "turnover": {name: float(evaluate[name]["turnover"]) for name in STAGES if name in evaluate},
        # Step of the policy validation selected (0: the warm start was kept).
        "selected_step": {
            name: read_metrics(repo, f"metrics/{name}.json").get("train/selected_step")
            for name in ("ppo", "sac", "td3", "hybrid_ppo")
            if (repo / "metrics" / f"{name}.json").is_file()
        },
        "seconds": round(time.perf_counter() - started, 1) if fresh else None,
    }
    print(
        f"phi {ar:g} seed {seed}: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sharpe.items())
        + f"; cnn_lstm directional accuracy {accuracy:.4f} (Bayes {bayes:.4f})",
        file=sys.stderr,
        flush=True,
    )
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every stage's Sharpe and share of the oracle's."""
    oracle = [r["sharpe"]["oracle"] for r in runs]
    out: dict[str, Any] = {"sharpe": {}, "oracle_share": {}}
    for name in (*STAGES, *BASELINES):
        values = [r["sharpe"][name] for r in runs if name in r["sharpe"]]
        if not values:
            continue
        out["sharpe"][name] = _mean_std(values)
        if np.mean(oracle) > 0:
            out["oracle_share"][name] = float(np.mean(values) / np.mean(oracle))
    out["cnn_lstm_directional_accuracy"] = _mean_std([r["cnn_lstm_directional_accuracy"] for r in runs])
    shares = [r["cnn_lstm_edge_share"] for r in runs if r["cnn_lstm_edge_share"] is not None]
    out["cnn_lstm_edge_share"] = _mean_std(shares) if shares else None
    return out


def markdown(ar: float, runs: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    seeds = [r["seed"] for r in runs]
    header = ["stage", "test Sharpe mean ± std", "share of oracle", *(f"seed {s}" for s in seeds)]
    lines = [f"phi = {ar:g}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (mean, std) in summary["sharpe"].items():
        share = summary["oracle_share"].get(name)
        cells = [f"{r['sharpe'][name]:.2f}" if name in r["sharpe"] else "-" for r in runs]
        lines.append(
            f"| {name} | {mean:.2f} ± {std:.2f} | {f'{100 * share:.0f} %' if share is not None else '-'} | "
            + " | ".join(cells)
            + " |"
        )
    accuracy = summary["cnn_lstm_directional_accuracy"]
    bayes = runs[0]["bayes_directional_accuracy"]
    line = f"\nCNN-LSTM test directional accuracy {accuracy[0]:.4f} ± {accuracy[1]:.4f} (Bayes-optimal {bayes:.4f}"
    if summary["cnn_lstm_edge_share"] is not None:
        share, spread = summary["cnn_lstm_edge_share"]
        line += f"; share of the Bayes edge {100 * share:.0f} % ± {100 * spread:.0f} %"
    names = runs[0]["selected_step"]
    kept = [f"{name} {sum(r['selected_step'].get(name) == 0 for r in runs)}/{len(runs)}" for name in names]
    line += ")\nSeeds whose selected policy is the warm start (step 0): " + ", ".join(kept)
    return "\n".join(lines) + line + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar", type=float, nargs="+", default=[0.3], help="planted AR(1) coefficients")
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--bars", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--no-noise", action="store_true", help="skip the phi = 0 run")
    parser.add_argument("--worktree", action="store_true", help="copy the working tree instead of HEAD")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/trade-agent-learning"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/trade-agent-learning/learning.json"))
    args = parser.parse_args(argv)
    coefficients = list(dict.fromkeys([*args.ar, *([] if args.no_noise else [0.0])]))
    commit = source_commit(args.worktree)
    args.workdir = args.workdir / commit
    report: dict[str, Any] = {"commit": commit, "symbols": args.symbols, "bars": args.bars, "results": {}}
    print(f"commit {commit}, {args.symbols} symbols x {args.bars} bars, seeds {args.seeds}\n")
    for ar in coefficients:
        runs = [measure(ar, seed, args) for seed in args.seeds]
        summary = summarise(runs)
        report["results"][f"{ar:g}"] = {"runs": runs, "summary": summary}
        print(markdown(ar, runs, summary), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
