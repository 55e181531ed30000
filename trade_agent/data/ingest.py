"""Load market data from the configured source into the canonical, validated frame."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from trade_agent.config import DataConfig, Params
from trade_agent.config.features import SplitsConfig
from trade_agent.data.frequency import infer_frequency
from trade_agent.data.loaders import LINE, RawTable, data_files, read_table
from trade_agent.data.sample import SAMPLE_SYMBOLS, sample_file
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.data.synthetic import SyntheticSpec, bayes_directional_accuracy, generate_synthetic
from trade_agent.data.validation import ValidationReport, validate_market_table
from trade_agent.errors import DataValidationError, InputError
from trade_agent.io import atomic_path, sha256_file, sha256_text, write_json, write_parquet
from trade_agent.paths import MARKET

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """Provenance and cleaning summary of one load (written to ``provenance.json``)."""

    source: str
    path: str = ""
    file_sha256: str = ""
    validation: ValidationReport = field(default_factory=ValidationReport)
    dropped_unaligned_rows: int = 0
    synthetic: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)  # a folder/glob: name, symbol, rows, sha256
    frequency: dict[str, Any] = field(default_factory=dict)  # BarFrequency.to_json()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["repaired_total"] = self.validation.total_repaired
        return out

    def metrics(self) -> dict[str, Any]:
        """The numbers worth comparing across runs (``dvc metrics show``)."""
        return {
            "rows": self.validation.rows,
            "symbols": len(self.validation.symbols),
            "repaired_values": self.validation.total_repaired,
            "dropped_unaligned_rows": self.dropped_unaligned_rows,
            "bar_interval": self.frequency.get("bar_interval", ""),
            "bar_interval_seconds": self.frequency.get("interval_seconds", 0.0),
            "periods_per_year": self.frequency.get("periods_per_year", 0.0),
            "missing_bars": self.frequency.get("missing_bars", 0),
        }


def load_file(path: str | Path, config: DataConfig) -> tuple[pd.DataFrame, IngestReport]:
    """Read and validate a user file, a folder of per-symbol files or a glob of them.

    Each file is validated on its own (errors name that file's lines); in a folder or glob
    a file without a symbol column is the symbol of its name (``AAPL.csv`` -> ``AAPL``),
    and ``file_sha256`` is the checksum of the sorted per-file checksums.

    Raises:
        DataSourceError / DataValidationError: naming the file, column and row.
    """
    files = data_files(path)
    if len(files) == 1 and Path(path).is_file():
        raw = read_table(path, symbol=config.symbol)
        frame, validation = validate_market_table(raw, max_gap=config.max_gap, date_format=config.date_format)
        return frame, IngestReport(source="file", path=str(path), file_sha256=sha256_file(path), validation=validation)
    frames, listed = [], []
    merged = ValidationReport()
    owner: dict[str, str] = {}
    for file in files:
        raw = read_table(file)
        frame, validation = validate_market_table(raw, max_gap=config.max_gap, date_format=config.date_format)
        for symbol in validation.symbols:
            if symbol in owner:
                raise DataValidationError(
                    f"{file}: symbol {symbol!r} is also in {owner[symbol]}; keep one file per symbol"
                )
            owner[symbol] = str(file)
        frames.append(frame)
        for column, count in validation.repaired_values.items():
            merged.repaired_values[column] = merged.repaired_values.get(column, 0) + count
        merged.adjusted_with_adj_close |= validation.adjusted_with_adj_close
        layouts = {merged.timestamp_layout, validation.timestamp_layout} - {""}
        merged.timestamp_layout = " | ".join(sorted(layouts))
        sha = sha256_file(file)
        listed.append({"name": file.name, "symbols": validation.symbols, "rows": validation.rows, "sha256": sha})
    combined = pd.concat(frames, ignore_index=True).sort_values([SYMBOL, TIMESTAMP], kind="stable")
    checksum = sha256_text("\n".join(f"{f['name']} {f['sha256']}" for f in listed))
    report = IngestReport(source="file", path=str(path), file_sha256=checksum, validation=merged, files=listed)
    return combined.reset_index(drop=True), report


def load_market_data(
    config: DataConfig, seed: int = 42, train_fraction: float = SplitsConfig.train
) -> tuple[pd.DataFrame, IngestReport]:
    """Load ``config.source``, filter symbols and align calendars.

    Raises:
        DataSourceError / DataValidationError: with file, column and row of the problem.
    """
    if config.source == "synthetic":
        spec = SyntheticSpec(
            n_symbols=config.synthetic_symbols,
            n_bars=config.synthetic_bars,
            ar=config.synthetic_ar,
            volatility=config.synthetic_volatility,
            seed=seed,
        )
        generated = generate_synthetic(spec)
        raw = RawTable(
            frame=generated.assign(**{LINE: range(1, len(generated) + 1)}), source="<synthetic>", row_label="row"
        )
        frame, validation = validate_market_table(raw)
        report = IngestReport(
            source="synthetic",
            validation=validation,
            synthetic={
                **asdict(spec),
                "bayes_directional_accuracy": {h: bayes_directional_accuracy(spec.ar, h) for h in (1, 5, 10, 20)},
            },
        )
    elif config.source == "sample":
        path = sample_file()
        frame, report = load_file(path, config)
        report.source = "sample"
        report.path = "bokeh_sampledata/_data/stocks.csv.gz"
        wanted = config.symbols or list(SAMPLE_SYMBOLS)
        frame = frame[frame[SYMBOL].isin(wanted)]
    else:
        frame, report = load_file(config.path, config)

    return select_and_align(frame, report, config, train_fraction)


def select_and_align(
    frame: pd.DataFrame, report: IngestReport, config: DataConfig, train_fraction: float = SplitsConfig.train
) -> tuple[pd.DataFrame, IngestReport]:
    """Apply ``data.symbols`` and ``data.align``, then infer the bar frequency of what is left.

    ``train_fraction`` (``splits.train``): the leading share of bars whose count per year
    annualises every metric (:func:`trade_agent.data.frequency.infer_frequency`);
    ``data.periods_per_year`` > 0 overrides it.

    Raises:
        DataValidationError: unknown symbol, or symbols without a single common timestamp.
    """
    source = report.path or report.source
    if config.symbols:
        missing = sorted(set(config.symbols) - set(frame[SYMBOL]))
        if missing:
            raise DataValidationError(
                f"{source}: symbol {missing[0]!r} from data.symbols not found; "
                f"available: {', '.join(sorted(frame[SYMBOL].unique()))}"
            )
        frame = frame[frame[SYMBOL].isin(config.symbols)]
    n_symbols = frame[SYMBOL].nunique()
    if config.align and n_symbols > 1:
        counts = frame.groupby(TIMESTAMP)[SYMBOL].transform("size")
        aligned = frame[counts.to_numpy() == n_symbols]
        if aligned.empty:
            spans = frame.groupby(SYMBOL)[TIMESTAMP].agg(["min", "max"])
            ranges = ", ".join(f"{sym} {row['min']}..{row['max']}" for sym, row in spans.iterrows())
            raise DataValidationError(
                f"{source}: symbols share no timestamp ({ranges}); check their time zones/sessions, "
                "select symbols with data.symbols, or set data.align: false"
            )
        report.dropped_unaligned_rows = len(frame) - len(aligned)
        frame = aligned
    frame = frame.reset_index(drop=True)
    report.validation.rows = len(frame)
    report.validation.symbols = sorted(frame[SYMBOL].unique().tolist())
    report.validation.start = str(frame[TIMESTAMP].min())
    report.validation.end = str(frame[TIMESTAMP].max())
    frequency = infer_frequency(frame[TIMESTAMP].to_numpy(), train_fraction, config.periods_per_year)
    report.frequency = frequency.to_json()
    return frame, report


def prepare(
    config: DataConfig,
    out_dir: Path,
    seed: int = 42,
    check: Callable[[pd.DataFrame, str], None] | None = None,
    train_fraction: float = SplitsConfig.train,
) -> tuple[pd.DataFrame, IngestReport]:
    """The ``prepare`` stage: load + validate, then write the outputs.

    ``market.parquet`` (canonical bars), ``provenance.json`` (source, checksum, date range,
    repairs per column, synthetic ceiling) and ``metrics.json``. ``check(frame, source)``
    runs before anything is written (e.g. the pipeline's minimum-rows check). Nothing is
    written when loading, validation or the check fails.
    """
    frame, report = load_market_data(config, seed, train_fraction)
    if check is not None:
        check(frame, report.path or report.source)
    write_parquet(out_dir / "market.parquet", frame)
    write_json(out_dir / "provenance.json", report.to_dict())
    write_json(out_dir / "metrics.json", report.metrics())
    log.info(
        "prepare: %d bars of %s (%s..%s), %d values repaired, %d unaligned rows dropped; %s bars, %s calendar, "
        "%.0f bars/year (%s), %d missing in-session bars",
        report.validation.rows,
        ", ".join(report.validation.symbols),
        report.validation.start[:10],
        report.validation.end[:10],
        report.validation.total_repaired,
        report.dropped_unaligned_rows,
        report.frequency["bar_interval"],
        report.frequency["calendar"],
        report.frequency["periods_per_year"],
        report.frequency["periods_per_year_source"],
        report.frequency["missing_bars"],
    )
    return frame, report


def export_dataset(frame: pd.DataFrame, provenance: dict[str, Any], out_dir: Path, fmt: str = "csv") -> Path:
    """Write the prepared dataset as a file ``trade-agent train ... DATA`` accepts.

    Creates ``<out_dir>/dataset.<fmt>`` (long format) and ``metadata.json`` (the prepare
    stage's ``provenance.json`` plus the file's name, checksum and columns).
    """
    path = out_dir / f"dataset.{fmt}"
    if fmt == "parquet":
        write_parquet(path, frame)
    else:
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, date_format="%Y-%m-%d %H:%M:%S")
    write_json(
        out_dir / "metadata.json",
        {**provenance, "file": path.name, "sha256": sha256_file(path), "columns": list(frame.columns)},
    )
    return path


def resolve_data(data_path: str) -> DataConfig:
    """Map the DATA argument onto a ``data`` params section.

    Raises:
        InputError: the path does not exist or a dataset directory holds no dataset file.
    """
    if data_path == "sample":
        return DataConfig(source="sample")
    if data_path == "synthetic":
        return DataConfig(source="synthetic")
    if any(c in data_path for c in "*?["):
        return DataConfig(source="file", path=data_path)  # a glob of per-symbol files
    path = Path(data_path)
    if path.is_dir():
        found = [p for p in (path / "dataset.parquet", path / "dataset.csv") if p.is_file()]
        # An exported dataset directory, or a folder of per-symbol files.
        return DataConfig(source="file", path=str(found[0] if found else path))
    if not path.is_file():
        raise InputError(
            f"{data_path}: no such file; pass a CSV/Parquet file, a folder or glob of them, a dataset directory "
            "or 'sample'"
        )
    return DataConfig(source="file", path=str(path))


def prepared_market(data: str | None, params: Params, work_dir: Path) -> Path:
    """A prepared ``market.parquet`` for DATA (validated and aligned like the prepare stage).

    ``None`` means the pipeline's own prepared bars when they exist, else the sample data;
    a path ending in ``market.parquet`` is used as it is; anything else goes through
    :func:`resolve_data` and :func:`prepare` into ``work_dir/prepared``.
    """
    if data is None:
        if MARKET.is_file():
            return MARKET
        data = "sample"
    if data.endswith("market.parquet") and Path(data).is_file():
        return Path(data)
    source = resolve_data(data)
    out = work_dir / "prepared"
    config = replace(params.data, source=source.source, path=source.path)
    prepare(config, out, params.base.seed, train_fraction=params.splits.train)
    return out / "market.parquet"
