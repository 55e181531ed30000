"""Model inputs as contiguous tensors; windows are gathered by index arithmetic.

All rows of ``features.parquet`` (sorted by symbol, then time) live in one
``(rows, features)`` tensor. A sample is identified by the row that ends its window; a
batch of windows is ``features[ends[:, None] + offsets]`` - one gather, no per-sample
Python. Windows never cross a symbol boundary and may reach back into embargo rows (which
are inputs only, never targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.errors import SchemaError
from trade_agent.features.labels import TARGET_DIRECTION, TARGET_RETURN
from trade_agent.features.splits import SPLIT, SPLIT_NAMES


@dataclass
class WindowData:
    """Features, targets and per-split window ends.

    Attributes:
        features: ``(rows, n_features)`` float32.
        direction: ``(rows,)`` int64 class ids (-1 where unlabelled).
        returns: ``(rows,)`` float32 forward log returns (NaN where unlabelled).
        ends: split name -> int64 row indices that end a full, labelled window.
        all_ends: every row that ends a full window (for embeddings).
        sequence_length: window length.
    """

    features: torch.Tensor
    direction: torch.Tensor
    returns: torch.Tensor
    ends: dict[str, torch.Tensor]
    all_ends: torch.Tensor
    sequence_length: int

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, feature_names: list[str], sequence_length: int) -> WindowData:
        """Build from a features frame sorted by symbol, then time.

        Raises:
            SchemaError: the frame is not sorted that way (windows would mix symbols).
        """
        codes, _ = pd.factorize(frame[SYMBOL])
        times = frame[TIMESTAMP].to_numpy()
        same = codes[1:] == codes[:-1]
        starts = np.flatnonzero(~same) + 1
        if (np.diff(times)[same] <= np.timedelta64(0)).any() or len(np.unique(codes[np.r_[0, starts]])) != len(
            starts
        ) + 1:
            raise SchemaError("features frame must be sorted by symbol, then time (as features.parquet is)")
        position = frame.groupby(SYMBOL, sort=False).cumcount().to_numpy()
        full = position >= sequence_length - 1
        direction = frame[TARGET_DIRECTION].to_numpy(np.int64)
        splits = frame[SPLIT].to_numpy()
        ends = {
            name: torch.from_numpy(np.flatnonzero(full & (splits == name) & (direction >= 0))) for name in SPLIT_NAMES
        }
        return cls(
            features=torch.from_numpy(np.ascontiguousarray(frame[feature_names].to_numpy(np.float32))),
            # Copies: pandas hands out read-only views of single columns (copy-on-write).
            direction=torch.tensor(direction),
            returns=torch.tensor(frame[TARGET_RETURN].to_numpy(np.float32)),
            ends=ends,
            all_ends=torch.from_numpy(np.flatnonzero(full)),
            sequence_length=sequence_length,
        )

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    def windows(self, ends: torch.Tensor) -> torch.Tensor:
        """``(len(ends), sequence_length, n_features)`` windows ending at ``ends``."""
        offsets = torch.arange(-self.sequence_length + 1, 1, dtype=torch.int64)
        return self.features[ends[:, None] + offsets]
