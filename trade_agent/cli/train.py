"""``trade-agent train ...``: train models from a data file."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from trade_agent import paths
from trade_agent.cli.backtest import ParamsOption, benchmark
from trade_agent.cli.models import info, list_models
from trade_agent.cli.tables import make_console
from trade_agent.cli.train_composite import ensemble, hybrid
from trade_agent.config.rl import ALGOS
from trade_agent.errors import InputError, TradeAgentError
from trade_agent.log import setup_logging

if TYPE_CHECKING:  # the API (torch, SB3) loads only when a command trains: `--help` stays fast
    from trade_agent.training.unified_manager import TrainingResult

train_app = typer.Typer(
    no_args_is_help=True,
    help="Train models: CNN-LSTM (stage 1), RL agents (2), hybrids (3), ensembles (4); list, info, benchmark.",
)
console = make_console()


def print_metrics(result: "TrainingResult") -> None:
    """val/test metrics side by side."""
    table = Table(title=f"{result.model_type} -> {result.model_path}")
    table.add_column("metric")
    table.add_column("val", justify="right")
    table.add_column("test", justify="right")
    names = sorted({k.split("/", 1)[1] for k in result.metrics if "/" in k})
    for name in names:
        values = (result.metrics.get(f"{split}/{name}") for split in ("val", "test"))
        table.add_row(name, *("-" if v is None else f"{v:.4f}" for v in values))
    console.print(table)


ResumeOption = Annotated[bool, typer.Option(help="Resume an interrupted run of the same inputs.")]
OptimizeOption = Annotated[
    bool, typer.Option(help="Optuna search (space and per-trial budget: params.yaml optimize:), then train the best.")
]
TrialsOption = Annotated[int, typer.Option(min=1, help="Finished trials the study should hold (--optimize).")]
TimeoutOption = Annotated[float | None, typer.Option(help="Stop searching after this many seconds (--optimize).")]
StorageOption = Annotated[
    str | None,
    typer.Option(help="Optuna storage URL (default: sqlite models/optuna/studies.db), e.g. postgresql://..."),
]
JobsOption = Annotated[int, typer.Option(min=1, help="Search worker processes sharing the study (--optimize).")]
StudyOption = Annotated[str | None, typer.Option(help="Study name (default: derived from stage, data and space).")]


def _search_extras(timeout: float | None, storage: str | None, n_jobs: int, study_name: str | None) -> dict[str, Any]:
    extras: dict[str, Any] = {"n_jobs": n_jobs}
    for key, value in (("timeout", timeout), ("storage", storage), ("study_name", study_name)):
        if value is not None:
            extras[key] = value
    return extras


NoDvcOption = Annotated[
    bool,
    typer.Option(
        "--no-dvc", help="Train in-process even inside a DVC project (default there: a `dvc exp run --temp`)."
    ),
]


def _print_experiment(root: Path, model_type: str, result: Any, as_json: bool) -> None:
    """The model a DVC experiment produced (trained, or restored from the run-cache)."""
    from trade_agent.registry import ModelRegistry

    entry = ModelRegistry(root / "models").get_model(result.model_id)
    how = "restored from the run-cache (nothing trained, nothing new registered)" if result.cached else "trained"
    if as_json:
        payload = {
            "experiment": result.name,
            "cached": result.cached,
            "model_id": entry.model_id,
            "performance_grade": entry.performance_grade,
            "metrics": entry.metrics,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    out = str(paths.pipeline_model(model_type))
    from trade_agent.training.unified_manager import TrainingResult

    print_metrics(TrainingResult(result.name, model_type, "completed", model_path=out, metrics=entry.metrics))
    console.print(
        f"experiment [bold]{result.name}[/]: {how}; model [bold]{entry.model_id}[/] (grade {entry.performance_grade})"
    )
    console.print(f"`dvc exp show` lists it; `dvc exp apply {result.name}` brings its params into the workspace")


def _finish(result: "TrainingResult", as_json: bool) -> None:
    if result.status != "completed":
        raise result.exception or TradeAgentError(result.error_message or "training failed")
    if result.model_id is None:  # a multi-node run's other nodes
        message = "this node's ranks finished; node 0 writes and registers the model"
        typer.echo(json.dumps({"model_id": None, "message": message})) if as_json else console.print(message)
        return
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model_id": result.model_id,
                    "model_path": result.model_path,
                    "performance_grade": result.performance_grade,
                    "metrics": result.metrics,
                },
                indent=2,
            )
        )
    else:
        print_metrics(result)
        console.print(f"registered [bold]{result.model_id}[/] (grade {result.performance_grade})")


def _batch_size(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise typer.BadParameter(f"'{value}' is not a positive integer or auto")
    return int(value)


def cnn_lstm_enhanced(
    data: Annotated[str, typer.Argument(help="CSV/Parquet file, a `data pipeline -r` dataset dir, or 'sample'.")],
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (default: params.yaml).")] = None,
    batch_size: Annotated[
        str | None,
        typer.Option(
            callback=lambda v: _batch_size(v),
            help="Samples per step, or auto: the largest that fits in memory (default: params.yaml).",
        ),
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="AdamW learning rate (default: params.yaml).")] = None,
    sequence_length: Annotated[int | None, typer.Option(help="Input window in bars (default: params.yaml).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (default: params base.device).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (CUDA only).")] = None,
    fallback_to_cpu: Annotated[
        bool | None,
        typer.Option(
            "--fallback-to-cpu/--no-fallback-to-cpu", help="Train on CPU (with a warning) when CUDA fails to start."
        ),
    ] = None,
    resume: ResumeOption = True,
    output_dir: Annotated[Path, typer.Option(help="Working directory of this run.")] = Path("models/runs/cnn_lstm"),
    params_file: ParamsOption = None,
    optimize: OptimizeOption = False,
    n_trials: TrialsOption = 20,
    timeout: TimeoutOption = None,
    storage: StorageOption = None,
    n_jobs: JobsOption = 1,
    study_name: StudyOption = None,
    distributed: Annotated[
        bool, typer.Option(help="Several processes: DeepSpeed (default) or torchrun; settings: params distributed:.")
    ] = False,
    nproc: Annotated[
        int | None, typer.Option(min=1, help="Processes per node (default: one per GPU, 2 on CPU).")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="deepspeed or torchrun (--distributed).")] = None,
    zero_stage: Annotated[int | None, typer.Option(min=0, max=3, help="DeepSpeed ZeRO stage 0-3.")] = None,
    offload: Annotated[
        bool | None, typer.Option("--offload/--no-offload", help="ZeRO optimizer offload to host memory (CUDA).")
    ] = None,
    deepspeed_config: Annotated[
        Path | None, typer.Option(help="Your DeepSpeed JSON; its keys override the generated config.")
    ] = None,
    hostfile: Annotated[Path | None, typer.Option(help="DeepSpeed hostfile for several machines.")] = None,
    no_ssh: Annotated[
        bool | None,
        typer.Option("--no-ssh", help="With --hostfile: run on each machine with its --node-rank (no ssh/pdsh)."),
    ] = None,
    master_addr: Annotated[str | None, typer.Option(help="Rendezvous host of a multi-node run.")] = None,
    master_port: Annotated[int | None, typer.Option(help="Rendezvous port of a multi-node run.")] = None,
    nnodes: Annotated[int | None, typer.Option(min=1, help="Machines in a multi-node run.")] = None,
    node_rank: Annotated[int | None, typer.Option(min=0, help="This machine's index in a multi-node run.")] = None,
    retries: Annotated[
        int | None, typer.Option(min=0, help="Relaunches after a crash, each resuming from the last checkpoint.")
    ] = None,
    no_dvc: NoDvcOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train the stage-1 CNN-LSTM on DATA and print its validation and test metrics.

    Inside a DVC project this runs as a DVC experiment of the `cnn_lstm` stage (options
    become `-S` overrides; the workspace params.yaml is untouched); elsewhere, with
    `--no-dvc`, `--optimize` or `--params`, it trains in-process."""
    from trade_agent.config import load_params_or_defaults
    from trade_agent.experiments import project_for, train_as_experiment
    from trade_agent.training.unified_manager import TrainingConfig, UnifiedTrainingManager

    setup_logging()
    options: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "sequence_length": sequence_length,
        "device": device,
        "precision": precision,
        "fallback_to_cpu": fallback_to_cpu,
    }
    root = None if optimize or distributed or params_file else project_for("cnn_lstm", no_dvc)
    if root is not None:
        _print_experiment(root, "cnn_lstm", train_as_experiment(root, "cnn_lstm", data, options), as_json)
        return
    params = load_params_or_defaults(params_file)
    distributed_options = {
        "nproc": nproc,
        "backend": backend,
        "zero_stage": zero_stage,
        "offload": offload,
        "deepspeed_config": str(deepspeed_config) if deepspeed_config else None,
        "hostfile": str(hostfile) if hostfile else None,
        "no_ssh": no_ssh,
        "master_addr": master_addr,
        "master_port": master_port,
        "nnodes": nnodes,
        "node_rank": node_rank,
        "retries": retries,
    }
    given = {k: v for k, v in distributed_options.items() if v is not None}
    if given and not distributed:
        raise InputError(f"--{next(iter(given)).replace('_', '-')} needs --distributed")
    extra: dict[str, Any] = {"params": params, "resume": resume, **given}
    extra |= {
        k: v
        for k, v in options.items()
        if v is not None and k not in ("epochs", "batch_size", "learning_rate", "device")
    }
    if optimize:
        extra |= _search_extras(timeout, storage, n_jobs, study_name)
    config = TrainingConfig(
        "cnn_lstm",
        data,
        str(output_dir),
        epochs=epochs if epochs is not None else params.cnn_lstm.epochs,
        batch_size=batch_size if batch_size is not None else params.cnn_lstm.batch_size,
        learning_rate=learning_rate if learning_rate is not None else params.cnn_lstm.learning_rate,
        device=device,
        distributed=distributed,
        optimize_hyperparams=optimize,
        n_trials=n_trials,
        **extra,
    )
    _finish(UnifiedTrainingManager().train_model(config), as_json)


train_app.command("cnn-lstm-enhanced")(cnn_lstm_enhanced)
train_app.command("cnn-lstm", help="Alias of cnn-lstm-enhanced (the seed's original command).")(cnn_lstm_enhanced)


def _agent_command(algo: str) -> None:
    """Register ``train <algo>`` (one function per algorithm so each has its own help)."""

    def train_agent(
        data: Annotated[str, typer.Argument(help="CSV/Parquet file, a `data pipeline -r` dataset dir, or 'sample'.")],
        cnn_lstm_model: Annotated[
            str | None,
            typer.Option(
                help="Registered CNN-LSTM id (or prefix/@latest/@best) whose features and embeddings the agent "
                "uses, or 'new' to train one on DATA first. Omitted: choose from the registry (TTY) or 'new'."
            ),
        ] = None,
        timesteps: Annotated[int | None, typer.Option(min=1, help=f"Environment steps (default: rl.{algo}).")] = None,
        n_envs: Annotated[int | None, typer.Option(min=1, help=f"Parallel environments (default: rl.{algo}).")] = None,
        tensorboard: Annotated[Path | None, typer.Option(help="Write SB3 TensorBoard logs here.")] = None,
        resume: ResumeOption = True,
        output_dir: Annotated[Path | None, typer.Option(help="Working directory of this run.")] = None,
        params_file: ParamsOption = None,
        optimize: OptimizeOption = False,
        n_trials: TrialsOption = 20,
        timeout: TimeoutOption = None,
        storage: StorageOption = None,
        n_jobs: JobsOption = 1,
        study_name: StudyOption = None,
        distributed: Annotated[
            bool,
            typer.Option(
                help="Train the new CNN-LSTM (--cnn-lstm-model new) on several processes (params distributed:)."
            ),
        ] = False,
        no_dvc: NoDvcOption = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        from trade_agent.cli.selection import choose_upstream
        from trade_agent.config import load_params_or_defaults
        from trade_agent.experiments import project_for, train_as_experiment
        from trade_agent.registry import ModelRegistry
        from trade_agent.training.unified_manager import TrainingConfig, UnifiedTrainingManager

        setup_logging()
        params = load_params_or_defaults(params_file)
        registry = ModelRegistry("models", grading=params.grading)
        upstream = choose_upstream(registry, "cnn_lstm", None if cnn_lstm_model in (None, "new") else cnn_lstm_model)
        # The pipeline's own CNN-LSTM ('new') can run as a DVC experiment of the rl@<algo> stage.
        root = None if optimize or params_file or distributed or upstream != "new" else project_for("rl", no_dvc)
        if root is not None:
            result = train_as_experiment(root, algo, data, {"timesteps": timesteps, "n_envs": n_envs})
            _print_experiment(root, algo, result, as_json)
            return
        extra: dict[str, Any] = {"params": params, "resume": resume, "cnn_lstm_model": upstream}
        if optimize:
            extra |= _search_extras(timeout, storage, n_jobs, study_name)
        for key, value in (("timesteps", timesteps), ("n_envs", n_envs), ("tensorboard", tensorboard)):
            if value is not None:
                extra[key] = str(value) if key == "tensorboard" else value
        if cnn_lstm_model == "new":
            extra["cnn_lstm_model"] = "new"
        config = TrainingConfig(
            algo,
            data,
            str(output_dir or Path("models/runs") / algo),
            epochs=params.cnn_lstm.epochs,
            batch_size=params.cnn_lstm.batch_size,
            learning_rate=params.cnn_lstm.learning_rate,
            optimize_hyperparams=optimize,
            n_trials=n_trials,
            distributed=distributed,
            **extra,
        )
        _finish(UnifiedTrainingManager().train_model(config), as_json)

    train_agent.__doc__ = (
        f"Train a {algo.upper()} agent on DATA (stage 2) over a CNN-LSTM's features and embeddings, "
        "keep the policy with the best validation Sharpe, print after-cost test metrics and register it."
    )
    train_app.command(algo)(train_agent)


for _algo in ALGOS:
    _agent_command(_algo)


train_app.command("hybrid")(hybrid)
train_app.command("ensemble")(ensemble)
train_app.command("benchmark")(benchmark)
train_app.command("list")(list_models)
train_app.command("info")(info)
