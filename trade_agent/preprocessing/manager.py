"""Versioned storage of fitted preprocessing pipelines.

Layout: ``<preprocessor_root>/<id>/pipeline.json`` (steps, columns, version, checksums,
training-data info) and ``state.npz`` (learned arrays). The id is
``preprocessor_<model_type>_v<MAJOR.MINOR.PATCH>``. Saving content that is already stored
returns the existing id; otherwise the version bumps MINOR when the interface (schema
hash) equals the latest of that model type and MAJOR when it changed. Nothing is pickled.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trade_agent.config import FeaturesConfig, SentimentConfig, load_params_or_defaults
from trade_agent.errors import ConfigError, IntegrityError, PreprocessorError, PreprocessorNotFoundError
from trade_agent.integrity import IntegrityReport
from trade_agent.io import new_temp_dir, read_json, read_npz, sha256_file, write_json, write_npz
from trade_agent.preprocessing import steps
from trade_agent.preprocessing.members import EnsemblePreprocessing, check_compatibility
from trade_agent.preprocessing.pipeline import PreprocessingPipeline, check_step_allowed

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
log = logging.getLogger(__name__)
MODEL_TYPES: tuple[str, ...] = ("cnn_lstm", "ppo", "sac", "td3", "hybrid", "ensemble")
RL_TYPES: tuple[str, ...] = ("ppo", "sac", "td3")
PIPELINE_FILE = "pipeline.json"
STATE_FILE = "state.npz"


def _parse_version(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(x) for x in version.split("."))
    return major, minor, patch


class PreprocessorManager:
    """Create, save, load and verify preprocessing pipelines.

    Args:
        preprocessor_root: directory holding one sub-directory per saved pipeline.
        step_modules: modules besides ``trade_agent.preprocessing.steps`` whose steps a
            saved pipeline may name (default: ``preprocessing.step_modules`` of ./params.yaml
            if present, read when first needed). A pipeline naming any other module is
            refused before anything is imported.
    """

    def __init__(
        self, preprocessor_root: str | Path = "models/preprocessors", step_modules: Sequence[str] | None = None
    ) -> None:
        self.root = Path(preprocessor_root)
        self._step_modules = None if step_modules is None else tuple(step_modules)

    @property
    def step_modules(self) -> tuple[str, ...]:
        """The trusted step modules besides the standard one (see the class docstring)."""
        if self._step_modules is None:
            self._step_modules = tuple(load_params_or_defaults(None).preprocessing.step_modules)
        return self._step_modules

    # -- building -------------------------------------------------------------------

    def create_pipeline(self, model_type: str, version: str | None = None) -> PreprocessingPipeline:
        """An empty pipeline for ``model_type`` to add custom steps to."""
        self._check_model_type(model_type)
        return PreprocessingPipeline(model_type, version=version)

    def create_standard_pipeline(
        self,
        model_type: str,
        scaling_method: str = "robust",
        include_technical_indicators: bool = True,
        include_sentiment: bool = False,
        sequence_length: int | None = None,
        *,
        features: FeaturesConfig | None = None,
        sentiment: SentimentConfig | None = None,
        max_gap: int = 3,
        clip: float = 5.0,
    ) -> PreprocessingPipeline:
        """The seed design's template for ``model_type``.

        cnn_lstm: validate, fill missing, indicators, sentiment, robust scaling, final
        validation, and sequence creation (``transform_to_sequences`` with
        ``sequence_length``); ppo/sac/td3: the same plus reward-shaping features and state
        normalisation; hybrid: dual preprocessing - the cnn_lstm view for the encoder plus
        a state-normalised ``policy__`` view with reward-shaping features - and a unified
        validation of both; ensemble: the RL template for ensemble-level inputs, while the
        members' own pipelines are coordinated by :meth:`create_ensemble_preprocessing`.

        Sentiment (``include_sentiment``) joins the scores of ``sentiment`` (a
        :class:`SentimentConfig` with ``source`` 'scores' or 'headlines' and ``path``).
        Without a configured source the step is :func:`steps.skip_sentiment`, a no-op that
        adds no columns, and a warning says which settings would give real sentiment.

        Raises:
            ConfigError: unknown model type/scaling method, or ``sentiment.enabled`` is true
                but no sentiment source is configured.
        """
        self._check_model_type(model_type)
        if scaling_method not in ("robust", "standard", "minmax"):
            raise ConfigError(f"scaling_method '{scaling_method}' is unknown; use robust, standard or minmax")
        features = features or FeaturesConfig()
        features = FeaturesConfig(**{**asdict(features), "technical_indicators": include_technical_indicators})
        if sequence_length is None and model_type in ("cnn_lstm", "hybrid"):
            sequence_length = features.sequence_length
        pipeline = PreprocessingPipeline(model_type, sequence_length=sequence_length)
        pipeline.add_step("validate", steps.validate_input)
        pipeline.add_step("fill_missing", steps.fill_missing, max_gap=max_gap)
        pipeline.add_step("indicators", steps.add_indicators, **asdict(features))
        if include_sentiment:
            sentiment = sentiment or SentimentConfig()
            if sentiment.source != "none" and sentiment.path:
                pipeline.add_step("sentiment", steps.add_sentiment, **{**asdict(sentiment), "enabled": True})
            elif sentiment.enabled:  # asked for explicitly (params.yaml): never silently without
                raise ConfigError(
                    "sentiment.enabled is true but no sentiment file is configured; set sentiment.source "
                    "('scores' or 'headlines') and sentiment.path, or disable it"
                )
            else:
                log.warning(
                    "include_sentiment: no sentiment source is configured, so the sentiment step adds nothing; "
                    "for real sentiment features set sentiment.source ('scores' or 'headlines') and sentiment.path "
                    "(API: sentiment=SentimentConfig(source=..., path=...))"
                )
                pipeline.add_step("sentiment", steps.skip_sentiment)
        rl_like = model_type in (*RL_TYPES, "ensemble")
        if rl_like:
            pipeline.add_step("reward_shaping", steps.add_reward_shaping_features)
        pipeline.add_step("scale", steps.ScaleFeatures, method=scaling_method, clip=clip)
        if rl_like:
            pipeline.add_step("state_normalization", steps.NormalizeState, clip=clip * 2)
        if model_type == "hybrid":
            pipeline.add_step("policy_view", steps.PolicyView, clip=clip * 2)
        pipeline.add_step("final_validation", steps.finalize_features)
        if model_type == "hybrid":
            pipeline.add_step("unified_validation", steps.check_views)
        return pipeline

    def create_ensemble_preprocessing(self, preprocessor_ids: list[str]) -> EnsemblePreprocessing:
        """Load the members' saved pipelines and coordinate them for an ensemble.

        Raises:
            PreprocessorNotFoundError / IntegrityError: a member pipeline is missing or altered.
            PreprocessorError: members need different raw inputs.
        """
        return EnsemblePreprocessing({pid: self.load_pipeline(pid) for pid in preprocessor_ids})

    check_compatibility = staticmethod(check_compatibility)

    # -- storage --------------------------------------------------------------------

    def save_pipeline(
        self, pipeline: PreprocessingPipeline, model_type: str, training_data_info: dict[str, Any] | None = None
    ) -> Path:
        """Save a pipeline; returns its directory (the id is the directory name).

        A fitted pipeline is saved with its learned arrays and columns, ready for
        inference. An unfitted one is saved as a template (``"fitted": false``, no learned
        state): :meth:`load_pipeline` gives it back unfitted, to ``fit_transform`` first.

        Raises:
            PreprocessorError: a step cannot be saved (lambda, closure, ``__main__``
                function) or its module is not in the allow-list (``step_modules``).
        """
        self._check_model_type(model_type)
        if pipeline.model_type != model_type:
            raise PreprocessorError(
                f"pipeline was built for '{pipeline.model_type}' but is saved as '{model_type}'; pass the same type"
            )
        spec = pipeline.to_spec()  # refuses lambdas/closures before anything is written
        for step in spec["steps"]:  # what could not be loaded back is not saved
            check_step_allowed(step["ref"], self.step_modules, step["name"])
        content_hash, schema_hash = pipeline.content_hash(), pipeline.schema_hash()
        for info in self.list_preprocessors(model_type):
            if info["content_hash"] == content_hash:
                pipeline.version = info["id"]
                return self.root / info["id"]
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            version = self._next_version(model_type, schema_hash)
            preprocessor_id = f"preprocessor_{model_type}_v{version}"
            target = self.root / preprocessor_id
            tmp = new_temp_dir(self.root, f".{preprocessor_id}.")
            try:
                write_npz(tmp / STATE_FILE, pipeline.state_arrays())
                write_json(
                    tmp / PIPELINE_FILE,
                    {
                        "id": preprocessor_id,
                        "version": version,
                        "model_type": model_type,
                        "content_hash": content_hash,
                        "schema_hash": schema_hash,
                        "state_sha256": sha256_file(tmp / STATE_FILE),
                        "training_data_info": training_data_info or {},
                        "spec": spec,
                    },
                )
                # rename() onto an existing non-empty directory fails: a concurrent saver
                # that took this version makes us retry with the next one.
                os.rename(tmp, target)
            except OSError:
                if not target.exists():
                    raise
                continue
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            pipeline.version = preprocessor_id
            return target
        raise PreprocessorError(f"could not allocate a version under {self.root}; too many concurrent savers")

    def load_pipeline(self, preprocessor_id: str) -> PreprocessingPipeline:
        """Load a saved pipeline after verifying its checksums.

        Raises:
            PreprocessorNotFoundError: unknown id. IntegrityError: files were altered.
            PreprocessorError: a step names a module outside the allow-list (nothing is imported).
        """
        spec = self.get_preprocessor_info(preprocessor_id).get("spec")
        for step in spec.get("steps", []) if isinstance(spec, dict) else []:
            if isinstance(step, dict):
                check_step_allowed(str(step.get("ref")), self.step_modules, str(step.get("name")))
        report = self.validate_preprocessor_integrity(preprocessor_id)
        if not report:
            raise IntegrityError(f"preprocessor {preprocessor_id}: {report.problems[0]}; re-create it")
        directory = self.root / preprocessor_id
        meta = read_json(directory / PIPELINE_FILE)
        return PreprocessingPipeline.from_spec(
            meta["spec"], read_npz(directory / STATE_FILE), version=preprocessor_id, step_modules=self.step_modules
        )

    def list_preprocessors(self, model_type: str | None = None) -> list[dict[str, Any]]:
        """Summaries of saved pipelines, oldest version first."""
        if not self.root.is_dir():
            return []
        found = []
        for meta_file in sorted(self.root.glob(f"*/{PIPELINE_FILE}")):
            try:
                meta = read_json(meta_file)
            except (OSError, ValueError) as exc:  # one bad entry must not hide the others
                log.warning(
                    "%s is unreadable (%s); skipped - check it with validate_preprocessor_integrity", meta_file, exc
                )
                continue
            if model_type is None or meta["model_type"] == model_type:
                found.append(
                    {k: meta[k] for k in ("id", "version", "model_type", "content_hash", "schema_hash")}
                    | {
                        "fitted": bool(meta["spec"]["fitted"]),
                        "n_features": len(meta["spec"]["output_columns"]) - 2 if meta["spec"]["fitted"] else None,
                        "sequence_length": meta["spec"]["sequence_length"],
                    }
                )
        return sorted(found, key=lambda m: (m["model_type"], _parse_version(m["version"])))

    def get_preprocessor_info(self, preprocessor_id: str) -> dict[str, Any]:
        """Full metadata of one saved pipeline (steps, columns, checksums, data info)."""
        if not _ID_PATTERN.fullmatch(preprocessor_id):
            raise PreprocessorNotFoundError(
                f"'{preprocessor_id}' is not a preprocessor id (expected e.g. preprocessor_cnn_lstm_v1.0.0)"
            )
        meta_file = self.root / preprocessor_id / PIPELINE_FILE
        if not meta_file.is_file():
            known = ", ".join(m["id"] for m in self.list_preprocessors()) or "none"
            raise PreprocessorNotFoundError(
                f"preprocessor '{preprocessor_id}' not found in {self.root}; known: {known}"
            )
        try:
            info: dict[str, Any] = read_json(meta_file)
        except ValueError as exc:
            raise IntegrityError(
                f"{meta_file} is not valid JSON ({exc}); restore it or re-create the preprocessor"
            ) from None
        return info

    def validate_preprocessor_integrity(self, preprocessor_id: str) -> IntegrityReport:
        """Recompute checksums, the content hash and the schema hash of a saved pipeline."""
        report = IntegrityReport(preprocessor_id)
        try:
            meta = self.get_preprocessor_info(preprocessor_id)
        except IntegrityError as exc:
            report.problems.append(str(exc))
            return report
        directory = self.root / preprocessor_id
        state = directory / STATE_FILE
        if not state.is_file():
            report.problems.append(f"{state} is missing")
            return report
        if sha256_file(state) != meta["state_sha256"]:
            report.problems.append(f"{state} checksum differs from pipeline.json")
            return report
        try:
            pipeline = PreprocessingPipeline.from_spec(meta["spec"], read_npz(state), step_modules=self.step_modules)
        except (PreprocessorError, KeyError, TypeError) as exc:
            report.problems.append(f"cannot rebuild pipeline: {exc}")
            return report
        if pipeline.content_hash() != meta["content_hash"]:
            report.problems.append("content hash differs from pipeline.json (steps or arrays changed)")
        if pipeline.schema_hash() != meta["schema_hash"]:
            report.problems.append("schema hash differs from pipeline.json (input/output columns changed)")
        return report

    # -- helpers --------------------------------------------------------------------

    def _next_version(self, model_type: str, schema_hash: str) -> str:
        existing = self.list_preprocessors(model_type)
        if not existing:
            return "1.0.0"
        major = _parse_version(existing[-1]["version"])[0]
        latest_schema = existing[-1]["schema_hash"]
        # Highest minor within the current major line, so versions are never reused.
        minor = max(_parse_version(m["version"])[1] for m in existing if _parse_version(m["version"])[0] == major)
        if latest_schema == schema_hash:
            return f"{major}.{minor + 1}.0"
        return f"{max(_parse_version(m['version'])[0] for m in existing) + 1}.0.0"

    @staticmethod
    def _check_model_type(model_type: str) -> None:
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"model type '{model_type}' is unknown; use one of {', '.join(MODEL_TYPES)}")
