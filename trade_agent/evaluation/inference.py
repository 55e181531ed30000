"""Positions of any registered model on any market data, with the model's own preprocessing.

``Inference`` restores models from the registry (every checksum verified) into a work
directory, scales the data with the preprocessor saved with the model (a CNN-LSTM's, an
agent's upstream CNN-LSTM's, a hybrid's own), recomputes embeddings with that CNN-LSTM,
and runs the model over the requested split. Ensembles evaluate their members the same
way (each with its own preprocessing) and combine them as configured at training time.
Used by ``trade-agent backtest``, ``train benchmark`` and ``train ensemble``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from trade_agent.cnn_lstm.embed import run_embed_stage
from trade_agent.cnn_lstm.store import PREPROCESSOR_DIR
from trade_agent.config import Params
from trade_agent.config.ensemble import EnsembleConfig
from trade_agent.config.rl import RLCommonConfig
from trade_agent.ensemble.combine import combine
from trade_agent.errors import InputError
from trade_agent.evaluation.positions import SplitData, cnn_lstm_weights, policy_weights
from trade_agent.features.build import cached_features
from trade_agent.io import read_json
from trade_agent.market.backtest import BacktestResult, backtest
from trade_agent.registry import ModelRegistry
from trade_agent.type_aliases import FloatArray

log = logging.getLogger(__name__)

AGENTS = ("ppo", "sac", "td3")


@dataclass
class Positions:
    """A model's targets on a split and the prices they trade at."""

    model_id: str
    model_type: str
    weights: FloatArray  # (K, N)
    open: FloatArray  # (K + 1, N)
    close: FloatArray
    symbols: list[str]
    common: RLCommonConfig  # execution settings the model was trained with


class Inference:
    """Evaluate registered models on one prepared market file.

    Args:
        market: a prepared ``market.parquet`` (``trade-agent data pipeline`` / the prepare stage).
        work_dir: restored models, features and embeddings are cached here.
    """

    def __init__(self, registry: ModelRegistry, params: Params, market: Path, work_dir: Path) -> None:
        self.registry, self.params, self.market, self.work_dir = registry, params, market, work_dir

    def restore(self, model_id: str) -> Path:
        entry = self.registry.get_model(model_id)
        target = self.work_dir / "models" / entry.model_id
        if not target.is_dir():
            self.registry.restore(entry.model_id, target)
        return target

    def features_dir(self, cnn_lstm_dir: Path) -> Path:
        """This data through ``cnn_lstm_dir``'s saved preprocessor (cached per model, market content, params)."""
        preprocessor = sorted((cnn_lstm_dir / PREPROCESSOR_DIR).iterdir())[0]
        return cached_features(self.params, self.market, self.work_dir / "data" / cnn_lstm_dir.name, preprocessor)

    def data(self, cnn_lstm_dir: Path, split: str, with_embeddings: bool = True) -> SplitData:
        """The split scaled by ``cnn_lstm_dir``'s preprocessor (+ that model's embeddings)."""
        features = self.features_dir(cnn_lstm_dir)
        embeddings = features / "embeddings.parquet"
        if with_embeddings and not embeddings.is_file():
            run_embed_stage(cnn_lstm_dir, features, embeddings)
        return SplitData.load(features, embeddings if with_embeddings else None, self.market, split)

    def positions(self, model_id: str, split: str) -> Positions:
        entry = self.registry.get_model(model_id)
        kind = entry.model_type
        common = self._common(entry.training_config)
        directory = self.restore(entry.model_id)
        if kind == "cnn_lstm":
            data = self.data(directory, split)
            weights = cnn_lstm_weights(data, self.params.evaluate.cnn_lstm_threshold, common.max_leverage)
        elif kind in AGENTS:
            data = self.data(self.restore(entry.dependencies[0]), split)
            weights = policy_weights(directory, data, common)
        elif kind == "hybrid":
            data = self.data(directory, split, with_embeddings=False)
            weights = policy_weights(directory, data, common)
        elif kind == "ensemble":
            return self._ensemble(entry.model_id, directory, split)
        else:
            raise InputError(f"{entry.model_id}: cannot backtest a '{kind}' model")
        open_, close, _, symbols = data.prices()
        return Positions(entry.model_id, kind, weights, open_, close, symbols, common)

    def _common(self, training_config: dict[str, object]) -> RLCommonConfig:
        saved = training_config.get("common")
        if isinstance(saved, dict):
            return RLCommonConfig(**saved)
        return self.params.rl.common

    def _ensemble(self, model_id: str, directory: Path, split: str) -> Positions:
        spec = read_json(directory / "ensemble.json")
        members = [self.positions(m["model_id"], split) for m in spec["members"]]
        first = members[0]
        if any(m.weights.shape != first.weights.shape or m.symbols != first.symbols for m in members):
            raise InputError(f"{model_id}: members see different bars or symbols on this data; use aligned data")
        stacked = np.stack([m.weights for m in members])
        returns = np.stack([self.backtest(m).returns for m in members])
        config = EnsembleConfig(**spec["config"])
        val_sharpes = np.array([m["val_sharpe"] for m in spec["members"]])
        combined, _ = combine(stacked, val_sharpes, config, returns, first.common.max_leverage)
        return replace(first, model_id=model_id, model_type="ensemble", weights=combined)

    @staticmethod
    def backtest(positions: Positions, cost_bps: float | None = None) -> BacktestResult:
        c = positions.common
        cost, slippage = (c.cost_bps, c.slippage_bps) if cost_bps is None else (cost_bps, 0.0)
        return backtest(positions.weights, positions.open, positions.close, 0, cost, slippage, c.max_leverage)
