"""Run the real DVC pipeline in a throw-away copy of this project (for the study benchmarks).

A copy holds the pipeline's files (``dvc.yaml``, ``params.yaml``, ``stages/``,
``trade_agent/``, ``data/raw/``) as committed at HEAD, or as they are in the working tree,
its own git repository, DVC cache and registry; nothing is written into this checkout.
``trade_agent`` is imported from the copy (``PYTHONPATH``), ahead of any installed one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", "stages", "trade_agent", "data/raw")


def source_commit(worktree: bool) -> str:
    """The commit the copies come from, with ``+dirty`` when worktree files differ from it."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    name = commit.stdout.strip() or "unknown"
    if worktree:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *COPIED], cwd=ROOT, capture_output=True, text=True
        )
        if dirty.stdout.strip():
            name += "+dirty"
    return name


def _copy_files(repo: Path, worktree: bool) -> None:
    if not worktree:
        archive = subprocess.run(["git", "archive", "HEAD", *COPIED], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
        return
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "--", *COPIED], cwd=ROOT, capture_output=True, text=True
    )
    for name in listed.stdout.splitlines():
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)


def set_params(params: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Apply dotted-key overrides (``data.synthetic_ar``) to a params dict in place.

    Raises:
        KeyError: a key that params.yaml does not have (a typo must not run silently).
    """
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise KeyError(f"params.yaml has no key {dotted}")
        node[leaf] = value


def copy_env(repo: Path, threads: int = 1) -> dict[str, str]:
    """The environment the copy's commands run in: its own ``trade_agent``, ``threads`` threads."""
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(repo),  # this copy's trade_agent, not the editable install
    }


def init_copy(repo: Path, env: dict[str, str]) -> None:
    """Make the copied files one commit of a fresh git + DVC repository."""
    commit = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "init"]
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], commit):
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{repo}: {' '.join(command)} failed:\n{done.stderr[-3000:]}")


def run_pipeline(repo: Path, overrides: dict[str, Any], worktree: bool = False, threads: int = 1) -> Path:
    """``dvc repro`` of a fresh copy at ``repo`` with ``overrides``; returns ``repo``.

    Resumable: a copy whose ``metrics/evaluate.json`` exists is returned as it is.
    ``threads``: torch/OpenMP threads per stage process (1: stable under load on 2 cores).
    """
    if (repo / "metrics" / "evaluate.json").is_file():
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    _copy_files(repo, worktree)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    set_params(params, overrides)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = copy_env(repo, threads)
    init_copy(repo, env)
    done = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{repo}: dvc repro failed:\n{done.stderr[-3000:]}")
    return repo


def read_metrics(repo: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((repo / name).read_text())
    return result
