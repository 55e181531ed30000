"""What a stage-2 agent observes, and the state normalisation fitted on its training split.

The observation per decision bar is ``[feature window | stage-1 context | portfolio state]``
(see :mod:`trade_agent.market.simulator`). A compact one (a few market features of the last
bars plus the CNN-LSTM's class probabilities and predicted return) lets a small policy find
the signal stage 1 already extracted; 1,500 raw inputs per step mostly add noise to fit.

Every observed column is z-scored with its mean and standard deviation over the
**training** panel (no look-ahead) and clipped, as SB3's ``VecNormalize`` does but frozen
after fitting: the statistics are saved in the agent's ``policy.json`` (plain JSON, no
pickle) and applied unchanged at validation, test and inference, so a saved agent replays
its observations bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trade_agent.cnn_lstm.model import EMBEDDING_PREFIX, PREDICTED_RETURN, PROBABILITY_COLUMNS
from trade_agent.errors import ConfigError
from trade_agent.market.simulator import MarketPanel

CLIP = 10.0


@dataclass(frozen=True)
class ObservationSpec:
    """Which columns an agent observes.

    Attributes:
        features: market feature columns in the window (empty: every feature).
        embedding: whether the CNN-LSTM embedding (``emb_*``) is observed; the class
            probabilities and predicted return always are when embeddings are given.
        window: bars of features per observation.
    """

    features: tuple[str, ...] = ()
    embedding: bool = False
    window: int = 1

    def feature_columns(self, available: list[str]) -> list[str]:
        """The observed features, in the order given.

        Raises:
            ConfigError: a requested feature is not produced by the features stage.
        """
        if not self.features:
            return list(available)
        missing = [f for f in self.features if f not in available]
        if missing:
            raise ConfigError(
                f"rl.common.features: '{missing[0]}' is not a feature of the data; available: {', '.join(available)}"
            )
        return list(self.features)

    def context_columns(self, available: list[str]) -> list[str]:
        """The observed stage-1 columns of the embed outputs: [emb_*] + probabilities + predicted return."""
        embedding = [c for c in available if c.startswith(EMBEDDING_PREFIX)] if self.embedding else []
        return [*embedding, *(c for c in (*PROBABILITY_COLUMNS, PREDICTED_RETURN) if c in available)]


@dataclass(frozen=True)
class StateScaler:
    """Per-column z-score of the feature and context columns, fitted on a training panel."""

    feature_mean: np.ndarray
    feature_std: np.ndarray
    context_mean: np.ndarray
    context_std: np.ndarray

    @classmethod
    def fit(cls, panel: MarketPanel) -> StateScaler:
        """Mean and std of each column over every (bar, asset) of ``panel``; zero spreads become 1."""

        def stats(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            columns = cube.shape[2]
            if columns == 0 or cube.size == 0:
                return np.zeros(columns), np.ones(columns)
            flat = cube.reshape(-1, columns).astype(np.float64)
            std = flat.std(axis=0)
            return flat.mean(axis=0), np.where(std > 1e-12, std, 1.0)

        fm, fs = stats(panel.features)
        cm, cs = stats(panel.context)
        return cls(fm, fs, cm, cs)

    def apply(self, panel: MarketPanel) -> MarketPanel:
        """A new panel with normalised, clipped features and context (prices untouched).

        Raises:
            ConfigError: the panel's columns do not match what the scaler was fitted on.
        """
        if panel.features.shape[2] != len(self.feature_mean) or panel.context.shape[2] != len(self.context_mean):
            raise ConfigError(
                f"observation has {panel.features.shape[2]} features + {panel.context.shape[2]} context columns, "
                f"the agent's state normalisation was fitted on {len(self.feature_mean)} + {len(self.context_mean)}"
            )

        def z(cube: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
            scaled = (cube.astype(np.float64) - mean) / std
            return np.clip(scaled, -CLIP, CLIP).astype(np.float32)

        return replace(
            panel,
            features=z(panel.features, self.feature_mean, self.feature_std),
            context=z(panel.context, self.context_mean, self.context_std),
        )

    def to_json(self) -> dict[str, list[float]]:
        return {
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "context_mean": self.context_mean.tolist(),
            "context_std": self.context_std.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateScaler:
        """Raises ConfigError on a malformed entry (it is read back from a stored file)."""
        try:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("feature_mean", "feature_std")}
            arrays |= {k: np.asarray(data[k], dtype=np.float64) for k in ("context_mean", "context_std")}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"state normalisation entry is malformed ({exc}); retrain the agent") from exc
        if (
            any(a.ndim != 1 or not np.isfinite(a).all() for a in arrays.values())
            or (arrays["feature_std"] <= 0).any()
            or (arrays["context_std"] <= 0).any()
        ):
            raise ConfigError("state normalisation entry holds non-finite values or spreads <= 0; retrain the agent")
        return cls(**arrays)


@dataclass(frozen=True)
class Observation:
    """An agent's observation: its columns and the scaler fitted on its training panel."""

    features: list[str]
    context: list[str]
    window: int
    scaler: StateScaler

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "context": self.context,
            "window": self.window,
            "normalization": self.scaler.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observation:
        return cls(
            [str(c) for c in data["features"]],
            [str(c) for c in data["context"]],
            int(data["window"]),
            StateScaler.from_json(data["normalization"]),
        )

    @classmethod
    def fit(cls, spec: ObservationSpec, train: MarketPanel) -> Observation:
        """Choose the columns of ``spec`` from the training panel and fit the scaler on them."""
        features = spec.feature_columns(list(train.feature_names)) if train.feature_names else []
        context = spec.context_columns(list(train.context_names))
        selected = _select(train, features, context)
        return cls(features, context, spec.window, StateScaler.fit(selected))

    def apply(self, panel: MarketPanel) -> MarketPanel:
        """The observed columns of ``panel``, normalised with the training statistics.

        Raises:
            ConfigError: the panel lacks an observed column.
        """
        return self.scaler.apply(_select(panel, self.features, self.context))


def _select(panel: MarketPanel, features: list[str], context: list[str]) -> MarketPanel:
    """The named columns of a panel (all of them for a hand-built panel without names)."""

    def pick(
        cube: np.ndarray, names: tuple[str, ...], wanted: list[str], what: str
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        if not names:
            return cube, names
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ConfigError(
                f"the data has no {what} column '{missing[0]}' that the agent observes; "
                "use data prepared like the agent's training data"
            )
        index = [names.index(c) for c in wanted]
        return cube[:, :, index], tuple(wanted)

    f, fn = pick(panel.features, panel.feature_names, features, "feature")
    c, cn = pick(panel.context, panel.context_names, context, "CNN-LSTM")
    return replace(panel, features=f, context=c, feature_names=fn, context_names=cn)
