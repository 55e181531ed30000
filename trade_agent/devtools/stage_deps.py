"""Stage code deps from the import graph: ``dvc.yaml`` lists exactly the modules a stage runs.

A stage's code deps are its script plus every ``trade_agent`` file the script imports,
transitively (imports anywhere in a module count, including inside functions, and every
package ``__init__`` on the way). Editing any other file cannot change the stage's outputs,
so ``dvc repro`` does not re-run it.

Left out: :data:`OUTPUT_NEUTRAL`, the short list of modules that only word errors, log
and report progress. Every stage imports them and none computes data
(``tests/test_stage_deps.py`` checks what they import).

    python -m trade_agent.devtools.stage_deps            # show each stage's code deps
    python -m trade_agent.devtools.stage_deps --check    # exit 1 if dvc.yaml disagrees
    python -m trade_agent.devtools.stage_deps --write    # rewrite dvc.yaml's code deps
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ruamel.yaml import YAML

PACKAGE = "trade_agent"
# Wording of errors, logging and progress: imported everywhere, change no output.
OUTPUT_NEUTRAL: tuple[str, ...] = (
    "trade_agent/errors.py",
    "trade_agent/failures.py",
    "trade_agent/log.py",
    "trade_agent/progress.py",
)


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
    """``trade_agent`` files ``script`` runs (relative to ``root``), output-neutral ones left out."""
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
    return sorted(p.relative_to(root).as_posix() for p in seen)


@dataclass(frozen=True)
class StageDeps:
    stage: str
    script: str
    declared: list[str]  # code deps dvc.yaml lists now
    derived: list[str]  # what the import graph says


def _yaml() -> YAML:
    yaml = YAML()  # round trip: keeps comments and order
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _script(cmd: str) -> str:
    words = cmd.split()
    if len(words) < 2 or words[0] != "python" or not words[1].startswith("stages/"):
        raise SystemExit(f"dvc.yaml: stage cmd '{cmd}' is not `python stages/<script>.py ...`")
    return words[1]


def _body(stage: Any) -> Any:
    """The stage definition itself: a ``foreach`` stage keeps it under ``do``."""
    return stage["do"] if "foreach" in stage else stage


def _is_code(dep: str) -> bool:
    return dep == PACKAGE or dep.startswith(PACKAGE + "/")


def stage_deps(root: Path) -> list[StageDeps]:
    document = _yaml().load((root / "dvc.yaml").read_text())
    result = []
    for name, defined in document["stages"].items():
        stage = _body(defined)
        script = _script(str(stage["cmd"]))
        declared = [str(d) for d in stage.get("deps", []) if _is_code(str(d))]
        result.append(StageDeps(name, script, declared, code_deps(root, Path(script))))
    return result


def write(root: Path) -> list[str]:
    """Rewrite each stage's code deps in ``dvc.yaml`` (after its other deps); return the changed stages."""
    yaml = _yaml()
    path = root / "dvc.yaml"
    document = yaml.load(path.read_text())
    changed = []
    for name, defined in document["stages"].items():
        stage = _body(defined)
        script = _script(str(stage["cmd"]))
        deps = stage.get("deps", [])
        others = [d for d in deps if not _is_code(str(d))]
        wanted = others + code_deps(root, Path(script))
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


def _say(line: str, stream: TextIO = sys.stdout) -> None:
    stream.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trade_agent.devtools.stage_deps", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's code deps differ")
    group.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args(argv)
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
                _say(f"dvc.yaml stage {entry.stage}: missing {missing}, not imported {extra}", sys.stderr)
        else:
            _say(f"{entry.stage} ({entry.script}): {len(entry.derived)} modules")
            for dep in entry.derived:
                _say(f"  {dep}")
    if stale:
        _say("fix: python -m trade_agent.devtools.stage_deps --write (or `make deps`)", sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
