"""``trade-agent data pipeline -r``: the ``prepare`` and ``features`` stages, then an exported dataset.

Inside a DVC project the stages' outputs belong to DVC, so ``dvc repro features`` produces
them (or restores them from the cache) and only the export is written here. Outside one
(a folder with just a params.yaml) the same stage functions run in-process into ``data/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from trade_agent import paths
from trade_agent.config import Params
from trade_agent.data.ingest import export_dataset, prepare
from trade_agent.errors import InputError
from trade_agent.experiments import project_for, reproduce
from trade_agent.features.build import check_enough_bars, run_features_stage
from trade_agent.io import read_json


@dataclass(frozen=True)
class ExportedDataset:
    path: Path
    rows: int
    provenance: dict[str, Any]


def dataset_name(params: Params) -> str:
    """``dataset_<name>``: the data file's stem, else the source (``sample``, ``synthetic``)."""
    if params.data.source == "file" and params.data.path:
        return Path(params.data.path).name.split(".")[0]
    return params.data.source


def run_data_pipeline(params: Params, custom_params: bool, name: str = "", fmt: str = "csv") -> ExportedDataset:
    """Prepare + features (by DVC in a DVC project), then ``data/dataset_<name>/dataset.<fmt>``.

    Raises:
        InputError: ``--params`` inside a DVC project (its outputs follow params.yaml).
    """
    root = project_for("features")
    if root is not None:
        if custom_params:
            raise InputError(
                "--params with -r inside a DVC project: the pipeline's data/ outputs follow params.yaml; "
                "edit params.yaml (or use `dvc exp run -S ...`), or run outside the project"
            )
        reproduce(root, "features")
        frame = pd.read_parquet(root / paths.MARKET)
        provenance = read_json(root / paths.PREPARED_DIR / "provenance.json")
        out = root / "data"
    else:
        frame, report = prepare(
            params.data,
            paths.PREPARED_DIR,
            params.base.seed,
            check=lambda bars, source: check_enough_bars(bars, params, source),
            train_fraction=params.splits.train,
        )
        run_features_stage(params, paths.MARKET, paths.FEATURES_DIR)
        provenance, out = report.to_dict(), Path("data")
    path = export_dataset(frame, provenance, out / f"dataset_{name or dataset_name(params)}", fmt)
    return ExportedDataset(path, len(frame), provenance)
