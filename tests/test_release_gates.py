"""Promotion to prod gated by the walk-forward DSR, paired difference and PBO; model cards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trade_agent.config.walkforward import ReleaseConfig
from trade_agent.errors import DataSourceError, InputError
from trade_agent.registry import release as release_module
from trade_agent.registry.card import card_path, render_card
from trade_agent.walkforward.gates import gate_figures, registered_trials, walkforward_name
from trade_agent.walkforward.statistics import expected_max_sharpe, psr_from_moments

SYMBOLS = ["AAA", "BBB"]


def walkforward_doc(sharpe_per_bar: float, diff_low: float, pbo: float) -> dict[str, Any]:
    return {
        "oos_bars": 1000,
        "n_trials": 4,
        "trial_sharpe_variance": 0.0004,
        "symbols": SYMBOLS,
        "pbo": pbo,
        "folds": 3,
        "models": {
            "ppo": {
                "sharpe_per_bar": sharpe_per_bar,
                "skew": -0.5,
                "kurtosis": 5.0,
                "sharpe": sharpe_per_bar * np.sqrt(252),
                "difference_ci_low": diff_low,
            }
        },
    }


def registry_entries() -> list[dict[str, Any]]:
    cnn = {
        "model_id": "cnn_lstm_v1.0.0",
        "model_type": "cnn_lstm",
        "dataset_info": {"symbols": SYMBOLS},
        "fingerprint": {"hyperparameters": "h1"},
    }
    cnn_again = cnn | {"model_id": "cnn_lstm_v1.0.1"}  # same configuration: counted once
    other = cnn | {"model_id": "cnn_lstm_v2.0.0", "fingerprint": {"hyperparameters": "h2"}}
    agent = {"model_id": "ppo_v1.0.0", "model_type": "ppo", "dependencies": ["cnn_lstm_v2.0.0"]}
    agent |= {"dataset_info": {"cnn_lstm": "cnn_lstm_v2.0.0"}, "fingerprint": {"hyperparameters": "p1"}}
    elsewhere = cnn | {"model_id": "cnn_lstm_v3.0.0", "dataset_info": {"symbols": ["ZZZ"]}}
    return [cnn, cnn_again, other, agent, elsewhere]


def test_n_counts_the_registered_trials_on_these_symbols() -> None:
    entries = registry_entries()
    assert registered_trials(entries, SYMBOLS) == 3  # h1, h2, and the agent (via its CNN-LSTM)
    reseeded = entries[0] | {"model_id": "cnn_lstm_v1.0.2", "training_config": {"seed": 7}}
    assert registered_trials([*entries, reseeded], SYMBOLS) == 4  # another seed is another trial
    # An --optimize winner brings its study's other trials, once per study (the largest count seen).
    tuned = [
        entries[2] | {"model_id": f"cnn_lstm_v2.{k}.0", "tags": [f"optimize:cnn_lstm-abc:{n}"]}
        for k, n in ((1, 12), (2, 15))
    ]
    assert registered_trials([*entries, *tuned], SYMBOLS) == 3 + 14
    assert walkforward_name({"model_type": "hybrid", "training_config": {"algo": "sac"}}) == "hybrid_sac"


def test_gate_figures_recompute_the_dsr_with_the_registry_trials() -> None:
    doc = walkforward_doc(0.12, 0.3, 0.2)
    figures = gate_figures(doc, {"model_type": "ppo"}, registry_entries(), "wf.json")
    assert (figures.n_trials, figures.n_registered) == (4 + 3, 3)
    by_hand = psr_from_moments(0.12, 1000, -0.5, 5.0, expected_max_sharpe(0.0004, 7))
    assert figures.dsr == pytest.approx(by_hand, rel=1e-12)
    assert figures.dsr > 0.95 and figures.failures(ReleaseConfig()) == []
    weak = gate_figures(walkforward_doc(0.02, -0.4, 0.7), {"model_type": "ppo"}, registry_entries(), "wf.json")
    failed = weak.failures(ReleaseConfig())
    assert len(failed) == 3 and failed[0].startswith(f"DSR {weak.dsr:.3f} (N = 7) < release.min_dsr 0.95")
    assert failed[1] == "paired Sharpe difference vs buy-and-hold has lower bound -0.40 < 0"
    assert failed[2] == "PBO 0.70 > release.max_pbo 0.5"
    with pytest.raises(DataSourceError, match="no walk-forward figures for 'td3'"):
        gate_figures(doc, {"model_type": "td3"}, [], "wf.json")


class FakeRegistry:
    def __init__(self, root: Path) -> None:
        self.export_path = root / "registry.json"
        self.export_path.write_text(json.dumps({"models": registry_entries()}))

    def export_model_info(self, model_id: str) -> dict[str, Any]:
        return {"model_id": "ppo_v1.0.0", "model_type": "ppo", "version": "1.0.0", "checksum": "c"}


def _fake_git(doc: dict[str, Any], tags: list[list[str]]) -> Any:
    def git(repo: Path, *args: str) -> str:
        if args[0] == "show":
            return json.dumps(doc)
        if args[:2] == ("tag", "--list"):
            return ""
        if args[:2] == ("tag", "-a"):
            tags.append(list(args))
            return ""
        raise AssertionError(args)

    return git


@pytest.mark.parametrize("passing", [True, False])
def test_release_to_prod_is_refused_or_accepted_on_the_gates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, passing: bool
) -> None:
    doc = walkforward_doc(0.12, 0.3, 0.2) if passing else walkforward_doc(0.02, -0.4, 0.7)
    tags: list[list[str]] = []
    monkeypatch.setattr(release_module, "_git", _fake_git(doc, tags))
    monkeypatch.setattr(release_module, "find_commit", lambda repo, registry, entry: "abc1234567890")
    registry: Any = FakeRegistry(tmp_path)
    # A version tag alone is never gated.
    assert release_module.release(tmp_path, registry, "ppo_v1.0.0") == ["ppo@v1.0.0"]
    tags.clear()
    if passing:
        assert release_module.release(tmp_path, registry, "ppo_v1.0.0", "prod") == ["ppo@v1.0.0", "ppo#prod#1"]
        assert "forced" not in tags[-1][4]
        return
    with pytest.raises(release_module.ReleaseError) as refused:
        release_module.release(tmp_path, registry, "ppo_v1.0.0", "prod")
    line = str(refused.value)
    assert "\n" not in line and line.startswith("ppo_v1.0.0 is not promoted to prod: DSR ")
    assert "< release.min_dsr 0.95; paired Sharpe difference vs buy-and-hold has lower bound -0.40 < 0; " in line
    assert "PBO 0.70 > release.max_pbo 0.5" in line and line.endswith(
        "pass --force to override (recorded in the tag message)"
    )
    assert tags == []  # nothing tagged
    assert release_module.release(tmp_path, registry, "ppo_v1.0.0", "prod", force=True)[-1] == "ppo#prod#1"
    assert "(forced past the walk-forward gates: DSR" in tags[-1][4]
    loose = ReleaseConfig(min_dsr=0.0, max_pbo=1.0)
    with pytest.raises(release_module.ReleaseError, match=r"lower bound -0\.40 < 0"):  # the difference gate stays
        release_module.release(tmp_path, registry, "ppo_v1.0.0", "prod", gates=loose)


def test_model_card_states_the_walk_forward_figures_and_limits() -> None:
    doc = walkforward_doc(0.02, -0.4, 0.7) | {"oos_years": 4.0, "oos_start": "2008-02-19", "oos_end": "2013-03-01"}
    doc["per_fold"] = [{"fold": 0, "test_start": "2008-02-19", "test_end": "2009-02-19", "sharpe": {"ppo": 0.5}}]
    details = {
        "model_id": "ppo_v1.0.0",
        "model_type": "ppo",
        "version": "1.0.0",
        "metrics": {
            "test/sharpe": 1.2,
            "test/sharpe_ci_low": -0.3,
            "test/sharpe_ci_high": 2.8,
            "periods_per_year": 252.0,
        },
        "training_config": {"seed": 42, "common": {"cost_bps": 5.0, "slippage_bps": 2.0}},
        "dataset_info": {"cnn_lstm": "cnn_lstm_v2.0.0"},
        "dependencies": ["cnn_lstm_v2.0.0"],
    }
    figures = gate_figures(doc, details, registry_entries(), "wf.json")
    card = render_card(details, doc, figures, ReleaseConfig())
    assert card.startswith("# Model card: ppo_v1.0.0")
    assert "5.0 bps + 2.0 bps slippage" in card and "annualised with 252.00 bars/year" in card
    assert "| 0 | 2008-02-19 .. 2009-02-19 | 0.50 |" in card and figures.summary() in card
    assert "fails the prod gate: PBO 0.70 > release.max_pbo 0.5" in card
    assert "not distinguishable from buy-and-hold" in card and "its single-split Sharpe interval includes 0" in card
    doc["models"]["ppo"]["difference_ci_high"] = -0.1  # the whole interval below 0: worse, not "indistinguishable"
    assert "worse than buy-and-hold" in render_card(details, doc, figures, ReleaseConfig())
    with pytest.raises(InputError, match="not a plain file name"):
        card_path(Path("models"), "../../etc/passwd")
