"""Acting on new data: a registered model's target weights for the next bar.

``Predictor`` restores a model and everything upstream of it (an agent's CNN-LSTM, an
ensemble's members) from the registry, every file checked against its checksum, once. Each
:meth:`Predictor.predict` then

1. checks the bars against the model: the symbols it trades, the columns its saved
   preprocessor was fitted on, its bar interval, and enough history for the indicator
   warm-up, the CNN-LSTM's sequence and the agent's observation window;
2. scales them with the model's own saved preprocessor (never refitted) and recomputes the
   stage-1 embeddings with the model's own CNN-LSTM;
3. runs the model from ``start`` to ``as_of`` exactly as the backtester does (the same
   :class:`~trade_agent.evaluation.inference.Inference` code, starting flat) and asks it once
   more after the close of the ``as_of`` bar: that decision is filled at the next bar's open.

Agents observe their own positions, so a decision depends on the track that led to it: a
prediction replays the model from ``start`` (default: the first bar it can decide on), and
the backtest of a split is the same replay started at the split's first bar. Holdings only
turn the target into orders.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trade_agent.cnn_lstm.embed import compute_embeddings
from trade_agent.cnn_lstm.store import PREPROCESSOR_DIR
from trade_agent.config import FeaturesConfig, Params, load_params_or_defaults
from trade_agent.config.loader import from_mapping
from trade_agent.config.rl import ALGOS
from trade_agent.data.frequency import BarFrequency, infer_frequency
from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.ensemble.combine import EnsembleSpec
from trade_agent.errors import DataSourceError, InputError, InsufficientDataError, SchemaError
from trade_agent.evaluation.inference import Inference, Positions
from trade_agent.features.indicators import warmup_bars
from trade_agent.features.labels import TARGET_DIRECTION, TARGET_RETURN
from trade_agent.features.splits import SPLIT
from trade_agent.inference.bars import bars_from_file, bars_from_records
from trade_agent.inference.orders import Holdings, Order, orders_for
from trade_agent.io import read_json
from trade_agent.market.panel import SplitData
from trade_agent.preprocessing.manager import PreprocessorManager
from trade_agent.preprocessing.pipeline import PreprocessingPipeline
from trade_agent.registry import ModelRegistry
from trade_agent.registry.registry import ModelMetadata
from trade_agent.threads import apply_thread_plan

LIVE = "live"  # split label of the bars the model trades in a prediction
HISTORY = "history"  # earlier bars: indicator warm-up and observation windows only


@dataclass(frozen=True)
class Prediction:
    """What a model holds from the next bar on, decided after the close of ``as_of``.

    ``weights``: target weight per symbol (fraction of portfolio value, short < 0), filled at
    the next bar's open. ``orders`` / ``estimated_cost``: from ``holdings``, when given.
    """

    model_id: str
    model_type: str
    as_of: str
    start: str
    bars: int
    symbols: list[str]
    weights: dict[str, float]
    gross_exposure: float
    net_exposure: float
    preprocessor_ids: list[str]
    bar_interval: str
    cost_bps: float
    slippage_bps: float
    fills_at: str = "the open of the bar after as_of"
    orders: list[Order] | None = None
    portfolio_value: float | None = None
    estimated_cost: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["orders"] = [asdict(o) for o in self.orders] if self.orders is not None else None
        return out


@dataclass(frozen=True)
class ModelInputs:
    """What a restored model needs from the bars it is given."""

    symbols: list[str]
    bars_needed: int
    explain: str  # how ``bars_needed`` adds up, for the refusal
    preprocessors: dict[str, Path] = field(default_factory=dict)  # id -> saved pipeline directory
    frequency: BarFrequency | None = None  # of the training data, when recorded


class _LiveInference(Inference):
    """:class:`Inference` over in-memory bars: the ``live`` split is ``start``..the last bar."""

    def __init__(
        self,
        registry: ModelRegistry,
        params: Params,
        work_dir: Path,
        market: pd.DataFrame,
        start: pd.Timestamp,
        pipelines: dict[Path, PreprocessingPipeline],
    ) -> None:
        super().__init__(registry, params, work_dir / "market.parquet", work_dir)
        self.bars, self.start, self.pipelines = market, start, pipelines
        times = market[TIMESTAMP].to_numpy()
        self.frequency = infer_frequency(times, params.splits.train, params.data.periods_per_year)
        self._features: dict[str, tuple[pd.DataFrame, list[str]]] = {}
        self._embeddings: dict[str, pd.DataFrame] = {}

    def data(self, cnn_lstm_dir: Path, split: str, with_embeddings: bool = True) -> SplitData:
        key = str(cnn_lstm_dir)
        if key not in self._features:
            pipeline = self.pipelines.get(load_preprocessor_dir(cnn_lstm_dir)) or load_preprocessor(
                cnn_lstm_dir, self.params
            )
            frame = pipeline.transform(self.bars)
            frame = frame.sort_values([SYMBOL, TIMESTAMP], kind="stable").reset_index(drop=True)
            frame.insert(2, SPLIT, np.where(frame[TIMESTAMP] >= self.start, LIVE, HISTORY))
            frame[TARGET_RETURN] = np.nan  # the future is unknown: no labels
            frame[TARGET_DIRECTION] = -1
            self._features[key] = (frame, pipeline.feature_names)
        frame, names = self._features[key]
        embeddings = None
        if with_embeddings:
            if key not in self._embeddings:
                self._embeddings[key] = compute_embeddings(cnn_lstm_dir, frame)
            embeddings = self._embeddings[key]
        return SplitData(frame, names, embeddings, self.bars, split, self.frequency)


def load_preprocessor_dir(model_dir: Path) -> Path:
    """The directory of the pipeline saved with ``model_dir`` (``preprocessor/<id>/``)."""
    root = model_dir / PREPROCESSOR_DIR
    saved = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not saved:
        raise DataSourceError(f"{model_dir}: no saved preprocessor under {PREPROCESSOR_DIR}/; re-register the model")
    return saved[0]


def load_preprocessor(model_dir: Path, params: Params) -> PreprocessingPipeline:
    """The pipeline saved with ``model_dir`` (checksums verified, steps from the allow-list only)."""
    saved = load_preprocessor_dir(model_dir)
    return PreprocessorManager(saved.parent, step_modules=params.preprocessing.step_modules).load_pipeline(saved.name)


class Predictor:
    """A registered model, restored and verified once, that predicts on any bars.

    Args:
        model_id: an id, prefix, ``type@latest`` or ``type@best``.
        registry: default ``ModelRegistry("models")`` of the current directory.
        params: default ``./params.yaml`` (else the built-in defaults): the CNN-LSTM threshold,
            the preprocessing step allow-list and the validation settings.

    Raises:
        ModelNotFoundError: an unknown id. IntegrityError: a file does not match its checksum.
    """

    def __init__(self, model_id: str, registry: ModelRegistry | None = None, params: Params | None = None) -> None:
        self.params = params or load_params_or_defaults(None)
        self.registry = registry or ModelRegistry("models", grading=self.params.grading)
        self.entry: ModelMetadata = self.registry.get_model(self.registry.resolve_id(model_id))
        self._tmp = tempfile.TemporaryDirectory(prefix="trade-agent-predict-")
        self.work_dir = Path(self._tmp.name)
        self._restorer = Inference(self.registry, self.params, self.work_dir / "market.parquet", self.work_dir)
        try:
            self.inputs = self._inputs(self.entry)  # restores (and so verifies) the whole lineage now
            # Loaded (checksums verified) once, reused by every prediction.
            self.pipelines = {
                d: load_preprocessor(d.parent.parent, self.params) for d in self.inputs.preprocessors.values()
            }
        except BaseException:
            self._tmp.cleanup()
            raise
        self._lock = threading.Lock()  # one prediction at a time: torch state and the work dir are shared

    @property
    def model_id(self) -> str:
        return self.entry.model_id

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- what the model needs ------------------------------------------------------

    def _inputs(self, entry: ModelMetadata) -> ModelInputs:
        directory = self._restorer.restore(entry.model_id)
        kind = entry.model_type
        if kind == "ensemble":
            members = [
                self._inputs(self.registry.get_model(str(m["model_id"]))) for m in EnsembleSpec.load(directory).members
            ]
            deepest = max(members, key=lambda m: m.bars_needed)
            symbols = members[0].symbols
            for member in members[1:]:
                if member.symbols != symbols:
                    raise DataSourceError(f"{entry.model_id}: its members trade different symbols; re-train it")
            preprocessors = {k: v for m in members for k, v in m.preprocessors.items()}
            return ModelInputs(symbols, deepest.bars_needed, deepest.explain, preprocessors, deepest.frequency)
        if kind == "cnn_lstm":
            return self._encoder_inputs(directory, extra_window=0)
        if kind in ALGOS:
            if not entry.dependencies:
                raise DataSourceError(f"{entry.model_id}: the registry records no CNN-LSTM it was trained on")
            window = _observation_window(directory, self._common_window(entry))
            return self._encoder_inputs(self._restorer.restore(entry.dependencies[0]), extra_window=window)
        if kind == "hybrid":
            spec = read_json(directory / "policy.json")
            try:
                sequence = int(spec["features_extractor"]["kwargs"]["spec"]["sequence_length"])
            except (KeyError, TypeError, ValueError):
                raise DataSourceError(f"{directory}/policy.json: no encoder sequence_length; re-train it") from None
            return self._preprocessor_inputs(directory, sequence, f"the hybrid's encoder sequence {sequence}")
        raise InputError(f"{entry.model_id}: cannot predict with a '{kind}' model")

    def _common_window(self, entry: ModelMetadata) -> int:
        return self._restorer._common(entry.training_config).window

    def _encoder_inputs(self, cnn_lstm_dir: Path, extra_window: int) -> ModelInputs:
        """A CNN-LSTM's needs (``extra_window``: the bars of embeddings an agent on it observes)."""
        config = read_json(cnn_lstm_dir / "config.json")
        try:
            sequence = int(config["spec"]["sequence_length"])
        except (KeyError, TypeError, ValueError):
            raise DataSourceError(f"{cnn_lstm_dir}/config.json: no spec.sequence_length; re-train it") from None
        span, text = sequence, f"the CNN-LSTM's sequence {sequence}"
        if extra_window > 1:
            span, text = span + extra_window - 1, f"{text} + the agent's observation window {extra_window} - 1"
        metadata = cnn_lstm_dir / "metadata.json"
        recorded = read_json(metadata).get("data", {}).get("frequency") if metadata.is_file() else None
        frequency = BarFrequency.from_json(recorded, str(metadata)) if recorded else None
        return self._preprocessor_inputs(cnn_lstm_dir, span, text, frequency)

    def _preprocessor_inputs(
        self, model_dir: Path, span: int, span_text: str, frequency: BarFrequency | None = None
    ) -> ModelInputs:
        """Symbols and bars needed from the saved preprocessor's record of its training data."""
        pipeline_dir = load_preprocessor_dir(model_dir)
        info = read_json(pipeline_dir / "pipeline.json").get("training_data_info", {})
        features = from_mapping(FeaturesConfig, info.get("features"), f"{pipeline_dir}/pipeline.json features")
        symbols = info.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise DataSourceError(f"{pipeline_dir}/pipeline.json: no list of training symbols; re-train the model")
        warmup = warmup_bars(features)
        # The indicators' warm-up, the model's input span, and one bar the track trades before
        # the bar it predicts on (every decision is filled on the bar after it).
        explain = f"indicator warm-up {warmup} + {span_text} + 1 traded bar before the predicted one"
        return ModelInputs(sorted(symbols), warmup + span + 1, explain, {pipeline_dir.name: pipeline_dir}, frequency)

    # -- predictions ---------------------------------------------------------------

    def load_bars(self, data: str) -> pd.DataFrame:
        """A data file (CSV/Parquet, folder, glob, ``sample``) validated like ``prepare``."""
        return bars_from_file(data, self.params)[0]

    def predict(
        self,
        bars: pd.DataFrame | list[dict[str, Any]],
        as_of: str | pd.Timestamp | None = None,
        holdings: Holdings | None = None,
        start: str | pd.Timestamp | None = None,
        source: str = "bars",
    ) -> Prediction:
        """The model's targets for the bar after ``as_of`` (default: the last bar).

        ``bars``: long-format rows ``timestamp, symbol, open, high, low, close, volume`` (a
        frame already validated by :func:`~trade_agent.inference.bars.bars_from_file`, or
        records, validated here). ``start``: the bar the model's track starts flat at.

        Raises:
            InputError subclasses naming the problem and the fix (see the module docstring).
        """
        market = (
            bars
            if isinstance(bars, pd.DataFrame) and _validated(bars)
            else bars_from_records(bars, self.params, source)
        )
        market, decision_bar = self.check_bars(market, as_of, source)
        track_start = self.track_start(market, start, source)
        with self._lock:
            apply_thread_plan(self.params.base.threads, "policy")
            positions = self.positions(market, track_start)
        weights = positions.weights[-1]
        common = positions.common
        prediction = Prediction(
            model_id=self.model_id,
            model_type=self.entry.model_type,
            as_of=str(decision_bar),
            start=str(track_start),
            bars=int(market[TIMESTAMP].nunique()),
            symbols=positions.symbols,
            weights={s: float(w) for s, w in zip(positions.symbols, weights, strict=True)},
            gross_exposure=float(np.abs(weights).sum()),
            net_exposure=float(weights.sum()),
            preprocessor_ids=sorted(self.inputs.preprocessors),
            bar_interval=infer_frequency(market[TIMESTAMP].to_numpy(), 1.0).bar_interval,
            cost_bps=common.cost_bps,
            slippage_bps=common.slippage_bps,
        )
        if holdings is None:
            return prediction
        prices = dict(zip(positions.symbols, positions.close[-1], strict=True))
        orders, value, cost = orders_for(holdings, prediction.weights, prices, common.cost_bps + common.slippage_bps)
        return Prediction(**{**asdict(prediction), "orders": orders, "portfolio_value": value, "estimated_cost": cost})

    def positions(self, market: pd.DataFrame, start: pd.Timestamp) -> Positions:
        """The model's targets at every bar from ``start`` to the last bar of ``market``, the last
        one included: the same replay :meth:`predict` reports the end of (paper trading uses all)."""
        live = _LiveInference(self.registry, self.params, self.work_dir, market, start, self.pipelines)
        live.restore = self._restorer.restore  # type: ignore[method-assign]  # the verified copies
        return live.positions(self.model_id, LIVE, decide_last=True)

    def check_bars(
        self, market: pd.DataFrame, as_of: str | pd.Timestamp | None, source: str
    ) -> tuple[pd.DataFrame, pd.Timestamp]:
        """The bars up to ``as_of`` and the bar decided on, after every check of the module docstring.

        Raises:
            InputError / SchemaError / InsufficientDataError: one line naming the fix.
        """
        symbols = sorted(market[SYMBOL].unique().tolist())
        trained = self.inputs.symbols
        unknown = [s for s in symbols if s not in trained]
        if unknown:
            raise InputError(
                f"{source}: symbol {unknown[0]!r} is not one {self.model_id} was trained on ({', '.join(trained)}); "
                "remove its bars or use a model trained on it"
            )
        absent = [s for s in trained if s not in symbols]
        if absent:
            raise InputError(
                f"{source}: no bars of {absent[0]!r}; {self.model_id} trades {', '.join(trained)} together and "
                "needs bars of each"
            )
        times = pd.DatetimeIndex(np.sort(market[TIMESTAMP].unique()))
        decision_bar = times[-1]
        if as_of is not None:
            wanted = _timestamp(as_of, "--as-of")
            if wanted < times[0] or wanted > times[-1]:
                raise InputError(
                    f"--as-of {as_of}: outside the data ({times[0]} .. {times[-1]} in {source}); "
                    "give a timestamp between them"
                )
            decision_bar = times[times <= wanted][-1]
            market = market[market[TIMESTAMP] <= decision_bar].reset_index(drop=True)
            times = times[times <= decision_bar]
        self._check_schema(market, times, source)
        need = self.inputs.bars_needed
        if len(times) < need:
            raise InsufficientDataError(
                f"{source}: {len(times)} bars up to {decision_bar}; {self.model_id} needs at least {need} per symbol "
                f"({self.inputs.explain}); supply earlier bars"
            )
        return market, decision_bar

    def _check_schema(self, market: pd.DataFrame, times: pd.DatetimeIndex, source: str) -> None:
        for preprocessor_id, directory in self.inputs.preprocessors.items():
            fitted = read_json(directory / "pipeline.json").get("spec", {}).get("input_columns", [])
            missing = [c for c in fitted if c not in market.columns]
            if missing:
                raise SchemaError(
                    f"{source}: no column {missing[0]!r}, which preprocessor {preprocessor_id} of {self.model_id} "
                    f"was fitted with (it expects {', '.join(map(str, fitted))}); add it"
                )
        trained = self.inputs.frequency
        if trained is None or len(times) < 3:
            return
        given = infer_frequency(times.to_numpy(), 1.0)
        if given.bar_interval != trained.bar_interval:
            raise SchemaError(
                f"{source}: bars are {given.bar_interval} apart but {self.model_id} was trained on "
                f"{trained.bar_interval} bars (its preprocessor's indicator periods are in bars); "
                f"resample to {trained.bar_interval} or use a model trained on {given.bar_interval} bars"
            )

    def track_start(self, market: pd.DataFrame, start: str | pd.Timestamp | None, source: str) -> pd.Timestamp:
        """The bar the model's track starts flat at: ``start`` (checked), else the first it can decide on."""
        times = pd.DatetimeIndex(np.sort(market[TIMESTAMP].unique()))
        earliest = times[self.inputs.bars_needed - 2]  # the first bar whose inputs are all there
        if start is None:
            return earliest
        wanted = _timestamp(start, "--start")
        if wanted < earliest or wanted >= times[-1]:
            raise InputError(
                f"--start {start}: the model's track can start from {earliest} (its warm-up and windows) up to "
                f"the bar before {times[-1]} in {source}; give a start in that range"
            )
        return times[times >= wanted][0]


def _observation_window(agent_dir: Path, default: int) -> int:
    """Bars of inputs per observation, as ``policy_weights`` builds the agent's panel."""
    observation = read_json(agent_dir / "policy.json").get("observation")
    if isinstance(observation, dict) and isinstance(observation.get("window"), int):
        return int(observation["window"])
    return default


def _validated(bars: object) -> bool:
    """A frame from :func:`bars_from_file` (canonical columns, parsed timestamps)."""
    return (
        isinstance(bars, pd.DataFrame)
        and list(bars.columns[:2]) == [TIMESTAMP, SYMBOL]
        and pd.api.types.is_datetime64_any_dtype(bars[TIMESTAMP])
        and bars.attrs.get("validated") is True
    )


def _timestamp(value: str | pd.Timestamp, option: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise InputError(f"{option} {value}: not a timestamp; use e.g. 2013-02-01 or 2013-02-01T15:30") from None
    if pd.isna(stamp):
        raise InputError(f"{option} {value}: not a timestamp; use e.g. 2013-02-01 or 2013-02-01T15:30")
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def predict(
    model_id: str,
    bars: pd.DataFrame | list[dict[str, Any]] | str,
    as_of: str | pd.Timestamp | None = None,
    holdings: Holdings | None = None,
    start: str | pd.Timestamp | None = None,
    registry: ModelRegistry | None = None,
    params: Params | None = None,
) -> Prediction:
    """One prediction (see :class:`Predictor`); ``bars`` may also be a data file path."""
    with Predictor(model_id, registry, params) as predictor:
        source = "bars"
        if isinstance(bars, str):
            source, bars = bars, predictor.load_bars(bars)
        return predictor.predict(bars, as_of, holdings, start, source)
