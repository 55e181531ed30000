"""Stage-2 runs resume after a crash, and registered agents load as SB3 objects without unpickling."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_agents import SIM, tiny_rl
from tests.test_envs import panel
from trade_agent.agents import ValSharpeCallback, build_agent, load_policy
from trade_agent.agents.checkpoint import BUFFER_FILE, has_checkpoint, load_checkpoint, save_checkpoint
from trade_agent.agents.evaluation import ValSharpeCallback as Selector
from trade_agent.agents.evaluation import run_episode
from trade_agent.agents.policy_io import load_sb3_model
from trade_agent.agents.train import simulator_config, train_agent
from trade_agent.config import params_from_dict
from trade_agent.errors import IntegrityError
from trade_agent.io import read_json, read_npz
from trade_agent.market.backtest import backtest
from trade_agent.market.observation import Observation
from trade_agent.market.trading_env import VecPortfolioEnv
from trade_agent.registry import ModelRegistry

PANELS = {"train": panel(200, seed=1), "val": panel(80, seed=2), "test": panel(80, seed=3)}


def tiny_params(algo: str, total: int):
    algo_params = {"net_arch": [16], "total_timesteps": total}
    if algo == "ppo":
        algo_params |= {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 2}
    else:
        algo_params |= {"learning_starts": 32, "batch_size": 32}
    return params_from_dict(
        {
            "rl": {
                "common": {"window": 5, "episode_length": 40, "eval_freq": 64, "checkpoint_freq": 64},
                algo: algo_params,
            }
        }
    )


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_checkpoint_round_trip_restores_weights_optimisers_and_buffer(algo: str, tmp_path: Path) -> None:
    config = tiny_rl()
    model = build_agent(algo, VecPortfolioEnv(PANELS["train"], SIM, n_envs=1, seed=0), config, seed=0)
    selector = ValSharpeCallback(PANELS["val"], SIM, eval_freq=64)
    model.learn(200, callback=selector)
    save_checkpoint(model, selector, tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=True)  # no pickle needed
    assert state["parameters"]["policy"]

    fresh = build_agent(algo, VecPortfolioEnv(PANELS["train"], SIM, n_envs=1, seed=0), config, seed=99)
    fresh_selector = ValSharpeCallback(PANELS["val"], SIM, eval_freq=64)
    assert load_checkpoint(fresh, fresh_selector, tmp_path / "ckpt") == model.num_timesteps
    for (name, a), b in zip(model.get_parameters().items(), fresh.get_parameters().values(), strict=True):
        if name == "policy":
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:  # optimiser state: same step counts and moments
            assert str(a["state"].keys()) == str(b["state"].keys())
            for sa, sb in zip(a["state"].values(), b["state"].values(), strict=True):
                assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert fresh_selector.best_sharpe == selector.best_sharpe and fresh_selector.history == selector.history
    if algo != "ppo":
        assert fresh.replay_buffer.pos == model.replay_buffer.pos == 200
        np.testing.assert_array_equal(fresh.replay_buffer.observations, model.replay_buffer.observations)
        assert read_npz(tmp_path / "ckpt" / BUFFER_FILE)["actions"].shape[0] == 200  # only the filled part
    if algo == "sac":
        assert torch.equal(fresh.log_ent_coef, model.log_ent_coef)
    fresh.learn(64, callback=fresh_selector, reset_num_timesteps=False)  # keeps training from there
    assert fresh.num_timesteps >= 264


class Killed(Exception):
    pass


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_a_run_killed_mid_training_resumes_from_its_last_checkpoint(
    algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    params, checkpoints = tiny_params(algo, total=384), tmp_path / "checkpoints"
    evaluate_now = Selector.evaluate_now

    def crash_late(self: Selector) -> None:
        evaluate_now(self)
        if self.num_timesteps >= 256:
            raise Killed

    monkeypatch.setattr(Selector, "evaluate_now", crash_late)
    with pytest.raises(Killed):
        train_agent(algo, params, PANELS, tmp_path / "agent", checkpoint_dir=checkpoints)
    assert has_checkpoint(checkpoints) and not (tmp_path / "agent").exists()
    saved = read_json(checkpoints / "state.json")
    saved_at = saved["num_timesteps"]
    assert 64 <= saved_at < 384

    monkeypatch.setattr(Selector, "evaluate_now", evaluate_now)
    with caplog.at_level(logging.INFO, logger="trade_agent"):
        run = train_agent(algo, params, PANELS, tmp_path / "agent", checkpoint_dir=checkpoints)
    assert run.resumed_from == saved_at
    assert f"resuming from {checkpoints} at step {saved_at}" in caplog.text
    assert not checkpoints.exists()  # removed after success
    # The reported numbers are those of the policy the resumed run saved: rerun it over val and
    # test and put its targets through the vectorised backtester (not the env's own returns).
    policy, spec = load_policy(run.agent_dir)
    observation, sim = Observation.from_json(spec["observation"]), simulator_config(params)
    for split in ("val", "test"):
        weights = run_episode(
            lambda obs: policy.predict(obs, deterministic=True)[0], observation.apply(PANELS[split]), sim
        ).weights
        prices = PANELS[split].open, PANELS[split].close
        result = backtest(
            weights,
            *prices,
            sim.window - 1,
            sim.cost_bps,
            sim.slippage_bps,
            sim.max_leverage,
            periods_per_year=PANELS[split].periods_per_year,
        )
        assert len(weights) == PANELS[split].n_bars - sim.window
        assert run.metrics[f"{split}/sharpe"] == pytest.approx(result.metrics["sharpe"], abs=1e-9), split
        assert run.metrics[f"{split}/total_return"] == pytest.approx(result.metrics["total_return"], abs=1e-9)
    # Selection survived the crash: the kept policy is at least the best one validated before it.
    assert saved["best_sharpe"] is not None and run.metrics["val/sharpe"] >= saved["best_sharpe"] - 1e-12


def test_resume_false_starts_over(tmp_path: Path) -> None:
    params, checkpoints = tiny_params("td3", total=160), tmp_path / "checkpoints"
    run = train_agent("td3", params, PANELS, tmp_path / "a", checkpoint_dir=checkpoints, keep_checkpoints=True)
    assert run.resumed_from == 0 and has_checkpoint(checkpoints)
    again = train_agent("td3", params, PANELS, tmp_path / "b", checkpoint_dir=checkpoints, resume=False)
    assert again.resumed_from == 0


def test_sb3_object_is_rebuilt_from_the_pickle_free_form(tmp_path: Path) -> None:
    params = tiny_params("ppo", total=64)
    run = train_agent("ppo", params, PANELS, tmp_path / "agent")
    again = train_agent("ppo", params, PANELS, tmp_path / "again")
    # Reproducible bytes (no wall-clock or memory addresses), so DVC sees identical outputs.
    assert (again.agent_dir / "model.zip").read_bytes() == (run.agent_dir / "model.zip").read_bytes()
    registry = ModelRegistry(tmp_path / "models", export=False)
    training_config = {**asdict(params.rl.ppo), "common": asdict(params.rl.common)}  # as register_agent records it
    model_id = registry.register_model("ppo", run.agent_dir, None, training_config, run.metrics, {})
    model = load_sb3_model(registry, model_id, tmp_path / "work")
    obs = np.zeros((1, *model.observation_space.shape), np.float32)
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], load_trained_action(run.agent_dir, obs))
    assert model.n_steps == 32 and model.batch_size == 32  # the registered hyperparameters
    model.set_env(VecPortfolioEnv(PANELS["train"], SIM, n_envs=2, seed=0))
    model.learn(64)  # and it trains on

    copy = tmp_path / "work" / model_id / "policy.pt"
    copy.write_bytes(copy.read_bytes() + b"tampered")
    with pytest.raises(IntegrityError, match=r"policy\.pt: sha256 does not match the registry entry"):
        load_sb3_model(registry, model_id, tmp_path / "work")

    # The registry's own copy is verified on restore too.
    stored = registry.store.object_path(registry.get_model(model_id).files["policy.pt"]["sha256"])
    stored.chmod(0o644)
    stored.write_bytes(b"not the weights")
    with pytest.raises(IntegrityError, match=r"policy\.pt: stored object .* is corrupted"):
        load_sb3_model(registry, model_id, tmp_path / "fresh")


def load_trained_action(agent_dir: Path, obs: np.ndarray) -> np.ndarray:
    from trade_agent.agents import load_policy

    policy, _ = load_policy(agent_dir)
    return policy.predict(obs, deterministic=True)[0]
