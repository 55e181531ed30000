"""A ``features`` stage output directory made from numpy alone, for GPU checks and benchmarks.

The GPU machine ``make gpu-check`` runs on has no TA-Lib, so its tests and the distributed
benchmark cannot run the real ``features`` stage. This writes what that stage writes and the
CNN-LSTM trainer, the launcher and the registry read: ``features.parquet`` (timestamp, symbol,
split, features, targets), ``schema.json`` and a ``preprocessor/<id>/`` folder (a note, not a
fitted pipeline: nothing here is for inference).

The features are standard normal except ``f0``, which carries the row's forward return with
correlation ``signal``; the direction label is the return's sign outside a dead zone that
makes the three classes about equally common. So a working trainer reaches a validation
accuracy well above chance (1/3) in a few epochs, whatever the precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.features.labels import TARGET_DIRECTION, TARGET_RETURN
from trade_agent.features.splits import SPLIT, SPLIT_NAMES
from trade_agent.io import write_json, write_parquet

PREPROCESSOR_ID = "synthetic"
RETURN_SCALE = 0.01
DEAD_ZONE = 0.43  # in return standard deviations: P(|z| < 0.43) = 1/3


def synthetic_feature_frame(
    symbols: int, bars: int, n_features: int, signal: float = 0.8, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """(frame sorted by symbol then time, feature names); splits 70/15/15 % of each symbol's bars."""
    if not 0.0 <= signal <= 1.0:
        raise ValueError(f"signal must lie in [0, 1], got {signal}")
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(n_features)]
    z = rng.standard_normal((symbols, bars))
    features = rng.standard_normal((symbols, bars, n_features)).astype(np.float32)
    features[:, :, 0] = (signal * z + np.sqrt(1.0 - signal**2) * features[:, :, 0]).astype(np.float32)
    direction = np.where(z < -DEAD_ZONE, 0, np.where(z > DEAD_ZONE, 2, 1)).astype(np.int64)
    cut = np.cumsum([int(bars * 0.7), int(bars * 0.15)])
    split = np.array(SPLIT_NAMES)[np.searchsorted(cut, np.arange(bars), side="right")]
    frame = pd.DataFrame(features.reshape(symbols * bars, n_features), columns=names)
    frame.insert(0, SPLIT, np.tile(split, symbols))
    frame.insert(0, SYMBOL, np.repeat([f"S{i}" for i in range(symbols)], bars))
    frame.insert(0, TIMESTAMP, np.tile(pd.bdate_range("2000-01-03", periods=bars).to_numpy(), symbols))
    frame[TARGET_RETURN] = (RETURN_SCALE * z).reshape(-1)
    frame[TARGET_DIRECTION] = direction.reshape(-1)
    return frame, names


def write_synthetic_features(
    out_dir: Path,
    *,
    symbols: int = 4,
    bars: int = 1000,
    n_features: int = 35,
    sequence_length: int = 30,
    signal: float = 0.8,
    seed: int = 0,
) -> Path:
    """Write a features directory (see the module docstring); returns ``out_dir``."""
    frame, names = synthetic_feature_frame(symbols, bars, n_features, signal, seed)
    rows: dict[str, int] = {}
    splits: dict[str, list[str]] = {}
    class_share: dict[str, dict[str, float]] = {}
    for name in SPLIT_NAMES:
        part = frame[frame[SPLIT] == name]
        rows[name] = len(part)
        splits[name] = [str(part[TIMESTAMP].min().date()), str(part[TIMESTAMP].max().date())]
        counts = np.bincount(part[TARGET_DIRECTION].to_numpy(), minlength=3)
        class_share[name] = {
            label: round(float(c) / max(len(part), 1), 4)
            for label, c in zip(("down", "flat", "up"), counts, strict=True)
        }
    schema: dict[str, Any] = {
        "feature_names": names,
        "targets": [TARGET_RETURN, TARGET_DIRECTION],
        "classes": {"0": "down", "1": "flat", "2": "up"},
        "splits": splits,
        "horizon": 1,
        "sequence_length": sequence_length,
        "symbols": sorted(frame[SYMBOL].unique().tolist()),
        "preprocessor_id": PREPROCESSOR_ID,
        "rows": rows,
        "class_share": class_share,
        "synthetic": {"signal": signal, "seed": seed, "bars": bars},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / "features.parquet", frame)
    write_json(out_dir / "schema.json", schema)
    write_json(
        out_dir / "preprocessor" / PREPROCESSOR_ID / "synthetic.json",
        {"note": "synthetic features (trade_agent.devtools.synthetic_features): no fitted preprocessing pipeline"},
    )
    return out_dir
