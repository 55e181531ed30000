"""`trade-agent train list|info`, `models ...` and interactive upstream selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_registry import model_dir
from trade_agent.cli.main import app
from trade_agent.cli.selection import NEW, SelectionCancelled, choose_upstream
from trade_agent.registry import ModelRegistry

runner = CliRunner()


@pytest.fixture
def populated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelRegistry, list[str]]:
    monkeypatch.chdir(tmp_path)
    registry = ModelRegistry("models")
    ids = []
    for i, accuracy in enumerate((0.65, 0.9, 0.75)):
        config = {"interface": {"f": 3}, "learning_rate": 0.001 * (i + 1)}
        metrics = {"test/accuracy": accuracy, "test/loss": 0.3, "test/ic": 0.01}
        ids.append(registry.register_model("cnn_lstm", model_dir(tmp_path, bytes([i]) * 10), None, config, metrics, {}))
    agent = model_dir(tmp_path, b"agent", "agent")
    ids.append(
        registry.register_model("ppo", agent, None, {"interface": {}}, {"test/sharpe": 1.2}, {}, dependencies=[ids[1]])
    )
    return registry, ids


def test_list_filters_and_formats(populated) -> None:
    _, ids = populated
    result = runner.invoke(app, ["train", "list", "--model-type", "cnn_lstm", "--grade", "B"])
    assert result.exit_code == 0, result.output
    assert ids[1] in result.output and ids[0] not in result.output and "Key Metrics" in result.output
    relative = runner.invoke(app, ["train", "list", "--relative", "--model-type", "cnn_lstm"])
    assert "Percentile" in relative.output
    listed = json.loads(runner.invoke(app, ["train", "list", "--json"]).output)
    assert [m["model_id"] for m in listed] == [ids[3], ids[2], ids[1], ids[0]]


def test_info_shows_lineage_and_integrity(populated) -> None:
    registry, ids = populated
    result = runner.invoke(app, ["train", "info", "ppo@latest"])
    assert result.exit_code == 0, result.output
    assert ids[3] in result.output and ids[1] in result.output and "integrity: ok" in result.output
    details = json.loads(runner.invoke(app, ["train", "info", ids[3], "--json"]).output)
    assert details["lineage"]["dependencies"][0]["model_id"] == ids[1]
    sha = registry.get_model(ids[1]).files["model.pt"]["sha256"]
    registry.store.object_path(sha).write_bytes(b"tampered")
    damaged = runner.invoke(app, ["train", "info", ids[1]])
    assert damaged.exit_code == 1 and "is corrupted" in damaged.output
    validate = runner.invoke(app, ["models", "validate"])
    assert validate.exit_code == 1 and f"{ids[1]}/model.pt" in validate.output
    assert "1 of 4 models failed validation" in validate.output


def test_get_archive_delete_lineage_export_gc(populated, tmp_path: Path) -> None:
    registry, ids = populated
    assert runner.invoke(app, ["models", "get", ids[0], "-o", "out"]).exit_code == 0
    assert (tmp_path / "out" / "model.pt").read_bytes() == bytes([0]) * 10
    refused = runner.invoke(app, ["models", "delete", ids[1]])
    assert refused.exit_code == 2 and "is a dependency of" in refused.output
    lineage = runner.invoke(app, ["models", "lineage", ids[3], "--json"])
    assert json.loads(lineage.output)["dependencies"][0]["model_id"] == ids[1]
    assert runner.invoke(app, ["models", "archive", ids[0]]).exit_code == 0
    assert ids[0] not in runner.invoke(app, ["train", "list"]).output
    gc = runner.invoke(app, ["models", "gc"])
    assert gc.exit_code == 0 and "freed" in gc.output
    assert not registry.validate_model_integrity(ids[0])  # archived files were freed
    assert registry.validate_model_integrity(ids[1])  # active ones were kept
    assert runner.invoke(app, ["models", "delete", ids[1], "--force"]).exit_code == 0
    exported = runner.invoke(app, ["models", "export"])
    assert exported.exit_code == 0 and "exported 3 models" in exported.output
    missing = runner.invoke(app, ["models", "get", "nope", "-o", "x"])
    assert missing.exit_code == 2 and "model 'nope' not found" in missing.output


def test_interactive_selection(populated) -> None:
    registry, ids = populated
    shown: list[int] = []
    told: list[str] = []
    answers = iter(["7", "2"])  # out of range, then a valid index
    chosen = choose_upstream(
        registry,
        "cnn_lstm",
        ask=lambda _: next(answers),
        show=lambda m: shown.append(len(m)),
        interactive=True,
        tell=told.append,
    )
    assert chosen == registry.list_models("cnn_lstm")[1].model_id and shown == [3]
    assert told == ["'7' is not a choice; enter a model index (1-3), 'new' to train a new model, or 'quit'"]
    assert choose_upstream(registry, "cnn_lstm", ask=lambda _: "", show=lambda m: None, interactive=True) == NEW
    assert choose_upstream(registry, "cnn_lstm", interactive=False) == NEW  # no TTY: the pipeline's own stage
    assert choose_upstream(registry, "cnn_lstm", pinned="cnn_lstm@best") == ids[1]
    with pytest.raises(SelectionCancelled):
        choose_upstream(registry, "cnn_lstm", ask=lambda _: "quit", show=lambda m: None, interactive=True)


def test_a_fresh_clone_tells_which_models_are_here(populated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clone with the committed registry.json and no objects: every entry is listed as
    missing, none is offered, the view gets no empty files; reproducing one makes it here."""
    _, ids = populated
    clone = tmp_path / "clone"
    (clone / "models").mkdir(parents=True)
    (clone / "models" / "registry.json").write_bytes((tmp_path / "models" / "registry.json").read_bytes())
    monkeypatch.chdir(clone)
    listed = json.loads(runner.invoke(app, ["train", "list", "--json"]).output)
    assert [m["model_id"] for m in listed] == [ids[3], ids[2], ids[1], ids[0]]
    assert {m["availability"] for m in listed} == {"missing"}
    table = runner.invoke(app, ["train", "list"])
    assert table.exit_code == 0 and "missing" in table.output
    assert "12 file(s) of 4 registered model(s) are not here" in " ".join(table.output.split())
    info = runner.invoke(app, ["train", "info", ids[1]])
    assert "files: missing (not in this clone and no DVC remote" in " ".join(info.output.split())
    registry = ModelRegistry("models")
    shown: list[int] = []
    assert choose_upstream(registry, "cnn_lstm", show=lambda m: shown.append(len(m)), interactive=True) == NEW
    assert shown == []  # nothing to offer
    exported = runner.invoke(app, ["models", "export"])
    assert exported.exit_code == 0, exported.output
    view = [p for p in (clone / "models").rglob("*") if p.is_file() and ".store" not in p.parts]
    assert view and all(p.stat().st_size > 0 for p in view)
    assert not [p for p in view if p.suffix == ".pth"]  # weights that are not here are not written
    # Reproducing a committed model (as `make run` does) registers nothing and makes it here.
    again = registry.register_model(
        "cnn_lstm", model_dir(tmp_path, bytes([1]) * 10), None, {"interface": {"f": 3}, "learning_rate": 0.002}, {}, {}
    )
    assert again == ids[1] and registry.availability(ids[1]) == "here"
    assert registry.availability(ids[0]) == "missing"
