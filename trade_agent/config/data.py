"""Sections ``base`` and ``data`` (stage ``prepare``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class BaseConfig:
    """Settings shared by every stage."""

    seed: int = 42
    device: str = "auto"
    threads: int | Literal["auto"] = "auto"  # intra-op threads per process: the plan in trade_agent.threads

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"base.device: '{self.device}' is unknown; use auto, cpu, cuda or cuda:N")
        if self.threads != "auto" and (isinstance(self.threads, bool) or self.threads < 1):
            raise ConfigError(f"base.threads: {self.threads!r}; use auto (the thread plan) or a count >= 1")


@dataclass(frozen=True)
class DataConfig:
    """Where market data comes from and how it is cleaned (stage ``prepare``).

    Attributes:
        source: ``sample`` (real daily AAPL/GOOG/IBM/MSFT shipped in bokeh-sampledata),
            ``synthetic`` (seeded generator with a planted signal) or ``file``.
        path: CSV or Parquet file, a folder of per-symbol files or a glob
            (``data/raw/stocks/``, ``data/raw/*.csv``), used when ``source == "file"``;
            in a folder or glob each file's name is its symbol. Keep it under
            ``data/raw/`` so DVC tracks it as a dependency of ``prepare``.
        symbols: keep only these symbols (empty: all).
        symbol: symbol name for single-instrument files without a symbol column
            (default: the file name without extension).
        date_format: strftime format for non-ISO timestamps, e.g. ``%d.%m.%Y %H:%M:%S.%f``.
        align: keep only timestamps present for every symbol (a common calendar, as the
            multi-asset trading environment needs).
        max_gap: longest run of consecutive missing values (per symbol and column) that is
            repaired by forward fill; longer gaps are an error. Bars absent from the file
            are never invented: they are counted (``missing_bars`` in provenance.json,
            in-session slots only, so nights and weekends are not gaps).
        periods_per_year: bars per year for annualised metrics; 0 infers it from the
            timestamps (see :mod:`trade_agent.data.frequency`).
        synthetic_*: shape and planted signal of the synthetic generator.
    """

    source: Literal["sample", "synthetic", "file"] = "sample"
    path: str = ""
    symbols: list[str] = field(default_factory=list)
    symbol: str = ""
    date_format: str = ""
    max_gap: int = 3
    periods_per_year: float = 0.0
    align: bool = True
    synthetic_symbols: int = 2
    synthetic_bars: int = 1500
    synthetic_ar: float = 0.3
    synthetic_volatility: float = 0.01

    def __post_init__(self) -> None:
        if self.periods_per_year < 0:
            raise ConfigError(
                f"data.periods_per_year: must be >= 0 (0 infers it from the timestamps), got {self.periods_per_year}"
            )
        if self.max_gap < 0:
            raise ConfigError(f"data.max_gap: must be >= 0, got {self.max_gap}")
        if self.source == "file" and not self.path:
            raise ConfigError("data.path: required when data.source is 'file'; set it to a CSV or Parquet file")
