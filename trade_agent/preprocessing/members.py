"""Ensemble preprocessing: run each member's own fitted pipeline once, on the same bars.

Members keep the preprocessing they were trained with (reproducible inference); the
ensemble only checks they can read the same raw data, runs each distinct pipeline once
(members sharing a pipeline share its output) and aligns the outputs on the bars every
member can score.
"""

from __future__ import annotations

import pandas as pd

from trade_agent.data.schema import SYMBOL, TIMESTAMP
from trade_agent.errors import PreprocessorError
from trade_agent.preprocessing.pipeline import PreprocessingPipeline


def check_compatibility(pipelines: list[PreprocessingPipeline]) -> None:
    """Cross-model check: every member reads the same raw input columns.

    Raises:
        PreprocessorError: a member needs columns another does not provide.
    """
    if not pipelines:
        return
    reference = pipelines[0]
    for pipeline in pipelines[1:]:
        if set(pipeline.input_columns) != set(reference.input_columns):
            raise PreprocessorError(
                f"ensemble members need different inputs: {reference.version} reads "
                f"{sorted(reference.input_columns)}, {pipeline.version} reads {sorted(pipeline.input_columns)}; "
                "use members trained on one kind of dataset"
            )


class EnsemblePreprocessing:
    """Coordinated preprocessing of an ensemble's members.

    Args:
        members: member id (or preprocessor id) -> that member's fitted pipeline.

    Raises:
        PreprocessorError: no members, an unfitted member, or incompatible inputs.
    """

    def __init__(self, members: dict[str, PreprocessingPipeline]) -> None:
        if not members:
            raise PreprocessorError("an ensemble needs at least one member pipeline")
        unfitted = [name for name, p in members.items() if not p.fitted]
        if unfitted:
            raise PreprocessorError(f"member pipeline(s) {', '.join(unfitted)} are not fitted")
        check_compatibility(list(members.values()))
        self.members = dict(members)

    @property
    def input_columns(self) -> list[str]:
        return next(iter(self.members.values())).input_columns

    def transform(self, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Each member's features for the bars all members can score, in the same row order."""
        by_hash: dict[str, pd.DataFrame] = {}
        outputs: dict[str, pd.DataFrame] = {}
        for name, pipeline in self.members.items():
            key = pipeline.content_hash()
            if key not in by_hash:
                by_hash[key] = pipeline.transform(df)
            outputs[name] = by_hash[key]
        common = None
        for frame in outputs.values():
            keys = frame[[TIMESTAMP, SYMBOL]]
            common = keys if common is None else common.merge(keys, on=[TIMESTAMP, SYMBOL])
        assert common is not None
        common = common.sort_values([SYMBOL, TIMESTAMP], kind="stable").reset_index(drop=True)
        return {name: common.merge(frame, on=[TIMESTAMP, SYMBOL], how="left") for name, frame in outputs.items()}
