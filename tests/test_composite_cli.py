"""`train hybrid|ensemble|benchmark` and `backtest` on registered models, end to end on a small file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import tiny_params_dict
from trade_agent.cli.main import app
from trade_agent.data.synthetic import SyntheticSpec, generate_synthetic
from trade_agent.registry import ModelRegistry

runner = CliRunner()


def invoke(*args: str) -> dict | list:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[min(i for i in (result.output.find("{"), result.output.find("[")) if i >= 0) :])


def ensemble_members(model_id: str) -> list[dict]:
    return json.loads((Path("models/runs/backtest/models") / model_id / "ensemble.json").read_text())["members"]


def test_hybrid_ensemble_backtest_and_benchmark_from_the_cli(tmp_path: Path) -> None:
    generate_synthetic(SyntheticSpec(n_symbols=2, n_bars=300, seed=3)).to_csv(tmp_path / "bars.csv", index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    invoke("train", "ppo", "bars.csv", "--cnn-lstm-model", "new", "--timesteps", "128")
    registry = ModelRegistry("models")
    (cnn_lstm,) = registry.list_models("cnn_lstm")
    invoke("train", "sac", "bars.csv", "--cnn-lstm-model", cnn_lstm.model_id, "--timesteps", "96")

    frozen = runner.invoke(app, ["train", "hybrid", "bars.csv", "--rl-model", "ppo@latest", "--timesteps", "16"])
    assert frozen.exit_code == 2 and "--timesteps 16 is not above hybrid.freeze_encoder_steps (32)" in frozen.output
    hybrid = invoke("train", "hybrid", "bars.csv", "--rl-model", "ppo@latest", "--timesteps", "64")
    (ppo,) = registry.list_models("ppo")
    assert registry.get_model(hybrid["model_id"]).dependencies == [cnn_lstm.model_id, ppo.model_id]

    ensemble = invoke("train", "ensemble", "bars.csv", "--models", "ppo@latest,sac@latest,hybrid@latest")
    assert len(registry.get_model(ensemble["model_id"]).dependencies) == 3
    assert {"test/sharpe", "test/diversity", "test/ensemble_accuracy"} <= set(ensemble["metrics"])

    # Reproducible inference: the backtest on the same file gives the ensemble's own test numbers.
    rows = invoke("backtest", "--model", "ensemble@latest", "--data", "bars.csv")
    by_name = {r["model"]: r for r in rows}
    best = max(ensemble_members(ensemble["model_id"]), key=lambda m: m["val_sharpe"])["model_id"]
    assert set(by_name) == {
        ensemble["model_id"],
        "buy_and_hold",
        "equal_weight",
        f"best member of {ensemble['model_id']}: {best}",
    }
    assert by_name[ensemble["model_id"]]["sharpe"] == pytest.approx(ensemble["metrics"]["test/sharpe"], abs=1e-9)
    # Annualised with the data's bars per year, which every row and the ensemble's metrics record.
    assert {r["periods_per_year"] for r in rows} == {ensemble["metrics"]["periods_per_year"]}
    # Same returns, same bootstrap settings and seed: the registered test interval, not just any interval.
    registered = registry.get_model(ensemble["model_id"]).metrics
    for bound in ("sharpe_ci_low", "sharpe_ci_high"):
        assert by_name[ensemble["model_id"]][bound] == pytest.approx(registered[f"test/{bound}"], abs=1e-9)
    # Each row's interval is of its own returns (the baselines' differ from the ensemble's).
    assert by_name["buy_and_hold"]["sharpe_ci_low"] != pytest.approx(registered["test/sharpe_ci_low"], abs=1e-6)

    ranked = invoke("train", "benchmark", "bars.csv", "--models", "cnn_lstm@latest,ppo@latest,hybrid@latest")
    assert [r["sharpe"] for r in ranked] == sorted((r["sharpe"] for r in ranked), reverse=True)
    assert len(ranked) == 5 and {"sharpe_at_0bps", "sharpe_at_25bps"} <= set(ranked[0])
    ppo_row = next(r for r in ranked if r["type"] == "ppo")
    assert ppo_row["sharpe"] == pytest.approx(ppo.metrics["test/sharpe"], abs=1e-9)  # same as at training

    for args, message in [
        (["backtest", "--model", "nope_v9"], "nope_v9"),
        (["train", "hybrid", "bars.csv", "--rl-model", cnn_lstm.model_id], "pass a ppo, sac or td3 id"),
        (["train", "ensemble", "bars.csv", "--models", f"ppo@latest,{cnn_lstm.model_id}"], "a CNN-LSTM has no policy"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("\n") == 1
