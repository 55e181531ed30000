"""Stage 4: combination methods, their measures, and an ensemble built from tiny stage-2 agents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_params_dict
from trade_agent.config import EnsembleConfig, params_from_dict
from trade_agent.ensemble.combine import combine, directional_accuracy, diversity, softmax_weights
from trade_agent.ensemble.stage import register_ensemble, train_ensemble
from trade_agent.errors import ConfigError, InputError
from trade_agent.registry import ModelRegistry


def members(k: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-0.5, 0.5, (3, k, 2))


def test_sharpe_softmax_weights_members_by_validation_sharpe() -> None:
    w = members()
    combined, alpha = combine(w, np.array([1.0, 0.0, -1.0]), EnsembleConfig(temperature=0.5))
    expected = softmax_weights(np.array([1.0, 0.0, -1.0]), 0.5)
    assert expected[0] > expected[1] > expected[2] and expected.sum() == pytest.approx(1)
    np.testing.assert_allclose(combined, np.einsum("m,mkn->kn", expected, w))
    cold, _ = combine(w, np.array([1.0, 0.0, -1.0]), EnsembleConfig(temperature=1e-3))
    np.testing.assert_allclose(cold, w[0], atol=1e-9)  # low temperature -> the best member
    assert alpha.shape == (40, 3)


def test_majority_vote_needs_a_strict_majority() -> None:
    w = np.array([[[0.3, -0.2]], [[0.1, 0.4]], [[-0.2, 0.0]]])  # 3 members, 1 bar, 2 assets
    combined, _ = combine(w, np.zeros(3), EnsembleConfig(method="majority_vote"), max_leverage=1.0)
    np.testing.assert_allclose(combined, [[0.5, 0.0]])  # asset 0: 2 of 3 long; asset 1: no majority


def test_rolling_best_uses_only_realised_returns() -> None:
    w = members(k=60)
    returns = np.random.default_rng(1).normal(0, 0.01, (3, 60))
    returns[2, :30] += 0.01  # member 2 is best early
    config = EnsembleConfig(method="rolling_best", lookback=20, rebalance_every=10)
    combined, alpha = combine(w, np.array([0.0, 1.0, 0.0]), config, returns)
    assert alpha[:10].argmax(axis=1).tolist() == [1] * 10  # no history yet: best validation Sharpe
    assert alpha[10:30].argmax(axis=1).tolist() == [2] * 20
    changed = returns.copy()
    changed[:, 40:] = np.random.default_rng(9).normal(0, 0.05, (3, 20))  # rewrite the future
    _, alpha_changed = combine(w, np.array([0.0, 1.0, 0.0]), config, changed)
    np.testing.assert_array_equal(alpha_changed[:41], alpha[:41])  # decisions up to bar 40 unchanged
    np.testing.assert_allclose(combined[5], w[1, 5])
    with pytest.raises(ConfigError, match="needs the members' stand-alone returns"):
        combine(w, np.zeros(3), config)


def test_accuracy_and_diversity_by_hand() -> None:
    open_ = np.array([[100.0], [100.0], [100.0], [100.0]])
    close = np.array([[100.0], [101.0], [99.0], [100.0]])
    weights = np.array([[1.0], [1.0], [0.0]])  # bar 1 up (hit), bar 2 down (miss), flat
    assert directional_accuracy(weights, open_, close, 0) == 0.5
    a = np.array([[[1.0]], [[-1.0]], [[1.0]]])
    b = -a
    assert diversity(np.stack([a, b])) == pytest.approx(2.0)  # perfectly opposed
    assert diversity(np.stack([a, a])) == pytest.approx(0.0)
    with pytest.raises(ConfigError, match=r"ensemble\.method: 'vote' is unknown"):
        EnsembleConfig(method="vote")


def test_ensemble_from_stage2_agents_registers_with_members(tiny_stage2: dict[str, Path], tmp_path: Path) -> None:
    from trade_agent.agents.train import AgentRun, register_agent
    from trade_agent.io import read_json

    params = params_from_dict(tiny_params_dict())
    registry = ModelRegistry(tmp_path / "models", export=False)
    ids = [
        register_agent(
            AgentRun(a, tiny_stage2[a], read_json(tiny_stage2[a] / "metrics.json"), 0.0),
            params,
            tiny_stage2["cnn_lstm"],
            registry,
        )
        for a in ("ppo", "sac")
    ]
    args = (tiny_stage2["features"], tiny_stage2["embeddings"], tiny_stage2["market"], tmp_path / "ensemble")
    with pytest.raises(InputError, match="at least two members"):
        train_ensemble(params, [tiny_stage2["ppo"]], *args)
    run = train_ensemble(params, [tiny_stage2["ppo"], tiny_stage2["sac"]], *args, registry=registry)
    assert {"test/sharpe", "test/ensemble_accuracy", "test/diversity", "val/sharpe"} <= set(run.metrics)
    recorded = read_json(tiny_stage2["features"] / "schema.json")["frequency"]["periods_per_year"]
    assert run.metrics["periods_per_year"] == recorded  # annualised with the data's bars per year
    assert [m["model_id"] for m in run.members] == ids
    ensemble_id = register_ensemble(run, params, registry)
    assert registry.get_model(ensemble_id).dependencies == ids
