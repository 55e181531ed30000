"""The ``features`` stage: features + labels + splits + a fitted, saved preprocessor.

Output frame (one row per symbol and bar after the warm-up, sorted by symbol then time):
``timestamp, symbol, split, <features...>, target_return, target_direction``. Rows of the
embargo gaps and the unlabelled tail are kept with ``split == "excluded"`` because later
stages cut input windows that reach back across them; they are never training targets.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.config import Params
from trade_agent.data.frequency import BarFrequency, infer_frequency
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.data.synthetic import bayes_directional_accuracy
from trade_agent.errors import InsufficientDataError
from trade_agent.features.indicators import warmup_bars
from trade_agent.features.labels import TARGET_DIRECTION, TARGET_RETURN, check_label_balance, make_labels
from trade_agent.features.splits import (
    EXCLUDED,
    SPLIT,
    SPLIT_NAMES,
    SplitBoundaries,
    assign_splits,
    compute_boundaries,
    enforce_embargo,
    minimum_labelled_bars,
)
from trade_agent.io import canonical_json, new_temp_dir, read_json, sha256_file, sha256_text, write_json, write_parquet
from trade_agent.preprocessing.manager import PreprocessorManager
from trade_agent.preprocessing.pipeline import PreprocessingPipeline

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Result of :func:`build_features`."""

    frame: pd.DataFrame
    feature_names: list[str]
    boundaries: SplitBoundaries
    pipeline: PreprocessingPipeline
    warmup: int


def minimum_bars(params: Params) -> int:
    """Bars per symbol the configured pipeline needs: warm-up + splits/embargo + horizon."""
    fractions = (params.splits.train, params.splits.val, params.splits.test)
    labelled = minimum_labelled_bars(fractions, params.embargo_bars, params.features.sequence_length)
    return first_labelled_bar(params) + labelled + params.labels.horizon


def first_labelled_bar(params: Params) -> int:
    """Bars before the first usable row: the indicators' warm-up, or the trailing window of
    a volatility-scaled dead zone when that is longer."""
    labels = params.labels
    label_warmup = labels.volatility_window if labels.dead_zone_units == "volatility" else 0
    return max(warmup_bars(params.features), label_warmup)


def check_enough_bars(market: pd.DataFrame, params: Params, source: str) -> None:
    """Raise :class:`InsufficientDataError` naming the shortest symbol and the minimum."""
    need = minimum_bars(params)
    counts = market.groupby(SYMBOL).size()
    if counts.empty or counts.min() < need:
        symbol = counts.idxmin() if not counts.empty else "-"
        have = int(counts.min()) if not counts.empty else 0
        smallest = min(params.splits.train, params.splits.val, params.splits.test)
        raise InsufficientDataError(
            f"{source}: symbol {symbol} has {have} bars; the configured pipeline needs at least "
            f"{need} per symbol (warm-up {first_labelled_bar(params)} + horizon {params.labels.horizon} + "
            f"2 embargoes of {params.embargo_bars} + enough bars for the smallest split ({smallest:.0%}) "
            f"to hold {params.features.sequence_length}); supply more data or lower "
            "features.sequence_length / labels.horizon / the indicator periods"
        )


def build_features(
    market: pd.DataFrame,
    params: Params,
    source: str = "market data",
    pipeline: PreprocessingPipeline | None = None,
    boundaries: SplitBoundaries | None = None,
) -> FeatureSet:
    """Compute the feature set without writing anything (see module docstring).

    ``pipeline``: an already fitted preprocessor (e.g. the one saved with a model) applied
    as it is, for inference on new data with the model's own scaling; by default a new
    pipeline is fitted on the training split.
    ``boundaries``: the splits as given (a walk-forward fold's calendar windows, embargo gaps
    included) instead of ``params.splits`` fractions of the labelled bars.

    Raises:
        InsufficientDataError: too few bars for warm-up, splits and embargo.
        DataValidationError / SchemaError: from the preprocessing steps.
    """
    if boundaries is None:  # given boundaries were checked against their own windows
        check_enough_bars(market, params, source)
    market = market.sort_values([SYMBOL, TIMESTAMP], kind="stable").reset_index(drop=True)
    labels = make_labels(market, params.labels)
    warmup = warmup_bars(params.features)
    position = market.groupby(SYMBOL).cumcount().to_numpy()
    usable = (position >= warmup) & (labels[TARGET_DIRECTION].to_numpy() >= 0)
    timestamps = np.sort(market.loc[usable, TIMESTAMP].unique())
    fractions = (params.splits.train, params.splits.val, params.splits.test)
    bounds = boundaries or compute_boundaries(
        timestamps, fractions, params.embargo_bars, params.features.sequence_length, source
    )

    if pipeline is None:  # training: the labels must be learnable (new data for a trained model need not be)
        stamps = market[TIMESTAMP].to_numpy()
        in_train = usable & (stamps >= np.datetime64(bounds.train[0])) & (stamps <= np.datetime64(bounds.train[1]))
        check_label_balance(labels[TARGET_DIRECTION].to_numpy()[in_train], params.labels, source)
    if pipeline is not None:
        features = pipeline.transform(market)
    else:
        pipeline = PreprocessorManager().create_standard_pipeline(
            "cnn_lstm",
            scaling_method=params.preprocessing.scaling,
            include_technical_indicators=params.features.technical_indicators,
            include_sentiment=params.sentiment.enabled,
            sequence_length=params.features.sequence_length,
            features=params.features,
            sentiment=params.sentiment,
            max_gap=params.data.max_gap,
            clip=params.preprocessing.clip,
        )
        features = pipeline.fit_transform(market, fit_until=bounds.train[1])
    names = pipeline.feature_names
    frame = features.merge(labels, on=[TIMESTAMP, SYMBOL], how="left", validate="one_to_one")
    frame[names] = frame[names].astype(np.float32)
    frame.insert(2, SPLIT, assign_splits(frame[TIMESTAMP], bounds))
    unlabelled = frame[TARGET_DIRECTION].to_numpy() < 0
    frame.loc[unlabelled, SPLIT] = EXCLUDED
    frame[SPLIT] = enforce_embargo(frame[SYMBOL].to_numpy(), frame[SPLIT].to_numpy(), params.embargo_bars).astype(str)
    return FeatureSet(frame=frame, feature_names=names, boundaries=bounds, pipeline=pipeline, warmup=warmup)


def describe(feature_set: FeatureSet, params: Params) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, metrics) dicts written next to the features."""
    frame = feature_set.frame
    rows: dict[str, int] = {}
    class_share: dict[str, dict[str, float]] = {}
    schema: dict[str, Any] = {
        "feature_names": feature_set.feature_names,
        "targets": [TARGET_RETURN, TARGET_DIRECTION],
        "classes": {"0": "down", "1": "flat", "2": "up"},
        "splits": feature_set.boundaries.to_dict(),
        "horizon": params.labels.horizon,
        "dead_zone": params.labels.dead_zone,
        "dead_zone_units": params.labels.dead_zone_units,
        "sequence_length": params.features.sequence_length,
        "warmup_bars": feature_set.warmup,
        "symbols": sorted(frame[SYMBOL].unique().tolist()),
        "preprocessor_id": feature_set.pipeline.version,
        "rows": rows,
        "class_share": class_share,
    }
    metrics: dict[str, Any] = {"n_features": len(feature_set.feature_names)}
    for name in SPLIT_NAMES:
        part = frame[frame[SPLIT] == name]
        counts = np.bincount(part[TARGET_DIRECTION].to_numpy(np.int64), minlength=3)
        rows[name] = metrics[f"{name}_rows"] = len(part)
        class_share[name] = {
            cls: round(float(c) / max(len(part), 1), 4) for cls, c in zip(("down", "flat", "up"), counts, strict=True)
        }
    return schema, metrics


def training_data_info(feature_set: FeatureSet, params: Params, source: str) -> dict[str, Any]:
    """What the preprocessor was fitted on (stored in its metadata)."""
    frame = feature_set.frame
    train = frame[frame[SPLIT] == "train"]
    return {
        "source": source,
        "symbols": sorted(frame[SYMBOL].unique().tolist()),
        "fit_rows": len(train),
        "fit_until": str(feature_set.boundaries.train[1]),
        "features": asdict(params.features),
    }


def save_preprocessor(feature_set: FeatureSet, params: Params, root: Path, source: str) -> str:
    """Save the fitted pipeline under ``root``; returns its id."""
    manager = PreprocessorManager(root, step_modules=params.preprocessing.step_modules)
    path = manager.save_pipeline(feature_set.pipeline, "cnn_lstm", training_data_info(feature_set, params, source))
    return path.name


def features_params_key(params: Params) -> str:
    """Identity of everything the ``features`` stage reads from params."""

    sections = {
        "features": asdict(params.features),
        "sentiment": asdict(params.sentiment),
        "labels": asdict(params.labels),
        "splits": asdict(params.splits),
        "preprocessing": asdict(params.preprocessing),
        "max_gap": params.data.max_gap,
    }
    return sha256_text(canonical_json(sections))[:16]


def cached_features(
    params: Params, market_path: Path, cache_root: Path, fitted_preprocessor: Path | None = None
) -> Path:
    """The features stage's outputs for these inputs under ``cache_root`` (built once).

    Keyed by the market file's content, the features params and the preprocessor; built in a
    temporary directory and renamed into place, so concurrent builders never see half a
    directory (the first rename wins, the others discard theirs).
    """
    import os

    key = sha256_text(
        canonical_json(
            {
                "market": sha256_file(market_path),
                "params": features_params_key(params),
                "preprocessor": fitted_preprocessor.name if fitted_preprocessor is not None else None,
            }
        )
    )[:16]
    target = cache_root / key
    if (target / "metrics.json").is_file():  # written last
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_dir(cache_root, f".{key}.")
    try:
        run_features_stage(params, market_path, tmp, fitted_preprocessor=fitted_preprocessor)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "metrics.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def dataset_frequency(provenance: dict[str, Any], source: str, market: pd.DataFrame, params: Params) -> BarFrequency:
    """The frequency ``prepare`` recorded; for bare bars without provenance, inferred the same way."""
    if "frequency" in provenance:
        return BarFrequency.from_json(provenance["frequency"], source)
    return infer_frequency(market[TIMESTAMP].to_numpy(), params.splits.train)


def run_features_stage(
    params: Params,
    market_path: Path,
    out_dir: Path,
    fitted_preprocessor: Path | None = None,
    boundaries: SplitBoundaries | None = None,
) -> FeatureSet:
    """The ``features`` stage: read prepared bars, build, then write every output.

    ``fitted_preprocessor``: a saved preprocessor directory (e.g. a model's) to apply, and
    copy into the outputs as it is, instead of fitting a new one on the training split.

    Writes ``features.parquet``, ``schema.json``, ``metrics.json`` and ``preprocessor/``
    under ``out_dir`` only after everything was computed.
    """
    market = pd.read_parquet(market_path)
    pipeline = None
    if fitted_preprocessor is not None:
        pipeline = PreprocessorManager(
            fitted_preprocessor.parent, step_modules=params.preprocessing.step_modules
        ).load_pipeline(fitted_preprocessor.name)
    feature_set = build_features(market, params, source=str(market_path), pipeline=pipeline, boundaries=boundaries)
    preprocessor_root = out_dir / "preprocessor"
    if preprocessor_root.exists():
        shutil.rmtree(preprocessor_root)
    if fitted_preprocessor is not None:
        shutil.copytree(fitted_preprocessor, preprocessor_root / fitted_preprocessor.name)
    else:
        save_preprocessor(feature_set, params, preprocessor_root, str(market_path))
    schema, metrics = describe(feature_set, params)
    provenance_path = market_path.parent / "provenance.json"
    provenance = read_json(provenance_path) if provenance_path.is_file() else {}
    frequency = dataset_frequency(provenance, str(provenance_path), market, params)
    # Every later stage annualises with the dataset's own bars per year, read from here.
    schema["frequency"] = frequency.to_json()
    metrics["periods_per_year"] = frequency.periods_per_year
    synthetic = provenance.get("synthetic")
    if synthetic:
        # The best accuracy any model can reach on this data at this horizon.
        metrics["bayes_directional_accuracy"] = bayes_directional_accuracy(synthetic["ar"], params.labels.horizon)
    write_parquet(out_dir / "features.parquet", feature_set.frame)
    write_json(out_dir / "schema.json", schema)
    write_json(out_dir / "metrics.json", metrics)
    log.info(
        "features: %d rows x %d features (%s), preprocessor %s",
        len(feature_set.frame),
        len(feature_set.feature_names),
        ", ".join(f"{k} {metrics[f'{k}_rows']}" for k in SPLIT_NAMES),
        feature_set.pipeline.version,
    )
    return feature_set
