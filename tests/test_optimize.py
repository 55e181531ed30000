"""`--optimize`: Optuna search scored on validation only, pruning, resumable and shared studies."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import tiny_params_dict
from trade_agent.cli.main import app
from trade_agent.config import Params, params_from_dict, to_plain
from trade_agent.data.ingest import prepare
from trade_agent.registry import ModelRegistry
from trade_agent.tuning import SearchSpec, search, study_name
from trade_agent.tuning.study import apply_trial_params

SPACE = {
    # A range whose low end cannot learn anything in 4 epochs: the pruner should stop those.
    "cnn_lstm.learning_rate": {"type": "float", "low": 1e-5, "high": 5e-2, "log": True},
    "features.sequence_length": {"type": "int", "low": 5, "high": 10},
}


def search_params() -> dict:
    raw = tiny_params_dict()
    raw["cnn_lstm"]["patience"] = 100
    raw["optimize"] = {"n_startup_trials": 2, "n_warmup_steps": 1, "cnn_lstm": {"budget": 4, "space": SPACE}}
    raw["optimize"]["ppo"] = {"budget": 128, "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3}}}
    return raw


def spec_for(params: Params, tmp_path: Path, n_trials: int, name: str | None = None) -> SearchSpec:
    market = tmp_path / "prepared" / "market.parquet"
    if not market.is_file():
        prepare(params.data, market.parent, params.base.seed)
    return SearchSpec(
        stage="cnn_lstm",
        params={f: to_plain(getattr(params, f)) for f in params.__dataclass_fields__},
        market=str(market),
        work_dir=str(tmp_path / "work"),
        study_name=name or study_name("cnn_lstm", params, [market]),
        storage=f"sqlite:///{tmp_path / 'studies.db'}",
        n_trials=n_trials,
    )


def test_search_prunes_resumes_and_reproduces_trials(tmp_path: Path) -> None:
    params = params_from_dict(search_params())
    best, summary = search(spec_for(params, tmp_path, 6), out_dir=tmp_path / "out")
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert len(trials) == 6 and (trials["state"] == "PRUNED").sum() >= 1
    assert summary["best_value"] == trials.loc[trials["state"] == "COMPLETE", "value"].min()
    assert best.cnn_lstm.learning_rate == summary["best_params"]["cnn_lstm.learning_rate"]

    # The same command again continues the study: trial numbers go on from 6.
    search(spec_for(params, tmp_path, 8), out_dir=tmp_path / "out")
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert trials["number"].tolist() == list(range(8))

    # A trial is reproducible from its params alone (seeded, deterministic on CPU).
    from trade_agent.tuning.objectives import cnn_lstm_objective

    study = optuna.load_study(study_name=summary["study"], storage=f"sqlite:///{tmp_path / 'studies.db'}")
    chosen = next(t for t in study.trials if t.state.name == "COMPLETE")
    replay = cnn_lstm_objective(params, tmp_path / "prepared" / "market.parquet", tmp_path / "replay")
    assert replay(optuna.trial.FixedTrial(chosen.params)) == pytest.approx(chosen.value, rel=1e-6)
    assert (
        apply_trial_params(params, chosen.params).features.sequence_length == chosen.params["features.sequence_length"]
    )


def test_two_processes_share_one_sqlite_study_without_extra_trials(tmp_path: Path) -> None:
    params = params_from_dict(search_params())
    _, summary = search(spec_for(params, tmp_path, 5, name="shared"), n_jobs=2, out_dir=tmp_path / "out")
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'studies.db'}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 5 == summary["trials"]
    assert len({t.number for t in study.trials}) == len(study.trials)  # no trial handed out twice


def test_cli_optimize_trains_and_registers_the_best(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(search_params()))
    result = CliRunner().invoke(
        app, ["train", "cnn-lstm-enhanced", "synthetic", "--optimize", "--n-trials", "3", "--epochs", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("\n{") + 1 :])
    best = json.loads(Path("models/runs/cnn_lstm/optuna/best_params.json").read_text())
    assert best["trials"] == 3 and set(best["best_params"]) == set(SPACE)
    (registered,) = ModelRegistry("models").list_models("cnn_lstm")
    assert registered.model_id == payload["model_id"]
    # The study's trials travel with the model: they count toward the walk-forward DSR's N.
    assert [t for t in registered.tags if t.startswith("optimize:")] == [f"optimize:{best['study']}:3"]
    agent = CliRunner().invoke(
        app,
        ["train", "ppo", "synthetic", "--cnn-lstm-model", payload["model_id"], "--optimize", "--n-trials", "2"],
    )
    assert agent.exit_code == 0, agent.output
    assert json.loads(Path("models/runs/ppo/optuna/best_params.json").read_text())["direction"] == "maximize"


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        # Nothing listens on port 1: the server is down (or the URL is wrong).
        ("postgresql://trade@127.0.0.1:1/optuna", "error: optimize storage 'postgresql://trade@127.0.0.1:1/optuna' "),
        ("journal:///no/such/folder/optuna.log", "the folder /no/such/folder does not exist; use journal:///"),
        ("mysql://user@127.0.0.1/db", "the database driver"),
    ],
)
def test_an_unusable_storage_is_one_line_naming_the_url(storage: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(search_params()))
    result = CliRunner().invoke(
        app, ["train", "cnn-lstm-enhanced", "synthetic", "--optimize", "--n-trials", "2", "--storage", storage]
    )
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert message in last and "Traceback" not in result.output


def test_a_trial_failed_as_stale_while_it_ran_is_left_to_its_retry(tmp_path: Path) -> None:
    """A live worker starved of CPU past stale_after_s: another worker marks its trial FAIL (and
    re-queues it). This worker then drops its result instead of crashing on the finished trial."""
    from trade_agent.tuning.study import create_slots, open_study, run_study

    params = params_from_dict(search_params())
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    create_slots("stale", "minimize", params, storage, 3)
    study = open_study("stale", "minimize", params, storage)

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:  # what another worker's fail_stale_trials does meanwhile
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            trial.report(1.0, 1)  # refused by the storage: the trial is finished
        return float(trial.number)

    run_study(study, objective, params, 3)
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    assert states == {0: "FAIL", 1: "COMPLETE", 2: "COMPLETE"}
