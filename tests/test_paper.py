"""Paper trading on the tiny pipeline: the SQLite ledger equals the backtester, however the bars
arrive, survives a SIGKILL inside a bar's transaction, and records model switches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import trade_agent_cli
from tests.test_inference import registered
from trade_agent.config import load_params
from trade_agent.errors import InputError
from trade_agent.evaluation.inference import Inference
from trade_agent.evaluation.suite import run_backtest
from trade_agent.paper.ledger import Ledger
from trade_agent.paper.report import account_report, account_status
from trade_agent.paper.trading import run_paper
from trade_agent.registry import ModelRegistry
from trade_agent.threads import apply_thread_plan

TABLES = ("account", "models", "bars", "prices", "fills", "positions", "targets")


def ledger_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with Ledger.open(path) as ledger:
        return {t: ledger.table(t) for t in TABLES}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def test_split(dvc_repo: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The ensemble's backtest on the test split, and the prepared bars cut at its last bar."""
    params = load_params(dvc_repo / "params.yaml")
    apply_thread_plan(params.base.threads, "policy")
    registry = ModelRegistry(dvc_repo / "models", grading=params.grading)
    market = dvc_repo / "data" / "prepared" / "market.parquet"
    model_id = registered(dvc_repo)["ensemble"]
    held = Inference(registry, params, market, tmp_path / "backtest").positions(model_id, "test")
    result = run_backtest(held.weights, held.open, held.close, held.common, held.frequency.periods_per_year)
    bars = pd.read_parquet(market)

    def upto(t: pd.Timestamp, name: str) -> str:
        path = dvc_repo / "data" / f"{name}.parquet"
        bars[bars["timestamp"] <= t].to_parquet(path)
        return str(path)

    return {"params": params, "registry": registry, "model_id": model_id, "times": held.times, "result": result}, upto


def test_three_chunks_equal_one_run_equal_the_backtest_and_reruns_change_nothing(dvc_repo: Path, test_split) -> None:  # type: ignore[no-untyped-def]
    info, upto = test_split
    times, model_id = info["times"], info["model_id"]
    kwargs = {"params": info["params"], "registry": info["registry"], "root": dvc_repo / "paper"}
    whole = upto(times[-1], "whole")
    once = run_paper(model_id, whole, "once", start=str(times[0]), **kwargs)
    assert (once.new_bars, once.first, once.last) == (len(times), str(times[0]), str(times[-1]))
    cuts = [times[len(times) // 3], times[2 * len(times) // 3], times[-1]]
    for i, cut in enumerate(cuts):
        run_paper(model_id, upto(cut, f"chunk{i}"), "chunks", start=str(times[0]) if i == 0 else None, **kwargs)
    once_path, chunks_path = dvc_repo / "paper" / "once.sqlite", dvc_repo / "paper" / "chunks.sqlite"
    a, b = ledger_rows(once_path), ledger_rows(chunks_path)
    for table in TABLES[1:]:
        assert a[table] == b[table], table
    # The account's returns are the backtester's on the same split, to float precision.
    with Ledger.open(once_path) as ledger:
        returns = np.array([bar["bar_return"] for bar in ledger.bars()[1:]])
        summary, markdown, png = account_report(ledger, dvc_repo / "reports" / "paper")
        status = account_status(ledger)
    expected = info["result"].returns
    assert len(returns) == len(expected) == len(times) - 1
    np.testing.assert_allclose(returns, expected, rtol=0, atol=1e-12)
    assert np.abs(expected).max() > 1e-4  # it traded
    assert summary["backtest_drift_max"] < 1e-12
    assert "backtest drift (max per bar)" in markdown.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert status.equity == pytest.approx(1e6 * float(np.prod(1 + expected)), rel=1e-9)
    assert set(status.pending) == set(status.positions)  # the last bar's decision waits for the next open
    # No new bars: the file is not touched.
    before = digest(chunks_path)
    again = run_paper(model_id, upto(times[-1], "again"), "chunks", **kwargs)
    assert again.new_bars == 0 and digest(chunks_path) == before
    # Revised history is refused rather than silently re-marked.
    revised = pd.read_parquet(whole)
    revised.loc[revised["timestamp"] == times[-1], ["open", "high", "low", "close"]] *= 1.01
    extra = revised.assign(timestamp=revised["timestamp"] + (times[-1] - times[-2]))
    extra = extra[extra["timestamp"] > times[-1]].head(2)
    path = dvc_repo / "data" / "revised.parquet"
    pd.concat([revised, extra]).to_parquet(path)
    with pytest.raises(InputError, match="the history changed: start a new account"):
        run_paper(model_id, str(path), "chunks", **kwargs)
    assert digest(chunks_path) == before


def test_a_sigkill_inside_a_bar_then_a_rerun_gives_the_uninterrupted_ledger(dvc_repo: Path, test_split) -> None:  # type: ignore[no-untyped-def]
    info, upto = test_split
    times, model_id = info["times"], info["model_id"]
    whole = upto(times[-1], "whole")
    args = ["paper", "run", "--model", model_id, "--data", whole, "--start", str(times[0])]
    killed = trade_agent_cli(dvc_repo, *args, "--account", "killed", env={"TRADE_AGENT_FAULTS": "kill_in_paper_bar=7"})
    assert killed.returncode == -9, killed.stderr
    path = dvc_repo / "paper" / "killed.sqlite"
    with Ledger.open(path) as ledger:
        assert len(ledger.bars()) == 6  # bar 7's rows were written but never committed
        assert len(ledger.table("targets")) == 6 * len(ledger.info().symbols)
    resumed = trade_agent_cli(dvc_repo, "paper", "run", "--model", model_id, "--data", whole, "--account", "killed")
    assert resumed.returncode == 0, resumed.stderr
    clean = trade_agent_cli(dvc_repo, *args, "--account", "clean")
    assert clean.returncode == 0, clean.stderr
    a, b = ledger_rows(path), ledger_rows(dvc_repo / "paper" / "clean.sqlite")
    assert a["account"] == [r if r[0] != "name" else ("name", "killed") for r in b["account"]]
    for table in TABLES[1:]:
        assert a[table] == b[table], table
    status = trade_agent_cli(dvc_repo, "paper", "status", "killed", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["bars"] == len(times)


def test_switching_models_is_recorded_and_the_new_model_decides_from_then_on(dvc_repo: Path, test_split) -> None:  # type: ignore[no-untyped-def]
    info, upto = test_split
    times = info["times"]
    ids = registered(dvc_repo)
    kwargs = {"params": info["params"], "registry": info["registry"], "root": dvc_repo / "paper"}
    half = times[len(times) // 2]
    run_paper(ids["ensemble"], upto(half, "half"), "switch", start=str(times[0]), **kwargs)
    # History revised before the account's last bar: the replay would not decide what the ledger holds.
    revised = pd.read_parquet(upto(times[-1], "whole"))
    revised.loc[revised["timestamp"] == times[len(times) // 2 - 1], ["open", "high", "low", "close"]] *= 1.05
    path = dvc_repo / "data" / "revised.parquet"
    revised.to_parquet(path)
    with pytest.raises(InputError, match="the history before it differs from the account's"):
        run_paper(ids["ensemble"], str(path), "switch", **kwargs)
    summary = run_paper(ids["ppo"], upto(times[-1], "whole"), "switch", **kwargs)
    assert summary.switched_from == ids["ensemble"]
    with Ledger.open(dvc_repo / "paper" / "switch.sqlite") as ledger:
        segments = ledger.segments()
        bars = ledger.bars()
    assert [(s.model_id, s.from_timestamp) for s in segments] == [
        (ids["ensemble"], str(times[0])),
        (ids["ppo"], str(times[len(times) // 2 + 1])),
    ]
    assert segments[1].track_start == str(half)  # its own track starts flat at the account's last bar
    deciders = [b["model_id"] for b in bars]
    assert deciders == [ids["ensemble"]] * (len(times) // 2 + 1) + [ids["ppo"]] * (len(times) - len(times) // 2 - 1)
