"""Stage 3: the hybrid reproduces its stage-2 agent before fine-tuning, then fine-tunes and registers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from tests.conftest import tiny_params_dict
from trade_agent.agents import load_policy
from trade_agent.agents.evaluation import run_episode
from trade_agent.agents.train import load_panels, simulator_config
from trade_agent.config import Params, params_from_dict
from trade_agent.evaluation.positions import policy_weights
from trade_agent.evaluation.suite import sharpe_bounds
from trade_agent.hybrid.model import EXTRACTORS, extractors
from trade_agent.hybrid.stage import HybridBuilder, hybrid_panels, register_hybrid, train_hybrid
from trade_agent.market.backtest import backtest
from trade_agent.market.observation import Observation
from trade_agent.market.panel import SplitData
from trade_agent.market.trading_env import VecPortfolioEnv
from trade_agent.registry import ModelRegistry


def test_hybrid_takes_the_stage2_actions_before_fine_tuning(tiny_stage2: dict[str, Path]) -> None:
    params = params_from_dict(tiny_params_dict())
    for algo in ("ppo", "sac"):
        check_hybrid_matches_agent(algo, params, tiny_stage2)


def check_hybrid_matches_agent(algo: str, params: Params, tiny_stage2: dict[str, Path]) -> None:
    """Same actions as the stage-2 agent over the whole test split (positions feed back)."""
    builder = HybridBuilder(algo, params, tiny_stage2["cnn_lstm"], tiny_stage2[algo])
    panels = hybrid_panels(tiny_stage2["features"], tiny_stage2["market"], builder.sequence_length)
    model, _ = builder(VecPortfolioEnv(panels["train"], builder.sim(), n_envs=1))
    assert not builder.skipped and builder.copied
    model.policy.set_training_mode(False)

    agent, spec = load_policy(tiny_stage2[algo])
    observation = Observation.from_json(spec["observation"])  # the agent's own normalisation
    raw = load_panels(params, tiny_stage2["features"], tiny_stage2["embeddings"], tiny_stage2["market"])
    stage2 = {split: observation.apply(panel) for split, panel in raw.items()}
    expected = run_episode(
        lambda obs: agent.predict(obs, deterministic=True)[0], stage2["test"], simulator_config(params)
    ).weights
    actual = run_episode(lambda obs: model.predict(obs, deterministic=True)[0], panels["test"], builder.sim()).weights
    assert len(actual) == len(expected) > 10
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_hybrid_fine_tunes_the_encoder_and_registers_with_lineage(
    tiny_stage2: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[dict[str, torch.Tensor]] = []
    build = HybridBuilder.__call__

    class Snapshot(BaseCallback):  # the encoder as fine-tuning left it, before selection
        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            (extractor,) = extractors(self.model.policy)
            trained.append({k: v.clone() for k, v in extractor.encoder.state_dict().items()})

    def keep(self: HybridBuilder, env: VecPortfolioEnv) -> tuple[BaseAlgorithm, list]:  # type: ignore[type-arg]
        model, callbacks = build(self, env)
        return model, [*callbacks, Snapshot()]

    monkeypatch.setattr(HybridBuilder, "__call__", keep)
    raw = tiny_params_dict()
    raw["hybrid"] = {"total_timesteps": 256, "freeze_encoder_steps": 64, "encoder_learning_rate": 1e-3}
    params = params_from_dict(raw)
    run = train_hybrid(
        "ppo",
        params,
        tiny_stage2["features"],
        tiny_stage2["market"],
        tiny_stage2["cnn_lstm"],
        tiny_stage2["ppo"],
        tmp_path / "hybrid",
    )
    policy, spec = load_policy(tmp_path / "hybrid", EXTRACTORS)  # pickle-free, with the extractor rebuilt by name
    assert spec["features_extractor"]["name"] == "cnn_lstm"
    assert len(extractors(policy)) == 1
    # Fine-tuning trains the encoder (the registered policy is the one validation selected,
    # which may still be the starting point).
    stage1 = torch.load(tiny_stage2["cnn_lstm"] / "model.pt", weights_only=True)
    changed = [k for k, v in trained[0].items() if not torch.equal(v, stage1[k])]
    assert changed, "the encoder was fine-tuned"
    assert (tmp_path / "hybrid" / "preprocessor").is_dir()

    registry = ModelRegistry(tmp_path / "models", export=False)
    hybrid_id = register_hybrid(run, params, tiny_stage2["cnn_lstm"], tiny_stage2["ppo"], registry)
    entry = registry.get_model(hybrid_id)
    (cnn_lstm,) = registry.list_models("cnn_lstm")
    (ppo,) = registry.list_models("ppo")
    assert hybrid_id.startswith("hybrid_v1.0.0") and entry.dependencies == [cnn_lstm.model_id, ppo.model_id]
    # The reported test numbers are the saved policy's, recomputed another way: reload it, take its
    # targets over the test split and put them through the vectorised backtester (not the env's returns).
    common = params.rl.common
    data = SplitData.load(tiny_stage2["features"], None, tiny_stage2["market"], "test")
    weights = policy_weights(tmp_path / "hybrid", data, common)
    open_, close, _, _ = data.prices()
    ppy = data.frequency.periods_per_year
    assert run.metrics["periods_per_year"] == ppy  # the hybrid stage records what it annualised with
    result = backtest(
        weights, open_, close, 0, common.cost_bps, common.slippage_bps, common.max_leverage, periods_per_year=ppy
    )
    assert len(weights) > 10 and np.abs(weights).sum() > 0  # it trades
    for name in ("sharpe", "total_return", "max_drawdown", "turnover"):
        assert run.metrics[f"test/{name}"] == pytest.approx(result.metrics[name], abs=1e-9), name
    bounds = sharpe_bounds(result.returns, params.evaluate, params.base.seed, ppy)
    assert run.metrics["test/sharpe_ci_low"] == pytest.approx(bounds["sharpe_ci_low"], abs=1e-9)
    assert run.metrics["test/sharpe_ci_high"] == pytest.approx(bounds["sharpe_ci_high"], abs=1e-9)
    assert entry.metrics["test/sharpe"] == run.metrics["test/sharpe"]  # registered as measured
