"""A preprocessing pipeline that can be saved without pickle and replayed exactly.

A step is either a plain function ``func(df, **kwargs) -> df`` or a
:class:`FittedStep` subclass whose ``fit`` learns arrays (e.g. scaler medians) from the
training rows and whose ``apply`` uses them. Steps are stored by reference
(``module:qualname``) with JSON kwargs; learned arrays go to an ``.npz``. That is why a
lambda or a closure cannot be saved: it has no importable name.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from trade_agent.data.schema import MARKET_COLUMNS, SYMBOL, TIMESTAMP
from trade_agent.errors import PreprocessorError, SchemaError
from trade_agent.io import canonical_json, sha256_text

FORMAT_VERSION = 1


class FittedStep:
    """Base class of steps with state learned from the training split.

    Subclasses define two ``classmethod``s and are never instantiated (the saved
    reference is the class):

    * ``fit(df, **kwargs) -> dict[str, np.ndarray]``: learn arrays from training rows;
    * ``apply(df, state, **kwargs) -> DataFrame``: transform with the learned arrays.
    """

    fit: ClassVar[Callable[..., dict[str, np.ndarray]]]
    apply: ClassVar[Callable[..., pd.DataFrame]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in ("fit", "apply") if not callable(getattr(cls, name, None))]
        if missing:
            raise TypeError(f"{cls.__qualname__} must define classmethod(s) {', '.join(missing)}")


StepFunc = Callable[..., pd.DataFrame] | type[FittedStep]


def step_reference(func: StepFunc) -> str:
    """``module:qualname`` of an importable step."""
    return f"{func.__module__}:{func.__qualname__}"


# Steps are code: a saved pipeline names them, and a pipeline read back from a store or a
# remote is untrusted. So names resolve only inside these modules (plus the ones a user
# trusts through ``preprocessing.step_modules``), and only to functions or FittedStep
# classes defined there - never to something a module merely imports (``os.system``).
STANDARD_STEP_MODULE = "trade_agent.preprocessing.steps"
STEP_MODULES_SETTING = "preprocessing.step_modules"
_STEP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _label(reference: str, step: str | None) -> str:
    return f"preprocessing step '{step}' ({reference})" if step else f"preprocessing step '{reference}'"


def allowed_step_modules(step_modules: Sequence[str] = ()) -> tuple[str, ...]:
    return (STANDARD_STEP_MODULE, *step_modules)


def check_step_allowed(reference: str, step_modules: Sequence[str] = (), step: str | None = None) -> tuple[str, str]:
    """``(module, name)`` of an allowed reference; checked before anything is imported.

    Raises:
        PreprocessorError: the module is not allowed, or the name is not a plain top-level name.
    """
    label = _label(reference, step)
    module_name, _, name = reference.partition(":")
    if not module_name or not name:
        raise PreprocessorError(f"{label} is not of the form module:function")
    if module_name not in allowed_step_modules(step_modules):
        raise PreprocessorError(
            f"{label}: module '{module_name}' is not allowed to provide steps; if you trust it, add it to "
            f"{STEP_MODULES_SETTING} in params.yaml (API: PreprocessorManager(step_modules=['{module_name}']))"
        )
    if not _STEP_NAME.fullmatch(name):
        raise PreprocessorError(
            f"{label}: '{name}' is not a top-level function or FittedStep class name of {module_name}"
        )
    return module_name, name


def resolve_step(reference: str, step_modules: Sequence[str] = (), step: str | None = None) -> StepFunc:
    """The step named by ``module:name``, from an allowed module only (see above).

    Raises:
        PreprocessorError: not allowed, not importable, or not a step defined in that module.
    """
    module_name, name = check_step_allowed(reference, step_modules, step)
    label = _label(reference, step)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PreprocessorError(f"{label} cannot be imported ({exc}); install the package that defines it") from None
    obj = vars(module).get(name)
    is_step = inspect.isfunction(obj) or (inspect.isclass(obj) and issubclass(obj, FittedStep))
    if obj is None or not is_step or getattr(obj, "__module__", None) != module_name:
        raise PreprocessorError(
            f"{label}: {module_name} defines no step function or FittedStep class '{name}'"
            " (names it only imports are not steps)"
        )
    step_func: StepFunc = obj
    return step_func


POLICY_PREFIX = "policy__"


def make_sequences(frame: pd.DataFrame, columns: list[str], length: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Sliding windows of ``length`` rows per symbol (frame sorted by symbol, time).

    Returns:
        ``(windows, keys)``: float32 windows ``(n, length, len(columns))`` and the
        ``timestamp, symbol`` of each window's last bar; windows never span two symbols.
    """
    values = frame[columns].to_numpy(np.float32)
    position = frame.groupby(SYMBOL, sort=False).cumcount().to_numpy()
    ends = np.flatnonzero(position >= length - 1)
    offsets = np.arange(-length + 1, 1)
    windows = values[ends[:, None] + offsets]  # per-symbol positions keep windows inside one symbol
    return windows, frame.iloc[ends][[TIMESTAMP, SYMBOL]].reset_index(drop=True)


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Model input columns: everything except the key and raw OHLCV."""
    return [c for c in df.columns if c not in MARKET_COLUMNS]


@dataclass
class PipelineStep:
    name: str
    func: StepFunc
    kwargs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, np.ndarray] | None = None

    @property
    def is_fitted_step(self) -> bool:
        return inspect.isclass(self.func) and issubclass(self.func, FittedStep)

    def run(self, df: pd.DataFrame, fit_rows: pd.DataFrame | None = None) -> pd.DataFrame:
        """Apply the step; a fitted step first learns its state from ``fit_rows`` if given."""
        func: Any = self.func
        if not self.is_fitted_step:
            result: pd.DataFrame = func(df, **self.kwargs)
            return result
        if fit_rows is not None:
            self.state = func.fit(fit_rows, **self.kwargs)
        applied: pd.DataFrame = func.apply(df, self.state or {}, **self.kwargs)
        return applied


class PreprocessingPipeline:
    """Ordered steps turning raw OHLCV into a model's feature frame.

    Args:
        model_type: the model family the pipeline serves (``cnn_lstm``, ``ppo``, ...).
        sequence_length: window length for sequence models (``None`` for flat inputs).
        version: set when saved/loaded by :class:`PreprocessorManager`.
    """

    KEY: ClassVar[tuple[str, str]] = (TIMESTAMP, SYMBOL)

    def __init__(self, model_type: str, sequence_length: int | None = None, version: str | None = None) -> None:
        self.model_type = model_type
        self.sequence_length = sequence_length
        self.version = version
        self.steps: list[PipelineStep] = []
        self.input_columns: list[str] = []
        self.output_columns: list[str] = []
        self.fitted = False

    def add_step(self, name: str, func: StepFunc, **kwargs: Any) -> PreprocessingPipeline:
        """Append a step; returns ``self`` so calls chain.

        Raises:
            PreprocessorError: the name is taken or ``func`` is not callable.
        """
        if any(s.name == name for s in self.steps):
            raise PreprocessorError(f"step name '{name}' is already used in this pipeline; pick another")
        if not callable(func):
            raise PreprocessorError(f"step '{name}': {func!r} is not a function or FittedStep class")
        self.steps.append(PipelineStep(name=name, func=func, kwargs=dict(kwargs)))
        self.fitted = False
        return self

    @property
    def feature_names(self) -> list[str]:
        """Output feature columns (known once fitted)."""
        return [c for c in self.output_columns if c not in self.KEY]

    def views(self) -> dict[str, list[str]]:
        """Feature columns per model input: hybrids have an ``encoder`` and a ``policy`` view.

        Policy-view columns carry the ``policy__`` prefix; every other model has one view.
        """
        policy = [c for c in self.feature_names if c.startswith(POLICY_PREFIX)]
        encoder = [c for c in self.feature_names if not c.startswith(POLICY_PREFIX)]
        return {"encoder": encoder, "policy": policy} if policy else {"features": encoder}

    def transform_to_sequences(self, df: pd.DataFrame, view: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Transform, then cut ``sequence_length`` windows (the LSTM's input).

        Returns:
            ``(windows, keys)``: windows ``(n, sequence_length, n_features)`` float32 and the
            ``timestamp, symbol`` of the bar each window ends at.

        Raises:
            PreprocessorError: the pipeline has no sequence length.
        """
        if not self.sequence_length:
            raise PreprocessorError(f"pipeline {self.version or self.model_type} has no sequence_length")
        frame = self.transform(df)
        columns = self.views()[view] if view else self.views().get("encoder", self.feature_names)
        return make_sequences(frame, columns, self.sequence_length)

    def fit_transform(self, df: pd.DataFrame, fit_until: pd.Timestamp | None = None) -> pd.DataFrame:
        """Run every step, fitting stateful ones on rows with ``timestamp <= fit_until``.

        Args:
            df: raw market frame.
            fit_until: last timestamp of the training split. ``None`` fits on all rows;
                pass the boundary whenever ``df`` also holds validation/test data.
        """
        self.input_columns = [str(c) for c in df.columns]
        out = df
        for step in self.steps:
            fit_rows = None
            if step.is_fitted_step:
                fit_rows = out if fit_until is None else out[out[TIMESTAMP] <= fit_until]
                if fit_rows.empty:
                    raise PreprocessorError(f"step '{step.name}': no rows at or before {fit_until} to fit on")
            out = step.run(out, fit_rows)
        self.output_columns = [str(c) for c in out.columns]
        self.fitted = True
        return out

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Apply the fitted pipeline to new data (same steps, learned state reused).

        Raises:
            PreprocessorError: the pipeline was never fitted.
            SchemaError: ``df`` lacks columns the pipeline was fitted with.
        """
        if not self.fitted:
            raise PreprocessorError("pipeline is not fitted; call fit_transform on training data first")
        missing = [c for c in self.input_columns if c not in df.columns]
        if missing:
            raise SchemaError(
                f"input is missing column(s) {', '.join(missing)} that preprocessor "
                f"{self.version or self.model_type} was fitted with; expected "
                f"{', '.join(self.input_columns)} (rename or add them)"
            )
        out = df
        for step in self.steps:
            out = step.run(out)
        missing_out = [c for c in self.output_columns if c not in out.columns]
        if missing_out:
            raise SchemaError(
                f"transform produced no column(s) {', '.join(missing_out)}; the input "
                "differs from the training data in a way the steps did not expect"
            )
        return out[self.output_columns]

    # -- serialisation --------------------------------------------------------------

    def to_spec(self) -> dict[str, Any]:
        """JSON-ready description of the steps (state arrays not included).

        Raises:
            PreprocessorError: a step is a lambda/closure/``__main__`` function or its
                kwargs are not JSON.
        """
        steps = []
        for step in self.steps:
            ref = step_reference(step.func) if hasattr(step.func, "__qualname__") else repr(step.func)
            if "<lambda>" in ref or "<locals>" in ref or getattr(step.func, "__module__", "") == "__main__":
                kind = "a function of the script being run (__main__)" if "<" not in ref else "a lambda or closure"
                raise PreprocessorError(
                    f"step '{step.name}' uses {ref}, which cannot be saved: {kind} has no importable name; "
                    f"to save it, define it at the top level of a module (e.g. my_steps.py, then "
                    f"`from my_steps import ...`) and add that module to {STEP_MODULES_SETTING} in params.yaml "
                    "(API: PreprocessorManager(step_modules=['my_steps']))"
                )
            try:
                # Our own in-memory object, so any module may be imported here; loading
                # applies the allow-list.
                module_name, _, name = ref.partition(":")
                importable = vars(importlib.import_module(module_name)).get(name) is step.func
            except ImportError:
                importable = False
            if not importable:
                raise PreprocessorError(
                    f"step '{step.name}' uses {ref}, which cannot be saved: only top-level functions and "
                    "FittedStep classes can be (not partials, bound methods or callable instances); "
                    "pass settings as step kwargs instead"
                )
            try:
                json.dumps(step.kwargs)
            except TypeError as exc:
                raise PreprocessorError(f"step '{step.name}': kwargs must be JSON values ({exc})") from None
            steps.append(
                {
                    "name": step.name,
                    "ref": ref,
                    "kwargs": step.kwargs,
                    "fitted": step.is_fitted_step,
                    "state_keys": sorted(step.state) if step.state else [],
                }
            )
        return {
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "sequence_length": self.sequence_length,
            "steps": steps,
            "input_columns": self.input_columns,
            "output_columns": self.output_columns,
            "fitted": self.fitted,
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        """All learned arrays, keyed ``<step>.<key>``."""
        return {f"{s.name}.{k}": v for s in self.steps if s.state for k, v in s.state.items()}

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        arrays: dict[str, np.ndarray],
        version: str | None = None,
        step_modules: Sequence[str] = (),
    ) -> PreprocessingPipeline:
        """Rebuild a saved pipeline; every step is checked against the allow-list first.

        Raises:
            PreprocessorError: a step is not allowed (names the step and the setting).
        """
        for entry in spec["steps"]:  # all of them before the first import
            check_step_allowed(entry["ref"], step_modules, entry["name"])
        pipeline = cls(spec["model_type"], spec.get("sequence_length"), version=version)
        for entry in spec["steps"]:
            pipeline.add_step(entry["name"], resolve_step(entry["ref"], step_modules, entry["name"]), **entry["kwargs"])
            if entry["fitted"]:
                pipeline.steps[-1].state = {k: arrays[f"{entry['name']}.{k}"] for k in entry["state_keys"]}
        pipeline.input_columns = list(spec["input_columns"])
        pipeline.output_columns = list(spec["output_columns"])
        pipeline.fitted = bool(spec["fitted"])
        return pipeline

    def schema_hash(self) -> str:
        """Hash of the interface: input columns, output columns, sequence length."""
        return sha256_text(
            canonical_json({"in": self.input_columns, "out": self.output_columns, "seq": self.sequence_length})
        )

    def content_hash(self) -> str:
        """Hash of everything that determines the output: steps, kwargs and learned arrays."""
        spec = self.to_spec()
        arrays = {
            k: f"{v.dtype}{v.shape}" + hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
            for k, v in self.state_arrays().items()
        }
        return sha256_text(canonical_json({"spec": spec, "arrays": arrays}))
