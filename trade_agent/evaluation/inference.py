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
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.cnn_lstm.embed import run_embed_stage
from trade_agent.cnn_lstm.store import PREPROCESSOR_DIR
from trade_agent.config import Params
from trade_agent.config.rl import ALGOS, RLCommonConfig
from trade_agent.data.frequency import BarFrequency
from trade_agent.ensemble.combine import EnsembleSpec, MemberRuns, ensemble_targets
from trade_agent.errors import InputError
from trade_agent.evaluation.positions import cnn_lstm_weights, policy_weights
from trade_agent.evaluation.suite import metrics_suite, run_backtest
from trade_agent.features.build import cached_features
from trade_agent.market.backtest import buy_and_hold_weights, equal_weight_weights
from trade_agent.market.panel import SPLITS, SplitData
from trade_agent.registry import ModelRegistry
from trade_agent.threads import apply_thread_plan
from trade_agent.type_aliases import FloatArray

log = logging.getLogger(__name__)


@dataclass
class Positions:
    """A model's targets on a split, the prices they trade at, and the data's bar frequency."""

    model_id: str
    model_type: str
    weights: FloatArray  # (K, N); K + 1 rows with ``decide_last``
    open: FloatArray  # (K + 1, N)
    close: FloatArray
    symbols: list[str]
    times: pd.DatetimeIndex  # (K + 1,) the bars of ``open``/``close``
    common: RLCommonConfig  # execution settings the model was trained with
    frequency: BarFrequency  # of the data: what the metrics are annualised with


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

    def positions(self, model_id: str, split: str, decide_last: bool = False) -> Positions:
        """The model's targets at every decision bar of ``split``; ``decide_last`` adds the decision
        at its last bar (the target for the bar after the data: what ``predict`` reports)."""
        entry = self.registry.get_model(model_id)
        kind = entry.model_type
        common = self._common(entry.training_config)
        directory = self.restore(entry.model_id)
        if kind == "cnn_lstm":
            data = self.data(directory, split)
            threshold = self.params.evaluate.cnn_lstm_threshold
            weights = cnn_lstm_weights(data, threshold, common.max_leverage, decide_last)
        elif kind in ALGOS:
            data = self.data(self.restore(entry.dependencies[0]), split)
            weights = policy_weights(directory, data, common, decide_last)
        elif kind == "hybrid":
            data = self.data(directory, split, with_embeddings=False)
            weights = policy_weights(directory, data, common, decide_last)
        elif kind == "ensemble":
            return self._ensemble(entry.model_id, directory, split, decide_last)
        else:
            raise InputError(f"{entry.model_id}: cannot backtest a '{kind}' model")
        open_, close, times, symbols = data.prices()
        return Positions(entry.model_id, kind, weights, open_, close, symbols, times, common, data.frequency)

    def _common(self, training_config: dict[str, object]) -> RLCommonConfig:
        saved = training_config.get("common")
        if isinstance(saved, dict):
            return RLCommonConfig(**saved)
        return self.params.rl.common

    def _ensemble(self, model_id: str, directory: Path, split: str, decide_last: bool) -> Positions:
        spec = EnsembleSpec.load(directory)
        members = [self.positions(m["model_id"], split, decide_last) for m in spec.members]
        first = members[0]
        if any(m.weights.shape != first.weights.shape or m.symbols != first.symbols for m in members):
            raise InputError(f"{model_id}: members see different bars or symbols on this data; use aligned data")
        traded = [m.weights[:-1] if decide_last else m.weights for m in members]  # decisions with a fill
        runs = MemberRuns.backtested(traded, first.open, first.close, first.common, first.frequency.periods_per_year)
        next_weights = np.stack([m.weights[-1] for m in members]) if decide_last else None
        combined = ensemble_targets(runs, spec.val_sharpes, spec.config, first.common, next_weights)
        return replace(first, model_id=model_id, model_type="ensemble", weights=combined)


def evaluate_registered(
    registry: ModelRegistry, params: Params, market: Path, work_dir: Path, model_ids: list[str], split: str
) -> tuple[list[dict[str, Any]], BarFrequency]:
    """The metrics suite of each registered model and of the baselines on one split, ranked by
    Sharpe, and the data's bar frequency (each row records its ``periods_per_year``).

    The same suite and bootstrap settings as the ``evaluate`` stage (``params.evaluate``,
    ``params.base.seed``), so a pipeline model gets the numbers ``reports/evaluation.md`` shows.
    An ensemble brings its best member by validation Sharpe as a baseline.

    Raises:
        InputError: an unknown split; ModelNotFoundError: an unknown id (before any work).
    """
    if split not in SPLITS:
        raise InputError(f"--split {split}: use {', '.join(SPLITS)}")
    apply_thread_plan(params.base.threads, "policy")  # as the evaluate stage: same float reductions, same numbers
    ids = [registry.resolve_id(m) for m in model_ids]  # fail fast on a bad id, before any work
    inference = Inference(registry, params, market, work_dir)
    rows: list[dict[str, Any]] = []

    def add(name: str, kind: str, positions: Positions) -> None:
        periods_per_year = positions.frequency.periods_per_year
        result = run_backtest(positions.weights, positions.open, positions.close, positions.common, periods_per_year)
        suite = metrics_suite(
            result,
            positions.open,
            positions.close,
            positions.common,
            params.evaluate,
            params.base.seed,
            periods_per_year,
        )
        rows.append({"model": name, "type": kind, **suite})

    positions = [inference.positions(m, split) for m in ids]
    for p in positions:
        add(p.model_id, p.model_type, p)
        if p.model_type == "ensemble":
            spec = EnsembleSpec.load(inference.restore(p.model_id))
            best = str(spec.members[int(np.argmax(spec.val_sharpes))]["model_id"])
            add(f"best member of {p.model_id}: {best}", "baseline", inference.positions(best, split))
    first = positions[0]
    k = len(first.weights)
    add("buy_and_hold", "baseline", replace(first, weights=buy_and_hold_weights(first.open, 0, k)))
    add("equal_weight", "baseline", replace(first, weights=equal_weight_weights(first.open.shape[1], k)))
    return sorted(rows, key=lambda r: -r["sharpe"]), first.frequency
