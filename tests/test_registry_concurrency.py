"""8 processes x 25 registrations at once: nothing lost, no version twice, valid JSON always."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

WORKER = """
import json, sys
from pathlib import Path
from trade_agent.registry import ModelRegistry

root, worker = Path(sys.argv[1]), int(sys.argv[2])
registry = ModelRegistry(root / "models")
for i in range(25):
    model = root / "work" / f"{worker}-{i}"
    model.mkdir(parents=True)
    (model / "model.pt").write_bytes(f"weights {worker} {i}".encode())
    (model / "config.json").write_text("{}")
    config = {"interface": {"features": 3}, "learning_rate": worker * 100 + i, "seed": 0}
    registry.register_model("cnn_lstm", model, None, config, {"test/accuracy": 0.5 + i / 100}, {"sha": "d"})
"""


@pytest.mark.slow
def test_parallel_registrations_lose_nothing(tmp_path: Path) -> None:
    export = tmp_path / "models" / "registry.json"
    invalid: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if export.is_file():
                try:
                    json.loads(export.read_text())
                except ValueError as exc:  # a reader must never see a half-written file
                    invalid.append(str(exc))

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(w)], stderr=subprocess.PIPE, text=True)
        for w in range(8)
    ]
    errors = [w.communicate()[1] for w in workers]
    done.set()
    watcher.join()
    assert all(w.returncode == 0 for w in workers), errors
    assert invalid == []
    models = json.loads(export.read_text())["models"]
    versions = [m["version"] for m in models]
    assert len(models) == 200 and len(set(versions)) == 200
    assert len({m["model_id"] for m in models}) == 200
    # Different hyperparameters, same interface: minor versions 1.0.0 ... 1.199.0.
    assert sorted(int(v.split(".")[1]) for v in versions) == list(range(200))
