"""The stage-2 observation: compact columns, train-fitted normalisation, replayed from the saved agent;
and the behaviour-cloning warm start reproducing the stage-1 threshold policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_params_dict
from trade_agent.agents.evaluation import run_episode
from trade_agent.agents.factory import build_agent
from trade_agent.agents.policy_io import load_policy
from trade_agent.agents.train import load_panels, observation_spec, simulator_config
from trade_agent.agents.warm_start import clone_policy, demonstrations
from trade_agent.cnn_lstm.model import PROBABILITY_COLUMNS, threshold_weights
from trade_agent.config import params_from_dict
from trade_agent.errors import ConfigError
from trade_agent.evaluation.positions import policy_weights
from trade_agent.market.observation import Observation, ObservationSpec
from trade_agent.market.panel import SplitData
from trade_agent.market.trading_env import VecPortfolioEnv


def _panels(paths: dict[str, Path]):
    params = params_from_dict(tiny_params_dict())
    return params, load_panels(params, paths["features"], paths["embeddings"], paths["market"])


def test_observation_is_compact_and_normalised_with_training_statistics(tiny_stage2: dict[str, Path]) -> None:
    params, panels = _panels(tiny_stage2)
    observation = Observation.fit(observation_spec(params), panels["train"])
    assert observation.features == ["ret_1", "ret_5", "rvol_5"]
    assert observation.context == [*PROBABILITY_COLUMNS, "pred_return"]  # no 8-dim embedding by default
    train, val = observation.apply(panels["train"]), observation.apply(panels["val"])
    assert train.features.shape[2] == 3 and train.context.shape[2] == 4
    # z-scored on train: mean 0 / std 1 there, but not on val (its own statistics are never used).
    flat = train.context.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(0), 1.0, atol=1e-4)
    raw_val = panels["val"].context[:, :, -1].astype(np.float64)  # pred_return
    expected = (raw_val - observation.scaler.context_mean[-1]) / observation.scaler.context_std[-1]
    np.testing.assert_allclose(val.context[:, :, -1], np.clip(expected, -10, 10), rtol=1e-5, atol=1e-6)
    # The predicted return (~1e-3 raw) reaches the policy at unit scale.
    assert np.abs(panels["train"].context[:, :, -1]).mean() < 0.1 < np.abs(train.context[:, :, -1]).mean()


def test_saved_observation_replays_bit_identically(tiny_stage2: dict[str, Path]) -> None:
    params, panels = _panels(tiny_stage2)
    observation = Observation.fit(observation_spec(params), panels["train"])
    again = Observation.from_json(json.loads(json.dumps(observation.to_json())))
    for split in ("train", "val", "test"):
        a, b = observation.apply(panels[split]), again.apply(panels[split])
        assert np.array_equal(a.features, b.features) and np.array_equal(a.context, b.context)
    # The registered agent: its saved normalisation gives exactly the training-time observations.
    spec = json.loads((tiny_stage2["ppo"] / "policy.json").read_text())
    saved = Observation.from_json(spec["observation"])
    trained_on = Observation.fit(observation_spec(params), panels["train"])
    assert saved.to_json() == trained_on.to_json()
    policy, _ = load_policy(tiny_stage2["ppo"])
    val = trained_on.apply(panels["val"])
    sim = simulator_config(params)
    direct = run_episode(lambda o: policy.predict(o, deterministic=True)[0], val, sim).weights
    data = SplitData.load(tiny_stage2["features"], tiny_stage2["embeddings"], tiny_stage2["market"], "val")
    replayed = policy_weights(tiny_stage2["ppo"], data, params.rl.common)
    assert np.array_equal(np.asarray(direct, dtype=np.float64), replayed)


def test_unknown_observed_feature_is_refused_with_the_available_ones(tiny_stage2: dict[str, Path]) -> None:
    _, panels = _panels(tiny_stage2)
    with pytest.raises(ConfigError, match=r"'rvol_99' is not a feature.*available: ret_1"):
        Observation.fit(ObservationSpec(("ret_1", "rvol_99")), panels["train"])


def test_malformed_saved_normalisation_is_refused() -> None:
    good = {"feature_mean": [0.0], "feature_std": [1.0], "context_mean": [0.0], "context_std": [1.0]}
    for bad in ({**good, "feature_std": [0.0]}, {**good, "context_mean": ["x"]}, {"feature_mean": [0.0]}):
        with pytest.raises(ConfigError, match="retrain the agent"):
            Observation.from_json({"features": [], "context": [], "window": 1, "normalization": bad})


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_warm_start_reproduces_the_stage1_threshold_policy(tiny_stage2: dict[str, Path], algo: str) -> None:
    params, panels = _panels(tiny_stage2)
    observation = Observation.fit(observation_spec(params), panels["train"])
    train = observation.apply(panels["train"])
    sim = simulator_config(params)
    threshold, leverage = params.evaluate.cnn_lstm_threshold, params.rl.common.max_leverage
    index = [panels["train"].context_names.index(c) for c in PROBABILITY_COLUMNS]
    targets = threshold_weights(panels["train"].context[:, :, index], threshold, leverage)
    assert len(np.unique(targets)) >= 2  # the teacher trades
    model = build_agent(algo, VecPortfolioEnv(train, sim, n_envs=2, seed=0), params.rl, seed=0)
    obs, actions = demonstrations(train, targets, sim, n_envs=8, steps=8 * train.n_bars, seed=0)
    loss = clone_policy(model, obs, actions, seed=0)
    # Acting on its own over the training split, the clone takes the stage-1 policy's positions.
    cloned = np.asarray(run_episode(lambda o: model.predict(o, deterministic=True)[0], train, sim).weights)
    teacher = targets[sim.window - 1 : sim.window - 1 + len(cloned)]
    agree = np.abs(cloned - teacher) < 0.25 * leverage / teacher.shape[1]
    assert agree.mean() >= 0.9, (agree.mean(), loss)
