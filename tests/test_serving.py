"""`trade-agent serve` as a real server process on 127.0.0.1 (a free port), spoken to over HTTP:
answers equal the CLI's `predict`, bad input gets 422 with the CLI's message, and 8 concurrent
clients get 200 correct answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import trade_agent_cli
from tests.test_inference import registered
from trade_agent.registry import ModelRegistry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, body: object = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def server(dvc_repo: Path) -> Iterator[tuple[str, dict[str, str]]]:
    ids = registered(dvc_repo)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trade_agent.cli",
            "serve",
            "--model",
            ids["ensemble"],
            "--model",
            ids["ppo"],
            "--port",
            str(port),
        ],
        cwd=dvc_repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if call(f"{url}/health")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)
    try:
        yield url, ids
    finally:
        process.terminate()
        process.wait(timeout=30)


def bars_json(repo: Path) -> list[dict[str, Any]]:
    market = pd.read_parquet(repo / "data" / "prepared" / "market.parquet")
    return json.loads(market.assign(timestamp=market["timestamp"].astype(str)).to_json(orient="records"))


def cli_predict(repo: Path, model_id: str, data: Path, *extra: str) -> dict[str, Any]:
    result = trade_agent_cli(repo, "predict", "--model", model_id, "--data", str(data), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_predict_over_http_equals_the_cli_and_bad_input_gets_422(server, dvc_repo: Path) -> None:  # type: ignore[no-untyped-def]
    url, ids = server
    bars = bars_json(dvc_repo)
    data = dvc_repo / "bars.csv"
    pd.DataFrame(bars).to_csv(data, index=False)
    as_of = sorted({b["timestamp"] for b in bars})[-10]
    status, answer = call(f"{url}/predict", {"bars": bars, "as_of": as_of})
    assert status == 200, answer
    assert answer == cli_predict(dvc_repo, ids["ensemble"], data, "--as-of", as_of)
    status, by_id = call(f"{url}/models/{ids['ppo']}/predict", {"bars": bars})
    assert status == 200 and by_id == cli_predict(dvc_repo, ids["ppo"], data)

    status, card = call(f"{url}/model")
    assert status == 200
    entry = ModelRegistry(dvc_repo / "models").get_model(ids["ensemble"])
    assert (card["model_id"], card["model_type"]) == (ids["ensemble"], "ensemble")
    assert (card["version"], card["grade"]) == (entry.version, entry.performance_grade)
    assert {m["model_id"] for m in card["lineage"]} == {ids[n] for n in ("ppo", "sac", "td3", "hybrid_ppo")}
    assert card["preprocessor_ids"] == answer["preprocessor_ids"]
    assert set(card["training_period"]) == {"train", "val", "test"} and card["bar_interval"] == "1D"
    assert call(f"{url}/health") == (200, {"status": "ok", "models": [ids["ensemble"], ids["ppo"]]})

    cut = sorted({b["timestamp"] for b in bars})[: card["bars_needed"] - 1]
    short = [b for b in bars if b["timestamp"] in cut]
    refusals = {
        "not json": call(f"{url}/predict", raw=b"{bars: ["),
        "no bars key": call(f"{url}/predict", {"rows": bars}),
        "bad price": call(
            f"{url}/predict", {"bars": [dict(b, close="abc") if i == 3 else b for i, b in enumerate(bars)]}
        ),
        "short": call(f"{url}/predict", {"bars": short}),
        "as_of": call(f"{url}/predict", {"bars": bars, "as_of": "1990-01-01"}),
    }
    for name, (status, body) in refusals.items():
        assert status == 422, (name, body)
        assert isinstance(body["detail"], str) and "\n" not in body["detail"], name
    assert "not JSON" in refusals["not json"][1]["detail"]
    assert "bars: Field required" in refusals["no bars key"][1]["detail"]
    assert "column 'close', bar 4" in refusals["bad price"][1]["detail"]
    assert f"needs at least {card['bars_needed']} per symbol" in refusals["short"][1]["detail"]
    cli = trade_agent_cli(dvc_repo, "predict", "--model", ids["ensemble"], "--data", str(data), "--as-of", "1990-01-01")
    assert refusals["as_of"][1]["detail"].replace("request body", str(data)) in " ".join(cli.stderr.split())
    assert call(f"{url}/models/nope/predict", {"bars": bars})[0] == 404
    with urllib.request.urlopen(f"{url}/docs", timeout=30) as response:
        assert response.status == 200 and b"swagger" in response.read().lower()


def test_two_hundred_requests_from_eight_clients_are_all_answered_correctly(server, dvc_repo: Path) -> None:  # type: ignore[no-untyped-def]
    url, _ = server
    needed = call(f"{url}/model")[1]["bars_needed"]
    every = bars_json(dvc_repo)
    times = sorted({b["timestamp"] for b in every})[-(needed + 8) :]  # enough history for the earliest as_of
    bars = [b for b in every if b["timestamp"] in set(times)]
    as_ofs = times[-8:]  # eight different questions, each asked 25 times
    expected = {t: call(f"{url}/predict", {"bars": bars, "as_of": t})[1] for t in as_ofs}
    assert len({json.dumps(e["weights"]) for e in expected.values()}) > 1  # different answers to tell apart

    def ask(i: int) -> bool:
        t = as_ofs[i % len(as_ofs)]
        status, body = call(f"{url}/predict", {"bars": bars, "as_of": t})
        return status == 200 and body == expected[t]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(200)))
    assert all(answers), answers.count(False)
