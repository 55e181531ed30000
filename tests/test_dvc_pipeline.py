"""`dvc repro` is the build: runs what changed, skips what did not, restores from run-cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import TINY_FEATURES, ReproducedRepo, run
from trade_agent.config import FeaturesConfig
from trade_agent.features.indicators import feature_names
from trade_agent.io import sha256_file

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "trade_agent.cli"]
STAGES = (
    "code",
    "prepare",
    "features",
    "cnn_lstm",
    "embed",
    "rl@ppo",
    "rl@sac",
    "rl@td3",
    "hybrid@ppo",
    "ensemble",
    "evaluate",
)


def _repro(repo: Path) -> str:
    result = run(["dvc", "repro"], repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _set_nested(repo: Path, keys: tuple[str, ...], value: object) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    node = raw
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _set(repo: Path, section: str, key: str, value: object) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_repro_is_incremental_and_uses_the_run_cache(dvc_reproduced: ReproducedRepo, dvc_repo: Path) -> None:
    first = dvc_reproduced.output  # the session's one full `dvc repro`; dvc_repo is a copy of its result
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first
    assert (dvc_repo / "reports" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluation = json.loads((dvc_repo / "metrics" / "evaluate.json").read_text())
    assert {"cnn_lstm", "ppo", "sac", "td3", "hybrid_ppo", "ensemble", "buy_and_hold", "equal_weight"} <= set(
        evaluation
    )
    assert {"sharpe_ci_low", "sharpe_at_25bps", "max_drawdown"} <= set(evaluation["ensemble"])
    features = dvc_repo / "data" / "features" / "features.parquet"
    original = sha256_file(features)
    metrics = json.loads((dvc_repo / "data" / "features" / "metrics.json").read_text())
    assert (
        metrics["n_features"] == len(feature_names(FeaturesConfig(**TINY_FEATURES)))
        and metrics["train_rows"] > metrics["val_rows"] > 0
    )
    assert 0.5 < metrics["bayes_directional_accuracy"] < 0.6  # synthetic AR(0.3), horizon 2
    assert (
        dvc_repo / "data" / "features" / "preprocessor" / "preprocessor_cnn_lstm_v1.0.0" / "pipeline.json"
    ).is_file()

    second = _repro(dvc_repo)
    assert "Running stage" not in second and "Data and pipelines are up to date" in second
    lock = (dvc_repo / "dvc.lock").read_text()
    forced = run(["dvc", "repro", "--force", "--single-item", "cnn_lstm"], dvc_repo)
    assert forced.returncode == 0 and "Running stage 'cnn_lstm'" in forced.stdout
    assert (dvc_repo / "dvc.lock").read_text() == lock  # retraining reproduces the output bytes

    # Up to `features` only: what runs downstream of a change is the model-param test's subject.
    _set(dvc_repo, "features", "rsi_period", 9)
    changed = run(["dvc", "repro", "features"], dvc_repo).stdout
    assert "Running stage 'features'" in changed and "Running stage 'prepare'" not in changed
    assert sha256_file(features) != original

    _set(dvc_repo, "features", "rsi_period", 7)
    reverted = run(["dvc", "repro", "features"], dvc_repo).stdout
    assert "Running stage" not in reverted, reverted
    assert "Stage 'features' is cached - skipping run, checking out outputs" in reverted
    assert sha256_file(features) == original  # byte-identical restore


def test_model_param_change_reruns_only_the_model_stages_and_registers_versions(dvc_repo: Path) -> None:
    """One stage-1 retraining (the costly part) serves both checks: what re-runs, and what the
    registry keeps (every version retrievable, a reverted param restored without registering)."""
    model = dvc_repo / "models" / "pipeline" / "cnn_lstm" / "model.pt"
    before = sha256_file(model)
    first_files = {
        p.relative_to(dvc_repo / "models/pipeline/cnn_lstm"): p.read_bytes()
        for p in (dvc_repo / "models/pipeline/cnn_lstm").rglob("*")
        if p.is_file()
    }
    _set(dvc_repo, "cnn_lstm", "learning_rate", 0.003)
    changed = _repro(dvc_repo)
    ran = sorted(line.split("'")[1] for line in changed.splitlines() if line.startswith("Running stage"))
    # The walk-forward retrains the same recipe per fold, so its folds and aggregate re-run too.
    folds = ["walkforward", "walkforward_fold@0", "walkforward_fold@1", "walkforward_fold@2"]
    assert ran == ["cnn_lstm", "embed", "ensemble", "evaluate", "hybrid@ppo", "rl@ppo", "rl@sac", "rl@td3", *folds]
    assert sha256_file(model) != before
    embeddings = pd.read_parquet(dvc_repo / "data" / "embeddings" / "embeddings.parquet")
    assert {"emb_0", "prob_up", "pred_return", "split"} <= set(embeddings.columns)
    listed = json.loads(run([*CLI, "train", "list", "--model-type", "cnn_lstm", "--json"], dvc_repo).stdout)
    assert [m["version"] for m in listed] == ["1.1.0", "1.0.0"]  # hyperparameter change: MINOR
    metrics = json.loads((dvc_repo / "metrics" / "cnn_lstm.json").read_text())
    assert metrics["test/accuracy"] == listed[0]["metrics"]["test/accuracy"]  # the stage's metrics, registered
    assert metrics["threads"] == 1.0  # the thread plan it ran with (base.threads: auto)
    evaluated = json.loads((dvc_repo / "metrics" / "evaluate.json").read_text())
    assert {m["threads"] for m in evaluated.values()} == {1.0}
    plots = run(["dvc", "plots", "show", "--json"], dvc_repo)
    assert plots.returncode == 0 and "val/loss" in plots.stdout
    for curve in (
        "plots/evaluate/equity/ensemble.tsv",
        "plots/evaluate/drawdown/buy_and_hold.tsv",
        "plots/ppo/equity.tsv",
    ):
        assert curve in plots.stdout
    got = run([*CLI, "models", "get", "cnn_lstm@v1.0.0", "-o", "restored"], dvc_repo)
    assert got.returncode == 0, got.stderr
    restored = {
        p.relative_to(dvc_repo / "restored"): p.read_bytes() for p in (dvc_repo / "restored").rglob("*") if p.is_file()
    }
    assert restored == first_files  # byte-identical, although the workspace holds v1.1.0 now
    # Reverting the param restores every stage from the run-cache: nothing new is registered.
    _set(dvc_repo, "cnn_lstm", "learning_rate", 0.001)
    reverted = _repro(dvc_repo)
    assert "Running stage" not in reverted and sha256_file(model) == before
    assert len(json.loads(run([*CLI, "train", "list", "--model-type", "cnn_lstm", "--json"], dvc_repo).stdout)) == 2
    # One algorithm's params re-run that algorithm only. A learning rate whose training is not
    # selected over the warm start leaves the same policy: DVC then stops there.
    _set_nested(dvc_repo, ("rl", "sac", "learning_rate"), 0.001)
    ran = sorted(line.split("'")[1] for line in _repro(dvc_repo).splitlines() if line.startswith("Running stage"))
    assert ran[0] == "rl@sac" and set(ran) <= {"rl@sac", "ensemble", "evaluate", *folds}
    _set_nested(dvc_repo, ("rl", "sac", "net_arch"), [8])  # another policy: its consumers re-run
    ran = sorted(line.split("'")[1] for line in _repro(dvc_repo).splitlines() if line.startswith("Running stage"))
    # Not the other agents, not the PPO hybrid; the walk-forward folds retrain the recipe (rl params).
    assert ran == ["ensemble", "evaluate", "rl@sac", *folds]
    agents = json.loads(run([*CLI, "train", "list", "--model-type", "sac", "--json"], dvc_repo).stdout)
    # v1.1.0 came from the new upstream CNN-LSTM above (MINOR), v1.2.0 from SAC's own params,
    # trained on the restored v1.0.0 CNN-LSTM.
    assert [a["version"] for a in agents] == ["1.2.0", "1.1.0", "1.0.0"]
    cnn_lstm_v1 = next(m["model_id"] for m in listed if m["version"] == "1.0.0")
    assert agents[0]["dependencies"] == [cnn_lstm_v1] and agents[1]["dependencies"] == [listed[0]["model_id"]]
    # A lost index comes back whole from the store's records (the export lists none of these).
    everything = json.loads(run([*CLI, "train", "list", "--json"], dvc_repo).stdout)
    (dvc_repo / ".dvc" / "trade-agent-registry" / "index.json").unlink()
    recovered = run([*CLI, "models", "recover"], dvc_repo)
    assert recovered.returncode == 0, recovered.stderr
    assert f"recovered {len(everything)} entries" in recovered.stdout and "from the store's records" in recovered.stdout
    again = json.loads(run([*CLI, "train", "list", "--json"], dvc_repo).stdout)
    assert [(m["model_id"], m["checksum"]) for m in again] == [(m["model_id"], m["checksum"]) for m in everything]
    assert len(everything) >= 9  # cnn_lstm x2, ppo/sac/td3 x2 (+ sac v1.2.0), hybrid, ensemble
    # The store sits beside the DVC cache, shared with experiment workspaces, never in git.
    assert (dvc_repo / ".dvc" / "trade-agent-registry" / "index.json").is_file()
    run(["git", "add", "-A"], dvc_repo)
    assert ".dvc/trade-agent-registry" not in run(["git", "status", "--porcelain"], dvc_repo).stdout


def test_failed_validation_leaves_no_outputs(dvc_fresh_repo: Path) -> None:
    (dvc_fresh_repo / "data" / "raw" / "bars.csv").write_text(
        "timestamp,open,high,low,close,volume\n2020-01-02,1,2,0.5,x,1\n"
    )
    _set(dvc_fresh_repo, "data", "source", "file")
    _set(dvc_fresh_repo, "data", "path", "data/raw/bars.csv")
    result = run(["dvc", "repro"], dvc_fresh_repo)
    assert result.returncode != 0
    assert "error: data/raw/bars.csv: column 'close', line 2: non-numeric value 'x'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (dvc_fresh_repo / "data" / "prepared" / "market.parquet").exists()


def test_a_failed_stage_names_the_checkout_that_restores_its_previous_outputs(dvc_repo: Path) -> None:
    market = dvc_repo / "data" / "prepared" / "market.parquet"
    before = sha256_file(market)
    bad = "timestamp,open,high,low,close,volume\n2020-01-02,1,2,0.5,x,1\n"
    (dvc_repo / "data" / "raw" / "bars.csv").write_text(bad)
    _set(dvc_repo, "data", "source", "file")
    _set(dvc_repo, "data", "path", "data/raw/bars.csv")
    result = run(["dvc", "repro", "prepare"], dvc_repo)
    assert result.returncode != 0
    line = next(x for x in result.stderr.splitlines() if x.startswith("error: data/raw/bars.csv"))
    assert line.endswith("; previous outputs are in the DVC cache: `dvc checkout prepare`"), line
    assert not market.exists()  # DVC removed them before running the command
    assert run(["dvc", "checkout", "prepare"], dvc_repo).returncode == 0
    assert sha256_file(market) == before


def test_release_is_seen_by_gto_and_dvc_artifacts_get(dvc_repo: Path) -> None:
    refused = run([*CLI, "release", "cnn_lstm@v1.0.0"], dvc_repo)
    assert refused.returncode == 2 and "no commit has both a dvc.lock holding cnn_lstm_v1.0.0" in refused.stderr
    bad_stage = run([*CLI, "release", "cnn_lstm@v1.0.0", "--stage", "bad stage"], dvc_repo)
    assert bad_stage.returncode == 2 and run(["git", "tag"], dvc_repo).stdout == ""  # nothing tagged
    for cmd in ([*CLI, "models", "export"], ["git", "add", "-A"], ["git", "commit", "-qm", "train"]):
        assert run(cmd, dvc_repo).returncode == 0
    # prod is gated by the walk-forward statistics of the released commit; the tiny models fail them.
    gated = run([*CLI, "release", "cnn_lstm@v1.0.0", "--stage", "prod"], dvc_repo)
    assert gated.returncode == 2 and run(["git", "tag"], dvc_repo).stdout == ""
    line = gated.stderr.strip()
    assert "\n" not in line and line.startswith("error: cnn_lstm_v1.0.0") and "is not promoted to prod: DSR" in line
    assert "< release.min_dsr 0.95" in line and "walk-forward cnn_lstm: DSR" in line and "pass --force" in line
    released = run([*CLI, "release", "cnn_lstm@v1.0.0", "--stage", "prod", "--force"], dvc_repo)
    assert released.returncode == 0, released.stderr
    assert "cnn_lstm@v1.0.0, cnn_lstm#prod#1" in released.stdout
    message = run(["git", "tag", "-l", "--format=%(contents)", "cnn_lstm#prod#1"], dvc_repo).stdout
    assert "forced past the walk-forward gates: DSR" in message
    shown = run(["gto", "show", "--json"], dvc_repo)
    assert shown.returncode == 0, shown.stderr
    artifact = json.loads(shown.stdout)["cnn_lstm"]
    assert artifact["version"] == "v1.0.0" and artifact["stage"]["prod"] == "v1.0.0"
    fetched = run(["dvc", "artifacts", "get", ".", "cnn_lstm", "--rev", "v1.0.0", "-o", "fetched"], dvc_repo)
    assert fetched.returncode == 0, fetched.stderr
    model = dvc_repo / "models" / "pipeline" / "cnn_lstm" / "model.pt"
    assert (dvc_repo / "fetched" / "model.pt").read_bytes() == model.read_bytes()
