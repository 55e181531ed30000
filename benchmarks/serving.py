"""Latency of ``POST /predict`` against the in-process ``Predictor.predict`` call, same model and bars.

A real ``trade-agent serve`` process on 127.0.0.1 serves the project's registered model
(default ``ensemble@latest``: run ``make run`` first). Each round sends the last ``--bars``
bars of the prepared data as a JSON body and, alternately, makes the same call in this
process (records in, the same validation, preprocessing and replay), so background load
hits both alike. Prints p50/p99 of each and the ratio of the medians: the cost of HTTP,
JSON and the ASGI stack on top of the prediction itself. Answers are compared each round.

    python benchmarks/serving.py --model ensemble@latest --bars 500 --requests 200
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trade_agent.config import load_params_or_defaults
from trade_agent.inference import Predictor
from trade_agent.paths import MARKET
from trade_agent.threads import apply_thread_plan


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: bytes) -> dict[str, object]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ensemble@latest")
    parser.add_argument("--bars", type=int, default=500, help="bars per symbol in each request")
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind")
    args = parser.parse_args()
    if not MARKET.is_file():
        raise SystemExit(f"{MARKET} not found: run `make run` first")
    params = load_params_or_defaults(None)
    apply_thread_plan(params.base.threads, "policy")
    market = pd.read_parquet(MARKET)
    times = np.sort(market["timestamp"].unique())[-args.bars :]
    recent = market[market["timestamp"].isin(times)]
    records = json.loads(recent.assign(timestamp=recent["timestamp"].astype(str)).to_json(orient="records"))
    predictor = Predictor(args.model, params=params)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "trade_agent.cli", "serve", "--model", predictor.model_id, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if server.poll() is not None:
                    detail = server.stderr.read().decode() if server.stderr else ""
                    raise SystemExit(f"server exited: {detail}") from None
                time.sleep(0.2)
        body = json.dumps({"bars": records}).encode()
        http, local = [], []
        for i in range(args.requests + 1):
            started = time.perf_counter()
            answer = _post(f"{url}/predict", body)
            http_s = time.perf_counter() - started
            started = time.perf_counter()
            expected = predictor.predict(records, source="request body").to_json()
            local_s = time.perf_counter() - started
            if answer != expected:
                raise SystemExit(f"request {i}: the server's answer differs from the in-process call")
            if i:  # the first round warms both up
                http.append(http_s)
                local.append(local_s)
    finally:
        server.terminate()
        server.wait(timeout=30)
        predictor.close()
    h, p = np.array(http) * 1e3, np.array(local) * 1e3
    print(
        f"serving: {predictor.model_id}, {args.bars} bars x {recent['symbol'].nunique()} symbols per request "
        f"({len(body) / 1e3:,.0f} kB JSON), {args.requests} requests of each kind, alternated"
    )
    print(f"  POST /predict        p50 {np.percentile(h, 50):8.1f} ms   p99 {np.percentile(h, 99):8.1f} ms")
    print(f"  in-process predict   p50 {np.percentile(p, 50):8.1f} ms   p99 {np.percentile(p, 99):8.1f} ms")
    print(f"  HTTP / in-process p50 ratio {np.percentile(h, 50) / np.percentile(p, 50):.2f}x (answers identical)")


if __name__ == "__main__":
    main()
