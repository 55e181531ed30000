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


def _built_hybrid(tiny_stage2: dict[str, Path]) -> tuple[BaseAlgorithm, dict[str, object]]:
    params = params_from_dict(tiny_params_dict())
    builder = HybridBuilder("ppo", params, tiny_stage2["cnn_lstm"], tiny_stage2["ppo"])
    panels = hybrid_panels(tiny_stage2["features"], tiny_stage2["market"], builder.sequence_length)
    builder.panels = {"val": panels["val"]}
    model, _ = builder(VecPortfolioEnv(panels["train"], builder.sim(), n_envs=4, seed=0))
    return model, {"panels": panels, "sim": builder.sim()}


def test_split_embeddings_in_batch_equal_the_live_encoder(tiny_stage2: dict[str, Path]) -> None:
    """Lookups from the batch-computed split answer exactly the windows they hold, equal the
    live encoder, and never serve a window whose weights changed or that needs gradients."""
    model, built = _built_hybrid(tiny_stage2)
    panels, sim = built["panels"], built["sim"]
    (extractor,) = extractors(model.policy)
    model.policy.set_training_mode(False)
    env = VecPortfolioEnv(panels["val"], sim, n_envs=8, seed=3)  # type: ignore[index]
    obs = torch.as_tensor(env.reset())
    with torch.no_grad():
        looked_up = extractor(obs)
        assert extractor.lookups == 8 * extractor.n_assets and extractor.live_windows == 0
        extractor._tables.clear()
        live = extractor(obs)
    torch.testing.assert_close(looked_up, live, rtol=0, atol=1e-5)
    assert not torch.equal(looked_up[:, -3 * extractor.n_assets :], torch.zeros(1))  # state passes through

    extractor.attach_panel(panels["val"].features)  # type: ignore[index]
    other = torch.as_tensor(VecPortfolioEnv(panels["train"], sim, n_envs=2, seed=0).reset())  # type: ignore[index]
    before = extractor.live_windows
    with torch.no_grad():
        extractor(other)  # windows of another split: computed live, not mistaken for val windows
    assert extractor.live_windows - before == 2 * extractor.n_assets

    # Once the weights move, a batch (a rollout after an update) runs live and one evaluation
    # step recomputes the split: the answer follows the new weights either way.
    with torch.no_grad():
        next(extractor.encoder.parameters()).mul_(1.5)
        before = extractor.lookups
        changed = extractor(obs)
        assert extractor.lookups == before
        refreshed = torch.cat([extractor(obs[i : i + 1]) for i in range(len(obs))])
        assert extractor.lookups > before
        extractor._tables.clear()
        moved = extractor(obs)
    torch.testing.assert_close(changed, moved, rtol=0, atol=1e-5)
    torch.testing.assert_close(refreshed, moved, rtol=0, atol=1e-5)
    assert not torch.allclose(moved, live, atol=1e-3)

    # Fine-tuning (gradients into a trainable encoder) always runs the encoder.
    extractor.attach_panel(panels["val"].features)  # type: ignore[index]
    before = extractor.live_windows
    extractor(obs).sum().backward()
    assert extractor.live_windows - before == 8 * extractor.n_assets
    assert next(extractor.encoder.parameters()).grad is not None


def test_a_frozen_encoder_runs_in_eval_mode(tiny_stage2: dict[str, Path]) -> None:
    from trade_agent.hybrid.model import set_encoder_trainable

    model, _ = _built_hybrid(tiny_stage2)
    (extractor,) = extractors(model.policy)
    model.policy.set_training_mode(True)
    assert extractor.training and extractor.encoder.training  # built trainable; EncoderWarmup freezes it
    set_encoder_trainable(model.policy, False)
    assert extractor.training and not extractor.encoder.training  # no dropout in frozen embeddings
    model.policy.set_training_mode(True)
    assert not extractor.encoder.training
    set_encoder_trainable(model.policy, True)
    assert extractor.encoder.training
