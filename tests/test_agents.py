"""Stage-2 building blocks: SB3 agents on the env, val-Sharpe selection, pickle-free policies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_envs import panel
from trade_agent.agents import ValSharpeCallback, build_agent, evaluate, load_policy, save_policy
from trade_agent.config import RLConfig, params_from_dict
from trade_agent.errors import ConfigError
from trade_agent.market.observation import Observation
from trade_agent.market.simulator import SimulatorConfig
from trade_agent.market.trading_env import VecPortfolioEnv

SIM = SimulatorConfig(window=5, episode_length=40)


def tiny_rl(**common) -> RLConfig:
    return params_from_dict(
        {
            "rl": {
                "common": {"window": 5, "episode_length": 40, "eval_freq": 64, **common},
                "ppo": {"net_arch": [16], "n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 4},
                "sac": {"net_arch": [16], "learning_starts": 32, "batch_size": 32},
                "td3": {"net_arch": [16], "learning_starts": 32, "batch_size": 32},
            }
        }
    ).rl


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_agents_train_select_by_val_sharpe_and_reload_without_pickle(algo: str, tmp_path: Path) -> None:
    config = tiny_rl()
    train, val = panel(n_bars=200, seed=1), panel(n_bars=80, seed=2)
    env = VecPortfolioEnv(train, SIM, n_envs=4 if algo == "ppo" else 1, seed=0)
    model = build_agent(algo, env, config, seed=0)
    callback = ValSharpeCallback(val, SIM, eval_freq=config.common.eval_freq)
    model.learn(total_timesteps=160, callback=callback)
    assert len(callback.history) >= 2 and callback.best_state is not None
    assert callback.best_sharpe == max(h["val/sharpe"] for h in callback.history)

    save_policy(model, algo, list(getattr(config, algo).net_arch), tmp_path / algo)
    policy, spec = load_policy(tmp_path / algo)
    assert spec["algo"] == algo
    state = torch.load(tmp_path / algo / "policy.pt", weights_only=True)  # tensors only
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    obs = env.reset()
    np.testing.assert_allclose(
        policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0], rtol=1e-5
    )


def test_evaluation_metrics_after_costs() -> None:
    p = panel(n_bars=60, seed=4)
    always_long = evaluate(lambda obs: np.array([1.0, 0.0]), p, SIM)
    flat = evaluate(lambda obs: np.zeros(2), p, SIM)
    assert flat["total_return"] == 0 and flat["turnover"] == 0 and flat["exposure"] == 0
    # Holding asset 0 long from the first fill: one entry cost, then its open-to-close and
    # overnight moves, bar after bar.
    rate = (SIM.cost_bps + SIM.slippage_bps) / 1e4
    start = SIM.window - 1
    expected = (1 - rate) * p.close[-1, 0] / p.open[start + 1, 0]
    assert 1 + always_long["total_return"] == pytest.approx(expected)
    assert always_long["exposure"] == 1.0 and always_long["turnover"] == pytest.approx(1 / (len(p.open) - start - 1))


def test_rl_config_checks() -> None:
    with pytest.raises(ConfigError, match=r"rl\.algos: 'a2c' is unknown"):
        params_from_dict({"rl": {"algos": ["ppo", "a2c"]}})
    with pytest.raises(ConfigError, match=r"rl\.common: max_leverage must be > 0"):
        params_from_dict({"rl": {"common": {"max_leverage": 0}}})
    env = VecPortfolioEnv(panel(), SIM, n_envs=1, discrete=True)
    with pytest.raises(ConfigError, match="sac needs continuous actions"):
        build_agent("sac", env, replace(tiny_rl(), common=replace(tiny_rl().common, discrete=True)), seed=0)
    discrete_ppo = build_agent("ppo", VecPortfolioEnv(panel(), SIM, n_envs=2, discrete=True), tiny_rl(), seed=0)
    assert discrete_ppo.action_space.nvec.tolist() == [3, 3]


def test_train_agent_writes_the_agent_directory(tmp_path: Path) -> None:
    from trade_agent.agents.train import train_agent

    params = params_from_dict(
        {
            "rl": {
                "common": {"window": 5, "episode_length": 40, "eval_freq": 64},
                "ppo": {
                    "net_arch": [16],
                    "n_steps": 32,
                    "batch_size": 32,
                    "n_epochs": 1,
                    "n_envs": 2,
                    "total_timesteps": 128,
                },
            }
        }
    )
    panels = {"train": panel(200, seed=1), "val": panel(80, seed=2), "test": panel(80, seed=3)}
    run = train_agent("ppo", params, panels, tmp_path / "ppo", plots_path=tmp_path / "plots" / "equity.tsv")
    files = {p.name for p in (tmp_path / "ppo").iterdir()}
    assert files == {"model.zip", "policy.pt", "policy.json", "metrics.json"}
    assert {"test/sharpe", "test/max_drawdown", "test/turnover", "val/sharpe"} <= set(run.metrics)
    assert run.metrics["periods_per_year"] == panels["test"].periods_per_year  # what the metrics are annualised with
    equity = pd.read_csv(tmp_path / "plots" / "equity.tsv", sep="\t")
    assert list(equity.columns) == ["step", "equity"]
    assert equity["equity"].iloc[-1] == pytest.approx(1 + run.metrics["test/total_return"], abs=1e-6)
    policy, spec = load_policy(tmp_path / "ppo")
    test = Observation.from_json(spec["observation"]).apply(panels["test"])  # its saved normalisation
    result = evaluate(lambda obs: policy.predict(obs, deterministic=True)[0], test, SIM)
    assert result["sharpe"] == pytest.approx(run.metrics["test/sharpe"])  # the saved policy is the evaluated one


def test_load_panels_from_stage_outputs(tiny_features_dir: Path) -> None:
    from trade_agent.agents.train import load_panels

    params = params_from_dict({"rl": {"common": {"window": 5}}})
    panels = load_panels(params, tiny_features_dir, None, tiny_features_dir.parent / "prepared" / "market.parquet")
    assert set(panels) == {"train", "val", "test"}
    assert all(p.n_assets == 2 and p.n_bars > 5 for p in panels.values())
    assert panels["train"].n_bars > panels["val"].n_bars
