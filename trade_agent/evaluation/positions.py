"""Target weights of any model over one split: what the backtester consumes.

Every model decides after the close of each bar of the split except the last (whose fill
would fall outside it), so all models' weights share the same ``K`` decision bars and can
be compared, combined and backtested on the same prices. ``decide_last`` adds the decision
at the last bar (row ``K``): the target for the bar after the data, what inference reports.

* a CNN-LSTM holds ``+/- max_leverage / N`` of an asset when its predicted probability of
  "up" / "down" exceeds the threshold (flat otherwise), from its class probabilities;
* a stage-2 agent or a hybrid runs its pickle-free policy through the environment over the
  split (its observations include its own positions, as in training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trade_agent.agents.evaluation import run_episode
from trade_agent.agents.policy_io import is_hybrid, load_policy
from trade_agent.cnn_lstm.model import PROBABILITY_COLUMNS, threshold_weights
from trade_agent.config.rl import RLCommonConfig
from trade_agent.errors import DataSourceError
from trade_agent.hybrid.model import EXTRACTORS, attach_panels
from trade_agent.market.observation import Observation
from trade_agent.market.panel import SplitData
from trade_agent.market.simulator import PortfolioSimulator, SimulatorConfig
from trade_agent.type_aliases import FloatArray


def policy_weights(model_dir: Path, data: SplitData, common: RLCommonConfig, decide_last: bool = False) -> FloatArray:
    """Targets of a stage-2 agent (``policy.json`` without extractor) or a hybrid over the split."""
    policy, spec = load_policy(model_dir, EXTRACTORS)
    hybrid = is_hybrid(spec)
    observation = Observation.from_json(spec["observation"]) if "observation" in spec else None
    if hybrid:
        window = spec["features_extractor"]["kwargs"]["spec"]["sequence_length"]
    else:
        window = observation.window if observation is not None else common.window
    panel = data.panel(window, with_embeddings=not hybrid)
    if observation is not None:  # the agent's own columns and training-split normalisation
        panel = observation.apply(panel)
    expected = int(np.prod(spec["observation_space"]["shape"]))
    config = SimulatorConfig.from_common(common, window)
    size = PortfolioSimulator(panel, config, 1).observation_size
    if size != expected:
        raise DataSourceError(
            f"{model_dir}: the policy observes {expected} values but this data gives {size} "
            "(other features, assets or window); evaluate it on data shaped like its training data"
        )
    discrete = spec["action_space"]["type"] == "MultiDiscrete"  # short/flat/long actions, not weights
    if hybrid:  # the split's embeddings in one batch, not one encoder call per bar
        attach_panels(policy, [panel.features])

    def predict(obs: np.ndarray) -> np.ndarray:
        return policy.predict(obs, deterministic=True)[0]

    episode = run_episode(predict, panel, config, discrete, decide_last)
    weights = np.asarray(episode.weights, dtype=np.float64)
    if episode.next_target is not None:
        weights = np.vstack([weights, episode.next_target[None]])
    return aligned(weights, data, str(model_dir), decide_last)


def cnn_lstm_weights(data: SplitData, threshold: float, max_leverage: float, decide_last: bool = False) -> FloatArray:
    """Long/short/flat per asset from the CNN-LSTM's class probabilities at each decision bar."""
    panel = data.panel(1, with_embeddings=True)
    index = [panel.context_names.index(c) for c in PROBABILITY_COLUMNS]
    bars = panel.n_bars if decide_last else panel.n_bars - 1  # a backtest has no fill for the last bar
    probabilities = panel.context[:bars, :, index]  # (K, N, 3)
    return aligned(threshold_weights(probabilities, threshold, max_leverage), data, "the CNN-LSTM", decide_last)


def aligned(weights: FloatArray, data: SplitData, model: str, decide_last: bool = False) -> FloatArray:
    """Weights must cover every decision bar of the split, or a backtest would shift them.

    Raises:
        DataSourceError: the model's window or embeddings do not reach the split's first bar.
    """
    decisions = len(data.prices()[0]) - (0 if decide_last else 1)
    if len(weights) != decisions:
        raise DataSourceError(
            f"{model}: decides on {len(weights)} of the {data.split} split's {decisions} bars (its window or the "
            "embeddings reach back before the data); evaluate on the val or test split, or supply earlier bars"
        )
    return weights
