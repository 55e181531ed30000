"""A preprocessor saved before the package reorganisation still loads and transforms bit-identically.

The fixture was written by commit 56d7069 (the layout before ``cnn_lstm/``, ``market/``,
``hybrid/``, ``ensemble/``): its ``pipeline.json`` names steps as
``trade_agent.preprocessing.steps:<fn>``, and ``expected_features.parquet`` is what that
commit's ``run_features_stage`` produced from ``market.parquet`` with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from trade_agent.config import load_params
from trade_agent.features.build import run_features_stage
from trade_agent.preprocessing.pipeline import STANDARD_STEP_MODULE

FIXTURE = Path(__file__).parent / "fixtures" / "preprocessor_before_move"
SAVED = FIXTURE / "preprocessor_cnn_lstm_v1.0.0"


def test_saved_steps_name_the_module_path_that_still_resolves() -> None:
    spec = json.loads((SAVED / "pipeline.json").read_text())
    modules = {step["ref"].split(":")[0] for step in spec["spec"]["steps"]}
    assert modules == {STANDARD_STEP_MODULE} == {"trade_agent.preprocessing.steps"}


def test_saved_preprocessor_transforms_bit_identically(tmp_path: Path) -> None:
    params = load_params(FIXTURE / "params.yaml")
    run_features_stage(params, FIXTURE / "market.parquet", tmp_path, fitted_preprocessor=SAVED)
    produced = pd.read_parquet(tmp_path / "features.parquet")
    expected = pd.read_parquet(FIXTURE / "expected_features.parquet")
    assert len(expected) > 2000
    pd.testing.assert_frame_equal(produced, expected, check_exact=True)
