"""The build is precise: a stage re-runs exactly when code its script imports changed.

``dvc.yaml`` is generated from the import graph (``make deps``): each stage depends on its
script's fingerprint (``build/code/<script>.json``, the ``code`` stage's output). These
tests fail when it drifts, when an output-neutral module starts computing, and when an edit
would re-run a stage that cannot be affected (measured with ``dvc status`` on a copy).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trade_agent.devtools import stage_deps
from trade_agent.devtools.stage_deps import OUTPUT_NEUTRAL, code_deps

ROOT = Path(__file__).resolve().parents[1]


def test_dvc_yaml_code_deps_equal_the_import_graph() -> None:
    entries = stage_deps.stage_deps(ROOT)
    assert {e.stage for e in entries} >= {
        "code",
        "prepare",
        "features",
        "cnn_lstm",
        "embed",
        "rl",
        "hybrid",
        "ensemble",
    }
    for entry in entries:
        assert entry.declared == entry.derived, (
            f"stage {entry.stage}: dvc.yaml lists {sorted(set(entry.declared) - set(entry.derived))} the graph "
            f"does not and misses {sorted(set(entry.derived) - set(entry.declared))}; run `make deps`"
        )
    assert stage_deps.main(["--check", "--root", str(ROOT)]) == 0
    # Every stage reads its code through its fingerprint only, and the code stage reads every file.
    code = next(e for e in entries if e.stage == "code")
    for entry in entries:
        if entry.stage != "code":
            assert entry.declared == [f"build/code/{Path(entry.script).stem}.json"]
            assert set(stage_deps.script_code(ROOT, entry.script)) <= set(code.declared)


def test_a_fingerprint_names_every_file_its_script_runs_with_its_hash(tmp_path: Path) -> None:
    package = tmp_path / "trade_agent"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "core.py").write_text("X = 1\n")
    (package / "other.py").write_text("Y = 2\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "a.py").write_text("from trade_agent.core import X\n")
    (tmp_path / "stages" / "b.py").write_text("from trade_agent.other import Y\n")
    assert stage_deps.write_fingerprints(tmp_path) == ["build/code/a.json", "build/code/b.json"]
    first = json.loads((tmp_path / "build/code/a.json").read_text())
    assert sorted(first["files"]) == ["stages/a.py", "trade_agent/__init__.py", "trade_agent/core.py"]
    assert stage_deps.write_fingerprints(tmp_path) == []  # unchanged code: nothing rewritten
    (package / "other.py").write_text("Y = 3\n")
    assert stage_deps.write_fingerprints(tmp_path) == ["build/code/b.json"]  # only the script that runs it


def test_data_files_a_module_reads_are_in_the_fingerprint_of_every_stage_running_it() -> None:
    """The sentiment lexicon is read through importlib.resources, not imported: an edit to it
    must still re-run `features` (and whatever else runs sentiment.py)."""
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = {f"trade_agent/{g}" for g in package_data["trade_agent"] if g != "py.typed"}
    assert globs == set(stage_deps.MODULE_DATA.values())  # every shipped data file is claimed by its reader
    lexicon = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("trade_agent/features/lexicon/*.txt"))
    assert lexicon
    features = stage_deps.script_code(ROOT, "stages/features.py")
    assert "trade_agent/features/sentiment.py" in features and set(lexicon) <= set(features)
    assert not set(lexicon) & set(stage_deps.script_code(ROOT, "stages/rl.py"))  # rl never runs the lexicon
    assert set(lexicon) <= set(stage_deps.code_stage_deps(ROOT))


def test_output_neutral_modules_only_word_errors_and_logs() -> None:
    """They may import the standard library, rich/yaml for printing, and each other; nothing that computes."""
    allowed_third_party = {"rich", "yaml"}
    for name in OUTPUT_NEUTRAL:
        tree = ast.parse((ROOT / name).read_text())
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for module in modules:
                top = module.split(".")[0]
                if top == "trade_agent":
                    assert module.replace(".", "/") + ".py" in OUTPUT_NEUTRAL, f"{name} imports {module}"
                else:
                    assert top in sys.stdlib_module_names or top in allowed_third_party, f"{name} imports {module}"


def test_graph_counts_function_imports_and_skips_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "trade_agent"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "errors.py", "typed.py"):
        (package / name).write_text("")
    (package / "sub" / "late.py").write_text("X = 1\n")
    (package / "sub" / "core.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from trade_agent import errors\n"
        "if TYPE_CHECKING:\n    from trade_agent import typed\n"
        "def f():\n    from trade_agent.sub.late import X\n    return X\n"
    )
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "s.py").write_text("import trade_agent.sub.core\n")
    assert code_deps(tmp_path, Path("stages/s.py")) == [
        "trade_agent/__init__.py",
        "trade_agent/sub/__init__.py",
        "trade_agent/sub/core.py",
        "trade_agent/sub/late.py",  # imported inside a function: still run
    ]  # errors.py is output-neutral; typed.py only under TYPE_CHECKING


# Module edited -> the stages whose outputs it can change (and so must re-run).
EXPECTED = {
    "trade_agent/evaluation/report.py": {"evaluate", "walkforward_fold"},  # the report; folds evaluate with it
    "trade_agent/ensemble/combine.py": {"ensemble", "evaluate", "walkforward_fold"},  # combines ensemble members
    "trade_agent/training/unified_manager.py": set(),  # the seed's Python API
    "trade_agent/registry/release.py": set(),
    "trade_agent/evaluation/inference.py": set(),  # backtest/predict from the registry
    "trade_agent/devtools/stage_deps.py": set(),
    **{f"trade_agent/cli/{p.name}": set() for p in sorted((ROOT / "trade_agent" / "cli").glob("*.py"))},
}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_an_edit_reruns_only_the_stages_it_can_affect(tmp_path: Path) -> None:
    """A copy of this checkout (tracked and new files) with the committed fingerprints, a
    comment appended to each module, the ``code`` stage's command, then ``dvc status --json``:
    the stages whose fingerprint changed are exactly those running an edited module."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    repo = tmp_path / "clone"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    stage_deps.write_fingerprints(repo)  # what `dvc repro` built from these files (dvc.lock has their md5)
    before = {p.name: json.loads(p.read_text())["files"] for p in (repo / "build" / "code").glob("*.json")}
    for module in EXPECTED:
        with (repo / module).open("a") as handle:
            handle.write("# an edit that changes nothing\n")
    stage_deps.write_fingerprints(repo)
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, status.stderr
    rerun: set[str] = set()
    for stage, entries in json.loads(status.stdout).items():
        for entry in entries:
            if isinstance(entry, dict) and any(p.startswith("build/code/") for p in entry.get("changed deps", {})):
                rerun.add(stage.split(":")[-1].split("@")[0])
    # Per module: the stages whose fingerprint lists it.
    script_stage = {e.script: e.stage for e in stage_deps.stage_deps(repo) if e.stage != "code"}
    changed: dict[str, set[str]] = {
        module: {script_stage[f"stages/{name[:-5]}.py"] for name, code in before.items() if module in code}
        for module in EXPECTED
    }
    assert changed == EXPECTED
    assert rerun == set().union(*EXPECTED.values())  # DVC re-runs exactly those (and `code`)
