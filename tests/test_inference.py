"""`trade-agent predict` / `trade_agent.inference.predict` on the tiny pipeline's registered models:
the decision at a test bar equals the position the backtester held after it, for every model
type, and each refusal names its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import trade_agent_cli
from trade_agent.config import load_params
from trade_agent.errors import InputError, InsufficientDataError, SchemaError
from trade_agent.evaluation.inference import Inference
from trade_agent.inference import Holdings, Predictor, predict
from trade_agent.registry import ModelRegistry
from trade_agent.threads import apply_thread_plan

MODELS = {
    "cnn_lstm": "cnn_lstm",
    "ppo": "ppo",
    "sac": "sac",
    "td3": "td3",
    "hybrid_ppo": "hybrid",
    "ensemble": "ensemble",
}


def registered(repo: Path) -> dict[str, str]:
    registry = ModelRegistry(repo / "models")
    ids = {name: registry.id_of(kind, repo / "models" / "pipeline" / name) for name, kind in MODELS.items()}
    assert all(ids.values()), ids
    return ids  # type: ignore[return-value]


def test_predict_at_a_test_bar_is_the_backtested_position_for_every_model_type(dvc_repo: Path, tmp_path: Path) -> None:
    """Inference (the registry's verified copies, the saved preprocessors, recomputed embeddings, one
    replay from the test split's first bar) decides after bar t what the backtest held after bar t."""
    params = load_params(dvc_repo / "params.yaml")
    apply_thread_plan(params.base.threads, "policy")
    registry = ModelRegistry(dvc_repo / "models", grading=params.grading)
    market = dvc_repo / "data" / "prepared" / "market.parquet"
    backtest = Inference(registry, params, market, tmp_path / "backtest")
    for name, model_id in registered(dvc_repo).items():
        held = backtest.positions(model_id, "test")  # targets decided at test bars 0 .. S-2
        with Predictor(model_id, registry, params) as predictor:
            bars = predictor.load_bars(str(market))
            times = held.times
            for k in (1, len(times) // 2, len(times) - 2):  # -2: the last test bar with a backtested position
                prediction = predictor.predict(bars, as_of=times[k], start=times[0])
                assert prediction.as_of == str(times[k]), name
                assert list(prediction.weights) == held.symbols
                np.testing.assert_allclose(
                    list(prediction.weights.values()), held.weights[k], rtol=0, atol=1e-9, err_msg=f"{name} bar {k}"
                )
            # The same replay at every bar at once is the backtest's whole weight matrix.
            track = predictor.positions(bars[bars["timestamp"] <= times[-2]], times[0])
            np.testing.assert_allclose(track.weights, held.weights, rtol=0, atol=1e-9, err_msg=name)
        assert np.abs(held.weights).sum() > 0, name  # every model trades on this data: the check has teeth


def test_predict_cli_json_equals_the_api_and_orders_follow_the_holdings(dvc_repo: Path) -> None:
    ids = registered(dvc_repo)
    market = dvc_repo / "data" / "prepared" / "market.parquet"
    holdings = dvc_repo / "holdings.json"
    symbols = sorted(pd.read_parquet(market)["symbol"].unique())
    holdings.write_text(json.dumps({"cash": 50_000.0, "positions": {symbols[0]: 100.0}}))
    result = trade_agent_cli(
        dvc_repo,
        "predict",
        "--model",
        ids["ensemble"],
        "--data",
        str(market),
        "--holdings",
        str(holdings),
        "--json",
        env={"OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stderr
    cli = json.loads(result.stdout)
    params = load_params(dvc_repo / "params.yaml")
    api = predict(
        ids["ensemble"],
        str(market),
        holdings=Holdings.load(holdings),
        registry=ModelRegistry(dvc_repo / "models", grading=params.grading),
        params=params,
    ).to_json()
    assert cli == api
    close = pd.read_parquet(market).sort_values("timestamp").groupby("symbol")["close"].last()
    value = 50_000.0 + 100.0 * close[symbols[0]]
    assert api["portfolio_value"] == pytest.approx(value, rel=1e-12)
    for order in api["orders"]:
        target = order["target_weight"] * value / close[order["symbol"]]
        held = 100.0 if order["symbol"] == symbols[0] else 0.0
        assert order["order_quantity"] == pytest.approx(target - held, rel=1e-12, abs=1e-12)
        assert order["estimated_cost"] == pytest.approx(
            abs(order["order_notional"]) * (api["cost_bps"] + api["slippage_bps"]) / 1e4
        )
    assert api["estimated_cost"] == pytest.approx(sum(o["estimated_cost"] for o in api["orders"]))
    assert any(abs(o["order_quantity"]) > 0 for o in api["orders"])


def test_every_refusal_is_one_line_naming_the_fix(dvc_repo: Path, tmp_path: Path) -> None:
    params = load_params(dvc_repo / "params.yaml")
    registry = ModelRegistry(dvc_repo / "models", grading=params.grading)
    ids = registered(dvc_repo)
    market = pd.read_parquet(dvc_repo / "data" / "prepared" / "market.parquet")
    with Predictor(ids["ppo"], registry, params) as predictor:
        times = np.sort(market["timestamp"].unique())
        need = predictor.inputs.bars_needed
        enough = market[market["timestamp"] <= times[need - 1]]
        assert predictor.predict(enough).bars == need  # exactly enough history works
        with pytest.raises(InsufficientDataError, match=rf"needs at least {need} per symbol \(indicator warm-up"):
            predictor.predict(market[market["timestamp"] <= times[need - 2]])

        other = market[market["symbol"] == market["symbol"].iloc[0]].assign(symbol="ZZZ")
        with pytest.raises(InputError, match=r"symbol 'ZZZ' is not one .* was trained on .*remove its bars"):
            predictor.predict(pd.concat([market, other]))
        with pytest.raises(InputError, match=r"no bars of .* trades .* together and needs bars of each"):
            predictor.predict(market[market["symbol"] != market["symbol"].iloc[0]])

        hourly = market.copy()
        day = hourly.groupby("symbol").cumcount()
        hourly["timestamp"] = pd.Timestamp("2000-01-03 09:00") + pd.to_timedelta(day, unit="h")
        with pytest.raises(SchemaError, match=r"bars are 1h apart but .* was trained on 1D bars.*resample to 1D"):
            predictor.predict(hourly)

        bad = market.copy()
        bad.loc[7, "high"] = -1.0
        with pytest.raises(InputError, match=r"bars: column 'high', bar 8: price must be > 0"):
            predictor.predict(bad)
        broken = tmp_path / "broken.csv"
        market.assign(close=market["close"].astype(str).where(market.index != 3, "abc")).to_csv(broken, index=False)
        with pytest.raises(InputError, match=rf"{broken}: column 'close', line 5"):
            predictor.load_bars(str(broken))

        with pytest.raises(InputError, match=r"--as-of 1999-01-01: outside the data .*give a timestamp between them"):
            predictor.predict(market, as_of="1999-01-01")
        with pytest.raises(InputError, match=r"--as-of tomorrow: not a timestamp"):
            predictor.predict(market, as_of="tomorrow")
        with pytest.raises(InputError, match=r"--start .* the model's track can start from"):
            predictor.predict(market, start=str(times[0]))
    # And from the command line: exit 2, one line, no traceback.
    result = trade_agent_cli(
        dvc_repo,
        "predict",
        "--model",
        ids["ppo"],
        "--data",
        str(dvc_repo / "data" / "prepared" / "market.parquet"),
        "--as-of",
        "1999-01-01",
    )
    assert result.returncode == 2
    assert "outside the data" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
