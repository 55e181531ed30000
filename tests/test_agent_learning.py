"""Stage 2 learns what is there, after costs, and nothing that is not.

The synthetic source plants an AR(1) component in returns. The oracle knows it: after each
close it holds ``sign(phi * r_t)`` from the next open. PPO sees only the scaled features
(no embeddings), trades with the same t+1 fills and costs, and must reach at least half the
oracle's test Sharpe; on pure noise its test Sharpe must stay within two standard errors
of zero. Each run takes ~20 s on one core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import tiny_params_dict
from trade_agent.agents.evaluation import evaluate
from trade_agent.agents.train import load_panels, simulator_config, train_agent
from trade_agent.config import Params, params_from_dict
from trade_agent.data.ingest import prepare
from trade_agent.features.build import run_features_stage
from trade_agent.market.simulator import MarketPanel


def synthetic_run(ar: float, tmp_path: Path, seed: int = 1) -> tuple[Params, dict[str, MarketPanel]]:
    raw = tiny_params_dict()
    raw["base"]["seed"] = seed
    raw["data"].update(synthetic_symbols=1, synthetic_bars=3000, synthetic_ar=ar)
    raw["rl"]["common"].update(window=1, episode_length=128, eval_freq=4096)
    raw["rl"]["ppo"].update(
        net_arch=[32, 32],
        total_timesteps=20_000,
        n_envs=8,
        n_steps=128,
        batch_size=256,
        n_epochs=10,
        learning_rate=1e-3,
    )
    params = params_from_dict(raw)
    prepare(params.data, tmp_path / "prepared", seed)
    run_features_stage(params, tmp_path / "prepared" / "market.parquet", tmp_path / "features")
    return params, load_panels(params, tmp_path / "features", None, tmp_path / "prepared" / "market.parquet")


def oracle(panel: MarketPanel, ar: float, first_decision: int):
    """Holds sign(phi * r_t) after bar t's close, where r_t is that bar's close-to-close log return."""
    log_close = np.log(panel.close)
    returns = np.diff(log_close, axis=0, prepend=log_close[:1])
    t = first_decision

    def predict(obs: np.ndarray) -> np.ndarray:
        nonlocal t
        weights = np.sign(ar * returns[t])
        t += 1
        return weights

    return predict


def sharpe_standard_error(sharpe: float, n: int, periods_per_year: float) -> float:
    """Lo (2002): se of an annualised Sharpe estimated from n i.i.d. periods."""
    per_period = sharpe / np.sqrt(periods_per_year)
    return float(np.sqrt((1 + 0.5 * per_period**2) / n) * np.sqrt(periods_per_year))


def test_ppo_reaches_half_the_oracle_sharpe_after_costs(tmp_path: Path) -> None:
    ar = 0.4
    params, panels = synthetic_run(ar, tmp_path)
    sim = simulator_config(params)
    assert sim.cost_bps + sim.slippage_bps > 0
    best = evaluate(oracle(panels["test"], ar, sim.window - 1), panels["test"], sim)
    assert best["sharpe"] > 1.5  # the planted edge survives costs
    run = train_agent("ppo", params, panels, tmp_path / "agent")
    assert run.metrics["test/sharpe"] >= 0.5 * best["sharpe"], (run.metrics["test/sharpe"], best["sharpe"])


def test_ppo_finds_nothing_in_pure_noise(tmp_path: Path) -> None:
    params, panels = synthetic_run(0.0, tmp_path)
    run = train_agent("ppo", params, panels, tmp_path / "agent")
    sharpe, n = run.metrics["test/sharpe"], panels["test"].n_bars - params.rl.common.window
    assert sharpe < 2 * sharpe_standard_error(sharpe, n, panels["test"].periods_per_year), sharpe
