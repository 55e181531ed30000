"""The embedded real dataset: daily AAPL, GOOG, IBM, MSFT from ``bokeh-sampledata``.

The file ships inside the PyPI package (no download at run time). Prices there are not
split-adjusted; the ``Adj Close`` column is used to adjust them, like any user file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trade_agent.errors import DataSourceError

SAMPLE_SYMBOLS: tuple[str, ...] = ("AAPL", "GOOG", "IBM", "MSFT")


def sample_file() -> Path:
    """Path of ``stocks.csv.gz`` inside the installed ``bokeh_sampledata`` package.

    Raises:
        DataSourceError: the package is not installed.
    """
    spec = importlib.util.find_spec("bokeh_sampledata")
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(
            "data.source 'sample' needs the package bokeh-sampledata; run `make run` or `pip install bokeh-sampledata`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "_data" / "stocks.csv.gz"
    if not path.is_file():
        raise DataSourceError(f"{path}: sample file missing from bokeh-sampledata; reinstall the package")
    return path
