"""Stage code deps from the import graph: a stage re-runs exactly when code it runs changed.

A stage's code is its script plus every ``trade_agent`` file the script imports,
transitively (imports anywhere in a module count, including inside functions, and every
package ``__init__`` on the way). Editing any other file cannot change the stage's outputs,
so ``dvc repro`` does not re-run it.

DVC sees this through one small file per script, ``build/code/<script>.json``: the sha256
of each of those files, written by the first stage, ``code`` (this module's
``--fingerprints``), which depends on every file any stage runs. Each stage depends on its
script's fingerprint instead of listing ~50 files itself; an edit re-runs ``code`` (a
second), and only the stages whose fingerprint changed. Listing the files in every stage
made ``dvc.lock`` 6,000 lines, which DVC parses (pure-Python YAML) twice per ``dvc repro``:
most of a no-op build's time.

Left out: :data:`OUTPUT_NEUTRAL`, the short list of modules that only word errors, log
and report progress. Every stage imports them and none computes data
(``tests/test_stage_deps.py`` checks what they import).

    python -m trade_agent.devtools.stage_deps                  # show each stage's code
    python -m trade_agent.devtools.stage_deps --check          # exit 1 if dvc.yaml disagrees
    python -m trade_agent.devtools.stage_deps --write          # rewrite dvc.yaml's code deps
    python -m trade_agent.devtools.stage_deps --fingerprints   # the `code` stage: build/code/*.json
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ruamel.yaml import YAML

PACKAGE = "trade_agent"
SCRIPTS = "stages"
FINGERPRINTS = "build/code"
CODE_STAGE = "code"
CODE_CMD = "python -m trade_agent.devtools.stage_deps --fingerprints"
THIS_FILE = "trade_agent/devtools/stage_deps.py"
# Wording of errors, logging and progress: imported everywhere, change no output.
OUTPUT_NEUTRAL: tuple[str, ...] = (
    "trade_agent/errors.py",
    "trade_agent/failures.py",
    "trade_agent/log.py",
    "trade_agent/progress.py",
)


# Data files a module reads at run time (importlib.resources): part of what a stage running it
# computes, so in its fingerprint. Every package-data glob of pyproject.toml but py.typed is
# claimed here (tests/test_stage_deps.py).
MODULE_DATA: dict[str, str] = {
    "trade_agent/features/sentiment.py": "trade_agent/features/lexicon/*.txt",
}


def module_file(root: Path, module: str) -> Path | None:
    """The file of ``module`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), if it is ours."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = root / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` blocks never run, so their imports are no dependency."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path) -> set[str]:
    """Every absolute module ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from pkg import sub` imports the submodule when `sub` is one.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        if _type_checking_only(node):
            assert isinstance(node, ast.If)
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return found


def with_parents(module: str) -> list[str]:
    """``a.b.c`` runs ``a/__init__``, ``a.b/__init__`` and ``a.b.c``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def code_deps(root: Path, script: Path) -> list[str]:
    """``trade_agent`` files ``script`` runs (relative to ``root``), output-neutral ones left out,
    with the data files those modules read (:data:`MODULE_DATA`)."""
    seen: set[Path] = set()
    pending = [root / script]
    while pending:
        path = pending.pop()
        for module in imported_modules(path):
            for name in with_parents(module):
                target = module_file(root, name)
                if target is None or target in seen:
                    continue
                if target.relative_to(root).as_posix() in OUTPUT_NEUTRAL:
                    continue
                seen.add(target)
                pending.append(target)
    files = {p.relative_to(root).as_posix() for p in seen}
    data = {d.relative_to(root).as_posix() for f in files if f in MODULE_DATA for d in root.glob(MODULE_DATA[f])}
    return sorted(files | data)


@dataclass(frozen=True)
class StageDeps:
    stage: str
    script: str
    declared: list[str]  # code deps dvc.yaml lists now
    derived: list[str]  # what the import graph says: the script's fingerprint


def _yaml() -> YAML:
    yaml = YAML()  # round trip: keeps comments and order
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _script(cmd: str) -> str:
    words = cmd.split()
    if len(words) < 2 or words[0] != "python" or not words[1].startswith(f"{SCRIPTS}/"):
        raise SystemExit(f"dvc.yaml: stage cmd '{cmd}' is not `python {SCRIPTS}/<script>.py ...`")
    return words[1]


def _body(stage: Any) -> Any:
    """The stage definition itself: a ``foreach`` stage keeps it under ``do``."""
    return stage["do"] if "foreach" in stage else stage


def _is_code(dep: str) -> bool:
    return dep == PACKAGE or dep.startswith((f"{PACKAGE}/", f"{SCRIPTS}/", f"{FINGERPRINTS}/"))


def scripts(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / SCRIPTS).glob("*.py"))


def fingerprint_path(script: str) -> str:
    return f"{FINGERPRINTS}/{Path(script).stem}.json"


def script_code(root: Path, script: str) -> list[str]:
    """The files a stage script runs: itself and its ``trade_agent`` closure."""
    return sorted([script, *code_deps(root, Path(script))])


def code_stage_deps(root: Path) -> list[str]:
    """What the ``code`` stage reads: this module and every file any script runs."""
    return sorted({THIS_FILE, *(f for s in scripts(root) for f in script_code(root, s))})


def stage_deps(root: Path) -> list[StageDeps]:
    """Each stage's declared code deps against the graph (the ``code`` stage: its deps and outs)."""
    document = _yaml().load((root / "dvc.yaml").read_text())
    result = []
    for name, defined in document["stages"].items():
        stage = _body(defined)
        if name == CODE_STAGE:
            declared = [str(d) for d in stage.get("deps", [])] + [f"out {o}" for o in stage.get("outs", [])]
            derived = code_stage_deps(root) + [f"out {fingerprint_path(s)}" for s in scripts(root)]
            result.append(StageDeps(name, str(stage["cmd"]), declared, derived))
            continue
        script = _script(str(stage["cmd"]))
        declared = [str(d) for d in stage.get("deps", []) if _is_code(str(d))]
        result.append(StageDeps(name, script, declared, [fingerprint_path(script)]))
    return result


def write(root: Path) -> list[str]:
    """Rewrite the ``code`` stage (first) and each stage's code dep; return the changed stages."""
    yaml = _yaml()
    path = root / "dvc.yaml"
    document = yaml.load(path.read_text())
    stages = document["stages"]
    changed = []
    code = {"cmd": CODE_CMD, "deps": code_stage_deps(root), "outs": [fingerprint_path(s) for s in scripts(root)]}
    existing = stages.get(CODE_STAGE)
    if existing is None or {k: existing.get(k) for k in code} != code:
        changed.append(CODE_STAGE)
        if existing is None:
            stages.insert(0, CODE_STAGE, code)
        else:
            for key, value in code.items():
                existing[key] = value
    for name, defined in stages.items():
        if name == CODE_STAGE:
            continue
        stage = _body(defined)
        script = _script(str(stage["cmd"]))
        deps = stage.get("deps", [])
        others = [d for d in deps if not _is_code(str(d))]
        wanted = [fingerprint_path(script), *others]
        if [str(d) for d in deps] != wanted:
            changed.append(name)
            # In place, so comments attached to the data deps survive.
            del deps[:]
            deps.extend(wanted)
    if changed:
        buffer = io.StringIO()
        yaml.dump(document, buffer)
        temp = path.with_suffix(".yaml.tmp")
        temp.write_text(buffer.getvalue())
        temp.replace(path)
    return changed


def write_fingerprints(root: Path) -> list[str]:
    """The ``code`` stage: ``build/code/<script>.json`` = the sha256 of each file the script
    runs. A file is rewritten only when its content changes; returns those written."""
    written = []
    for script in scripts(root):
        files = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in script_code(root, script)}
        text = json.dumps({"script": script, "files": files}, indent=1, sort_keys=True) + "\n"
        target = root / fingerprint_path(script)
        if target.is_file() and target.read_text() == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_suffix(".json.tmp")
        temp.write_text(text)
        temp.replace(target)
        written.append(target.relative_to(root).as_posix())
    return written


def _say(line: str, stream: TextIO = sys.stdout) -> None:
    stream.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trade_agent.devtools.stage_deps", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's code deps differ")
    group.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    group.add_argument("--fingerprints", action="store_true", help="write build/code/*.json (the code stage)")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if args.fingerprints:
        written = write_fingerprints(args.root)
        _say(f"{FINGERPRINTS}: {', '.join(written)} changed" if written else f"{FINGERPRINTS}: unchanged")
        return 0
    if args.write:
        changed = write(args.root)
        _say(f"dvc.yaml: code deps rewritten for {', '.join(changed)}" if changed else "dvc.yaml: code deps up to date")
        return 0
    stale = 0
    for entry in stage_deps(args.root):
        if args.check:
            if entry.declared != entry.derived:
                stale += 1
                missing = sorted(set(entry.derived) - set(entry.declared))
                extra = sorted(set(entry.declared) - set(entry.derived))
                _say(f"dvc.yaml stage {entry.stage}: missing {missing}, not listed by the graph {extra}", sys.stderr)
        elif entry.stage != CODE_STAGE:
            code = script_code(args.root, entry.script)
            _say(f"{entry.stage} ({entry.script}): {len(code)} files, via {entry.derived[0]}")
            for dep in code:
                _say(f"  {dep}")
    if stale:
        _say("fix: python -m trade_agent.devtools.stage_deps --write (or `make deps`)", sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
