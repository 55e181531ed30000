"""``trade-agent train hybrid`` and ``train ensemble``: stages 3 and 4 from registered models."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from trade_agent import paths
from trade_agent.cli.backtest import ParamsOption
from trade_agent.cli.tables import make_console
from trade_agent.errors import InputError

console = make_console()
DataArgument = Annotated[str, typer.Argument(help="CSV/Parquet file, dataset dir, 'sample' or a market.parquet.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _report(model_id: str, metrics: dict[str, float], grade: str | None, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"model_id": model_id, "performance_grade": grade, "metrics": metrics}, indent=2))
        return
    shown = ("sharpe", "sharpe_ci_low", "total_return", "max_drawdown", "turnover", "ensemble_accuracy", "diversity")
    for split in ("val", "test"):
        values = ", ".join(f"{k} {metrics[f'{split}/{k}']:.3f}" for k in shown if f"{split}/{k}" in metrics)
        console.print(f"{split}: {values}")
    if "periods_per_year" in metrics:
        console.print(f"annualised with {metrics['periods_per_year']:,.0f} bars/year")
    console.print(f"registered [bold]{model_id}[/] (grade {grade})")


def hybrid(
    data: DataArgument,
    rl_model: Annotated[str, typer.Option("--rl-model", help="Registered stage-2 agent (ppo/sac/td3) to start from.")],
    cnn_lstm_model: Annotated[
        str | None,
        typer.Option(help="Its CNN-LSTM (default: the agent's own upstream; another one is refused)."),
    ] = None,
    timesteps: Annotated[
        int | None, typer.Option(min=1, help="Fine-tuning steps (default: hybrid.total_timesteps).")
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="Working directory of this run.")] = Path("models/runs/hybrid"),
    params_file: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stage 3: put the CNN-LSTM encoder inside the agent's policy (embeddings computed live,
    same actions as the agent before fine-tuning), fine-tune on DATA, register with lineage."""
    from dataclasses import asdict, replace

    from trade_agent.agents.train import checkpoint_dir_for
    from trade_agent.config import load_params_or_defaults
    from trade_agent.config.rl import ALGOS
    from trade_agent.data.ingest import prepared_market
    from trade_agent.evaluation.inference import Inference
    from trade_agent.hybrid.stage import register_hybrid, train_hybrid
    from trade_agent.log import setup_logging
    from trade_agent.registry import ModelRegistry

    setup_logging()
    params = load_params_or_defaults(params_file)
    if timesteps is not None:
        if timesteps <= params.hybrid.freeze_encoder_steps:
            raise InputError(
                f"--timesteps {timesteps} is not above hybrid.freeze_encoder_steps "
                f"({params.hybrid.freeze_encoder_steps}): the encoder would stay frozen for the whole run; pass more "
                "steps or lower hybrid.freeze_encoder_steps in params.yaml"
            )
        params = replace(params, hybrid=replace(params.hybrid, total_timesteps=timesteps))
    registry = ModelRegistry("models", grading=params.grading)
    agent = registry.get_model(rl_model)
    if agent.model_type not in ALGOS:
        raise InputError(f"--rl-model {agent.model_id}: is a {agent.model_type} model; pass a ppo, sac or td3 id")
    upstream = agent.dependencies[0]
    if cnn_lstm_model is not None and registry.resolve_id(cnn_lstm_model) != upstream:
        raise InputError(
            f"--cnn-lstm-model {cnn_lstm_model}: {agent.model_id} was trained on {upstream}'s embeddings; "
            "a hybrid must use that CNN-LSTM (omit the option)"
        )
    registry.check_upstream([agent.model_id])  # the agent and its CNN-LSTM, before any data work
    inference = Inference(
        registry,
        params,
        prepared_market(data, params, output_dir),
        output_dir,
    )
    cnn_lstm_dir, agent_dir = inference.restore(upstream), inference.restore(agent.model_id)
    features = inference.features_dir(cnn_lstm_dir)  # DATA scaled by the model's own preprocessor
    algo = agent.model_type
    run = train_hybrid(
        algo,
        params,
        features,
        inference.market,
        cnn_lstm_dir,
        agent_dir,
        output_dir / "model",
        output_dir / "metrics.json",
        checkpoint_dir=checkpoint_dir_for(
            paths.CHECKPOINTS,
            algo,
            params,
            [features / "features.parquet", agent_dir / "policy.pt"],
            asdict(params.hybrid),
        ),
    )
    model_id = register_hybrid(run, params, cnn_lstm_dir, agent_dir, registry)
    _report(model_id, run.metrics, registry.get_model(model_id).performance_grade, as_json)


def ensemble(
    data: DataArgument,
    models: Annotated[str, typer.Option("--models", help="Comma-separated registered agents/hybrids (two or more).")],
    method: Annotated[str | None, typer.Option(help="sharpe_softmax, majority_vote or rolling_best.")] = None,
    output_dir: Annotated[Path, typer.Option(help="Working directory of this run.")] = Path("models/runs/ensemble"),
    params_file: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stage 4: evaluate the members on DATA (each with its own preprocessing), weight them by
    validation Sharpe, backtest the combination on test, register with the members as dependencies."""
    from dataclasses import replace

    from trade_agent.config import load_params_or_defaults
    from trade_agent.config.rl import ALGOS
    from trade_agent.data.ingest import prepared_market
    from trade_agent.ensemble.combine import MemberRuns
    from trade_agent.ensemble.stage import Member, build_ensemble, register_ensemble
    from trade_agent.evaluation.inference import Inference
    from trade_agent.log import setup_logging
    from trade_agent.registry import ModelRegistry

    setup_logging()
    params = load_params_or_defaults(params_file)
    if method is not None:
        params = replace(params, ensemble=replace(params.ensemble, method=method))
    registry = ModelRegistry("models", grading=params.grading)
    ids = [registry.resolve_id(m.strip()) for m in models.split(",") if m.strip()]
    entries = [registry.get_model(i) for i in ids]
    wrong = [e.model_id for e in entries if e.model_type not in (*ALGOS, "hybrid", "ensemble")]
    if wrong:
        raise InputError(f"--models {wrong[0]}: ensembles combine agents and hybrids (a CNN-LSTM has no policy)")
    registry.check_upstream(ids)
    inference = Inference(
        registry,
        params,
        prepared_market(data, params, output_dir),
        output_dir,
    )
    runs: dict[str, Any] = {}
    for split in ("val", "test"):
        positions = [inference.positions(i, split) for i in ids]
        shapes = {p.weights.shape for p in positions}
        if len(shapes) > 1:
            raise InputError("the members see different bars or assets on this data; train them on the same symbols")
        first = positions[0]
        runs[split] = MemberRuns.backtested(
            [p.weights for p in positions], first.open, first.close, first.common, first.frequency.periods_per_year
        )
    members = [Member(e.model_id, e.model_type, e.model_id) for e in entries]
    run = build_ensemble(
        params.ensemble,
        members,
        runs["val"],
        runs["test"],
        positions[0].common,  # the loop's last split is test
        output_dir / "model",
        output_dir / "metrics.json",
        evaluate=params.evaluate,
        seed=params.base.seed,
    )
    model_id = register_ensemble(run, params, registry)
    _report(model_id, run.metrics, registry.get_model(model_id).performance_grade, as_json)
