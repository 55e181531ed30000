"""One implementation of each concept, seen from outside: every command that reports a
model's numbers reports the same numbers (on the tiny pipeline, reproduced once per session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ReproducedRepo
from trade_agent.registry import ModelRegistry

SUITE = ("sharpe", "sharpe_ci_low", "sharpe_ci_high", "total_return", "max_drawdown", "turnover", "sortino")


def _json(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


def test_evaluate_stage_reports_the_ensemble_stage_numbers(dvc_reproduced: ReproducedRepo) -> None:
    """The ensemble combination and the metrics suite are one: `evaluate` recombines the members
    from ensemble.json and must land exactly on the ensemble stage's own test metrics."""
    repo = dvc_reproduced.path
    stage = _json(repo / "metrics" / "ensemble.json")
    evaluated = _json(repo / "metrics" / "evaluate.json")["ensemble"]
    shared = [k for k in evaluated if f"test/{k}" in stage]
    assert {*SUITE, "diversity", "ensemble_accuracy"} <= set(shared)
    for key in shared:
        assert evaluated[key] == pytest.approx(stage[f"test/{key}"], rel=1e-12, abs=1e-12), key
    assert evaluated["sharpe_ci_low"] < evaluated["sharpe"] < evaluated["sharpe_ci_high"]


@pytest.mark.parametrize("name", ["ppo", "ensemble"])
def test_backtest_cli_prints_the_evaluation_report_numbers(dvc_repo: Path, name: str) -> None:
    """`trade-agent backtest --model X` (restore from the registry, the model's own preprocessor,
    recomputed embeddings, the one metrics suite with base.seed) = `reports/evaluation.md` for X."""
    model_type = "ensemble" if name == "ensemble" else name
    model_id = ModelRegistry(dvc_repo / "models").id_of(model_type, dvc_repo / "models" / "pipeline" / name)
    assert model_id is not None
    result = subprocess.run(
        [sys.executable, "-m", "trade_agent.cli", "backtest", "--model", model_id, "--json"],
        cwd=dvc_repo,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "2"},  # a shell's default: the command must pin its own threads
    )
    assert result.returncode == 0, result.stderr
    row = next(r for r in json.loads(result.stdout) if r["model"] == model_id)
    evaluated = _json(dvc_repo / "metrics" / "evaluate.json")[name]
    for key in (*SUITE, "sharpe_at_0bps", "sharpe_at_25bps"):
        assert row[key] == pytest.approx(evaluated[key], rel=1e-9, abs=1e-12), key
    shown = f"| {name} | "
    line = next(
        line for line in (dvc_repo / "reports" / "evaluation.md").read_text().splitlines() if line.startswith(shown)
    )
    assert f"{row['sharpe']:.2f} [{row['sharpe_ci_low']:.2f}, {row['sharpe_ci_high']:.2f}]" in line
