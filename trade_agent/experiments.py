"""CLI trainings as DVC experiments.

Inside a git + DVC repository, ``trade-agent train <stage> ...`` becomes

    dvc exp run --temp -n <name> -S <key>=<value> ... [-C <data file>] <stage>

so the pipeline decides what to run or restore from its run-cache, the run shows up in
``dvc exp show`` and ``dvc exp apply <name>`` brings its params into the workspace, while
the workspace's own params.yaml is left alone (``--temp``). Stages register their models
as usual; the registry tags them with the experiment's name and baseline commit (DVC sets
``DVC_EXP_NAME`` / ``DVC_EXP_BASELINE_REV``). Afterwards the produced model is found by
content - also when every stage came from the cache and nothing new was registered.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from trade_agent import paths
from trade_agent.config import load_params_or_defaults
from trade_agent.data.ingest import resolve_data
from trade_agent.errors import TradeAgentError
from trade_agent.io import sha256_file
from trade_agent.registry import ModelRegistry
from trade_agent.registry.registry import RUN_SPECIFIC
from trade_agent.registry.store import dvc_cache_dir
from trade_agent.training.unified_manager import option_params
from trade_agent.tuning.study import apply_trial_params

log = logging.getLogger(__name__)

# Untracked data files are copied here (git-ignored, not a stage dep), then into the
# experiment with `dvc exp run -C` (which needs the directory to exist in git). The copy's
# name carries its content hash: `data.path` changes whenever the data does, so DVC never
# serves a stale result for an edited file.
COPIED_DATA_DIR = Path("data")


# A --temp experiment runs in <root>/.dvc/tmp/exps/<queue>/<tmpdir>/.
TEMP_WORKSPACE = re.compile(r"/\S*?/\.dvc/tmp/exps/[^/\s]+/[^/\s]+/")


class ExperimentFailed(TradeAgentError):
    """A stage of the experiment failed; the message is that stage's own error line."""


@dataclass
class ExperimentRequest:
    stage: str  # dvc.yaml target, e.g. cnn_lstm or rl@ppo
    out: str  # the stage output holding the model, e.g. models/pipeline/cnn_lstm
    model_type: str
    overrides: dict[str, Any] = field(default_factory=dict)
    copy_paths: list[str] = field(default_factory=list)
    name: str = ""


@dataclass
class ExperimentResult:
    name: str
    model_id: str
    cached: bool  # every stage was restored from the run-cache: nothing trained, nothing registered
    output: str


def repository_root(start: Path | None = None) -> Path | None:
    """The enclosing git + DVC project with a ``dvc.yaml``, if any."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".dvc").is_dir() and (candidate / "dvc.yaml").is_file():
            return candidate if (candidate / ".git").exists() else None
    return None


def has_stage(root: Path, stage: str) -> bool:
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    base = stage.split("@")[0]
    return base in stages


def data_overrides(data: str, root: Path) -> tuple[dict[str, Any], list[str]]:
    """``data.*`` overrides for DATA and the paths to copy into the temporary experiment.

    Raises:
        InputError: the file or dataset directory does not exist.
    """

    chosen = resolve_data(data)  # the same DATA rules (and errors) as an in-process run
    if chosen.source != "file" or chosen.path is None:
        return {"data.source": chosen.source}, []
    path = Path(chosen.path).resolve()
    if path.is_relative_to(root) and _tracked_by_git(root, path):
        return {"data.source": "file", "data.path": path.relative_to(root).as_posix()}, []
    target = root / COPIED_DATA_DIR / f"{path.stem}.{sha256_file(path)[:8]}{path.suffix}"
    if target.resolve() != path:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    relative = target.relative_to(root).as_posix()
    return {"data.source": "file", "data.path": relative}, [relative]


def _tracked_by_git(root: Path, path: Path) -> bool:
    listed = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=root, capture_output=True)
    return listed.returncode == 0


def set_param(key: str, value: Any) -> str:
    """One ``-S`` override in Hydra's grammar (lists as ``[a,b]``, strings quoted)."""
    return f"{key}={_hydra(value)}"


def _hydra(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


def experiment_name(stage: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"{stage.replace('@', '-').replace('_', '-')}-{stamp}"


def run_experiment(root: Path, request: ExperimentRequest) -> ExperimentResult:
    """Run the request as a temporary DVC experiment and find the model it produced.

    Raises:
        ExperimentFailed: a stage failed (its own one-line error) or DVC refused.
    """
    name = request.name or experiment_name(request.stage)
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", name]
    for key, value in request.overrides.items():
        command += ["-S", set_param(key, value)]
    for path in request.copy_paths:
        command += ["-C", path]
    command.append(request.stage)
    log.info("dvc experiment %s: %s", name, " ".join(command[3:]))
    returncode, output = _stream(command, root, _dvc_env())
    log.debug("dvc exp run output:\n%s", output)
    if returncode != 0:
        raise ExperimentFailed(_stage_error(output) or f"dvc exp run failed (exit {returncode}); see logs")
    cached = f"Running stage '{request.stage}'" not in output
    model_id = model_of_experiment(root, name, request)
    return ExperimentResult(name, model_id, cached, output)


def _dvc_env() -> dict[str, str]:
    # Stage commands say `python ...`: make it this interpreter, which has trade_agent installed.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path}


def reproduce(root: Path, *targets: str) -> None:
    """``dvc repro TARGETS`` in ``root``: the pipeline itself writes its outputs (or restores them).

    Raises:
        ExperimentFailed: a stage failed (its own one-line error) or DVC refused.
    """
    command = [sys.executable, "-m", "dvc", "repro", *targets]
    returncode, output = _stream(command, root, _dvc_env())
    log.debug("dvc repro output:\n%s", output)
    if returncode != 0:
        raise ExperimentFailed(_stage_error(output) or f"dvc repro failed (exit {returncode}); see logs")


def _stream(command: list[str], root: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ``dvc exp run``, relaying the stage's own log lines (epochs, progress) as they
    come instead of after minutes of silence; returns the exit code and the whole output."""
    lines: list[str] = []
    with subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            level, _, message = line.rstrip().partition(" ")
            if level in ("INFO", "WARNING") and message:  # the stage's plain log format
                log.log(logging.getLevelName(level), "%s", TEMP_WORKSPACE.sub("", message))
    return process.returncode, "".join(lines)


def _stage_error(output: str) -> str | None:
    """The failing stage's own one-line error (stages print ``error: ...``), else DVC's."""
    ours = [line[len("error: ") :] for line in output.splitlines() if line.startswith("error: ")]
    if ours:
        return TEMP_WORKSPACE.sub("", ours[-1])  # name files as the user knows them
    dvc = [line[len("ERROR:") :].strip() for line in output.splitlines() if line.startswith("ERROR:")]
    return TEMP_WORKSPACE.sub("", dvc[-1]) if dvc else None


def _experiment_ref(root: Path, name: str) -> str:
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=root, capture_output=True, text=True
    ).stdout.split()
    matches = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    if not matches:
        raise ExperimentFailed(f"experiment {name} finished but left no git ref; see `dvc exp show`")
    return matches[-1]


def model_of_experiment(root: Path, name: str, request: ExperimentRequest) -> str:
    """The registered model whose files are the experiment's output (by DVC md5)."""
    try:
        lock = yaml.safe_load(
            subprocess.run(
                ["git", "show", f"{_experiment_ref(root, name)}:dvc.lock"], cwd=root, capture_output=True, text=True
            ).stdout
        )
        outs = lock["stages"][request.stage]["outs"]
        digest = next(o["md5"] for o in outs if o["path"] == request.out)
        cache = dvc_cache_dir(root)
        assert cache is not None
        manifest = cache / "files" / "md5" / digest[:2] / digest[2:]
        files = {entry["relpath"]: entry["md5"] for entry in json.loads(manifest.read_text())}
    except (AssertionError, KeyError, TypeError, StopIteration, OSError, ValueError) as exc:
        raise ExperimentFailed(
            f"experiment {name}: cannot read its {request.out} from dvc.lock and the DVC cache ({exc}); "
            "see `dvc exp show`"
        ) from exc
    registry = ModelRegistry(root / "models")
    identity = {rel: md5 for rel, md5 in files.items() if rel not in RUN_SPECIFIC}
    for model in registry.list_models(request.model_type, include_archived=True):
        recorded = {rel: info["md5"] for rel, info in model.files.items() if rel not in RUN_SPECIFIC}
        if recorded == identity:
            return model.model_id
    raise ExperimentFailed(
        f"experiment {name}: its {request.out} is not in the registry; run `dvc repro -f -s {request.stage}` "
        "to register it"
    )


def project_for(stage: str, no_dvc: bool = False) -> Path | None:
    """The DVC project to run ``stage`` in as an experiment, or ``None`` for an in-process run."""
    if no_dvc:
        return None
    root = repository_root()
    return root if root is not None and has_stage(root, stage) else None


def train_as_experiment(root: Path, model_type: str, data: str, options: dict[str, Any]) -> ExperimentResult:
    """``trade-agent train <model_type> DATA [options]`` as a DVC experiment of the pipeline's stage.

    ``options`` use :class:`~trade_agent.training.unified_manager.TrainingConfig`'s names and
    become ``-S`` overrides through the same table as an in-process run; bad values fail here,
    before DVC starts.
    """

    stage = paths.STAGE_1 if model_type == paths.STAGE_1 else f"rl@{model_type}"
    out = paths.pipeline_model(model_type).as_posix()
    overrides, copy_paths = data_overrides(data, root)
    overrides |= option_params(model_type, options)
    apply_trial_params(load_params_or_defaults(root / "params.yaml"), overrides)
    return run_experiment(root, ExperimentRequest(stage, out, model_type, overrides, copy_paths))
