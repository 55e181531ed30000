"""Walk-forward check: no model's target at bar t changes when every bar after t is removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import tiny_params_dict
from trade_agent.agents.hybrid import train_hybrid
from trade_agent.config import params_from_dict
from trade_agent.evaluation.positions import SplitData, cnn_lstm_weights, policy_weights
from trade_agent.training.embed import compute_embeddings


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
        features, full.feature_names, compute_embeddings(tiny_stage2["cnn_lstm"], features), upto(full.market), "test"
    )

    def both(weights_of) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
        return weights_of(full), weights_of(truncated)

    cases = {
        "cnn_lstm": both(lambda d: cnn_lstm_weights(d, 0.34, common.max_leverage)),
        "ppo": both(lambda d: policy_weights(tiny_stage2["ppo"], d, common)),
        "sac": both(lambda d: policy_weights(tiny_stage2["sac"], d, common)),
        "hybrid": both(lambda d: policy_weights(hybrid_dir, d, common)),
    }
    for name, (whole, prefix) in cases.items():
        assert len(prefix) == len(test_times) // 2, name  # decisions up to the bar before the cut
        np.testing.assert_allclose(prefix, whole[: len(prefix)], atol=1e-6, err_msg=name)
    assert np.abs(cases["cnn_lstm"][0]).sum() > 0  # the threshold lets it trade at all
