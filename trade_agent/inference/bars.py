"""The bars a trained model acts on: a file or in-memory records, validated like ``prepare``.

A file (CSV/Parquet, a folder or glob of per-symbol files, a prepared ``market.parquet`` or
``sample``) goes through the same loader, validation and calendar alignment as the
``prepare`` stage; records (the Python API's DataFrame, an HTTP body) go through the same
header aliases and checks, with rows named ``bar N`` in messages. Either way the result is
the canonical long frame ``timestamp, symbol, open, high, low, close, volume``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from trade_agent.config import Params
from trade_agent.data.ingest import IngestReport, load_market_data, resolve_data, select_and_align
from trade_agent.data.loaders import table_from_frame
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.data.validation import validate_market_table
from trade_agent.errors import DataValidationError, InputError


def bars_from_file(data: str, params: Params) -> tuple[pd.DataFrame, str]:
    """The validated, aligned bars of DATA and the name messages use for it.

    Raises:
        InputError: no such file; DataSourceError / DataValidationError: naming file, column and line.
    """
    source = resolve_data(data)
    # Every symbol of the file: which ones the model trades is checked against the model.
    config = replace(params.data, source=source.source, path=source.path, symbols=[])
    frame, report = load_market_data(config, params.base.seed, params.splits.train)
    frame = frame.sort_values([SYMBOL, TIMESTAMP], kind="stable").reset_index(drop=True)
    frame.attrs["validated"] = True  # the predictor does not validate these again
    return frame, report.path or data


def bars_from_records(records: pd.DataFrame | list[dict[str, Any]], params: Params, source: str) -> pd.DataFrame:
    """In-memory bars (one row per symbol and bar, the file's column names or their aliases).

    Raises:
        DataValidationError: naming ``source``, the bar number and the column.
    """
    if isinstance(records, list):
        if not all(isinstance(r, dict) for r in records):
            raise DataValidationError(f"{source}: bars must be a list of objects, one per symbol and bar")
        frame = pd.DataFrame.from_records(records)
    elif isinstance(records, pd.DataFrame):
        frame = records.copy()
    else:
        raise InputError(f"{source}: bars must be a pandas DataFrame or a list of records")
    raw = table_from_frame(frame, source)
    validated, report = validate_market_table(raw, max_gap=params.data.max_gap, date_format=params.data.date_format)
    config = replace(params.data, symbols=[])
    aligned, _ = select_and_align(validated, IngestReport(source=source, validation=report), config)
    aligned = aligned.sort_values([SYMBOL, TIMESTAMP], kind="stable").reset_index(drop=True)
    aligned.attrs["validated"] = True
    return aligned
