"""Walk-forward check: no model's target at bar t changes when every bar after t is removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import tiny_params_dict
from trade_agent.cnn_lstm.embed import compute_embeddings
from trade_agent.config import params_from_dict
from trade_agent.evaluation.positions import cnn_lstm_weights, policy_weights
from trade_agent.hybrid.stage import train_hybrid
from trade_agent.market.panel import SplitData


def test_positions_of_every_model_type_are_walk_forward(tiny_stage2: dict[str, Path], tmp_path: Path) -> None:
    raw = tiny_params_dict()
    raw["hybrid"].update(total_timesteps=64)
    params = params_from_dict(raw)
    common = params.rl.common
    hybrid_dir = tmp_path / "hybrid"
    train_hybrid(
        "ppo",
        params,
        tiny_stage2["features"],
        tiny_stage2["market"],
        tiny_stage2["cnn_lstm"],
        tiny_stage2["ppo"],
        hybrid_dir,
    )
    full = SplitData.load(tiny_stage2["features"], tiny_stage2["embeddings"], tiny_stage2["market"], "test")
    test_times = np.sort(full.features.loc[full.features["split"] == "test", "timestamp"].unique())
    cut = pd.Timestamp(test_times[len(test_times) // 2])

    def upto(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["timestamp"] <= cut].reset_index(drop=True)

    features = upto(full.features)
    # Embeddings recomputed from the truncated features: the encoder itself must be causal.
    truncated = SplitData(
        features,
        full.feature_names,
        compute_embeddings(tiny_stage2["cnn_lstm"], features),
        upto(full.market),
        "test",
        full.frequency,
    )

    def both(weights_of) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
        return weights_of(full), weights_of(truncated)

    cases = {
        "cnn_lstm": both(lambda d: cnn_lstm_weights(d, 0.5, common.max_leverage)),
        "ppo": both(lambda d: policy_weights(tiny_stage2["ppo"], d, common)),
        "sac": both(lambda d: policy_weights(tiny_stage2["sac"], d, common)),
        "hybrid": both(lambda d: policy_weights(hybrid_dir, d, common)),
    }
    for name, (whole, prefix) in cases.items():
        assert len(prefix) == len(test_times) // 2, name  # decisions up to the bar before the cut
        np.testing.assert_allclose(prefix, whole[: len(prefix)], atol=1e-6, err_msg=name)
    assert np.abs(cases["cnn_lstm"][0]).sum() > 0  # the threshold lets it trade at all


def test_discrete_agents_trade_their_short_flat_long_actions_and_misaligned_splits_are_refused(
    tiny_stage2: dict[str, Path], tmp_path: Path
) -> None:
    import pytest

    from trade_agent.agents.evaluation import run_episode
    from trade_agent.agents.train import load_panels, simulator_config, train_agent
    from trade_agent.errors import DataSourceError

    raw = tiny_params_dict()
    raw["rl"]["common"]["discrete"] = True
    raw["rl"]["ppo"]["total_timesteps"] = 64
    params = params_from_dict(raw)
    panels = load_panels(params, tiny_stage2["features"], tiny_stage2["embeddings"], tiny_stage2["market"])
    train_agent("ppo", params, panels, tmp_path / "discrete")
    data = SplitData.load(tiny_stage2["features"], tiny_stage2["embeddings"], tiny_stage2["market"], "test")
    weights = policy_weights(tmp_path / "discrete", data, params.rl.common)
    from trade_agent.agents import load_policy
    from trade_agent.market.observation import Observation

    policy, spec = load_policy(tmp_path / "discrete")
    test = Observation.from_json(spec["observation"]).apply(panels["test"])
    episode = run_episode(
        lambda obs: policy.predict(obs, deterministic=True)[0], test, simulator_config(params), discrete=True
    )
    np.testing.assert_array_equal(weights, episode.weights)  # actions 0/1/2 mean short/flat/long
    # Whole units short/flat/long, scaled to gross exposure <= 1 (two assets: +-1 or +-1/2).
    assert np.isin(np.round(np.abs(weights), 6), [0.0, 0.5, 1.0]).all()

    train = SplitData.load(tiny_stage2["features"], tiny_stage2["embeddings"], tiny_stage2["market"], "train")
    with pytest.raises(DataSourceError, match=r"decides on \d+ of the train split's \d+ bars"):
        policy_weights(tiny_stage2["ppo"], train, params_from_dict(tiny_params_dict()).rl.common)
