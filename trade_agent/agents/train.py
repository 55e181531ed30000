"""Train one stage-2 agent end to end on the stage-1 outputs (library side of the ``rl`` stage).

Reads ``features.parquet`` (scaled features, splits), the ``embed`` outputs and the
prepared bars; trains on the train split, keeps the policy with the best validation
Sharpe, and reports after-cost test metrics. Writes the agent directory: ``model.zip``
(SB3's own format, for ``PPO.load`` users), ``policy.pt`` + ``policy.json`` (the
pickle-free form the registry loads) and ``metrics.json``; the test equity curve goes to
a separate plots file (``dvc plots``). Training checkpoints live outside the outputs, under
``models/temp/<algo>/<inputs hash>``, so a killed run resumes (see :mod:`.checkpoint`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from trade_agent.agents.checkpoint import CheckpointCallback, clear_checkpoint, has_checkpoint, load_checkpoint
from trade_agent.agents.evaluation import ValSharpeCallback, episode_metrics, evaluate, run_episode
from trade_agent.agents.factory import build_agent, net_arch
from trade_agent.agents.policy_io import SB3_ZIP, save_policy, save_sb3_zip
from trade_agent.agents.warm_start import clone_policy, demonstrations
from trade_agent.cnn_lstm.model import PROBABILITY_COLUMNS, threshold_weights
from trade_agent.cnn_lstm.registration import register_cnn_lstm
from trade_agent.config import Params
from trade_agent.errors import TrainingInterrupted
from trade_agent.evaluation.suite import sharpe_bounds
from trade_agent.io import atomic_path, read_json, run_key, write_json
from trade_agent.market.observation import Observation, ObservationSpec
from trade_agent.market.panel import split_panels
from trade_agent.market.simulator import MarketPanel, SimulatorConfig
from trade_agent.market.trading_env import VecPortfolioEnv
from trade_agent.progress import Progress
from trade_agent.registry import ModelRegistry
from trade_agent.threads import apply_thread_plan, planned_threads

log = logging.getLogger(__name__)
Builder = Callable[[VecEnv], tuple[BaseAlgorithm, list[BaseCallback]]]


@dataclass
class AgentRun:
    """Result of :func:`train_agent`."""

    algo: str
    agent_dir: Path
    metrics: dict[str, float]
    duration_s: float
    resumed_from: int = 0


def simulator_config(params: Params) -> SimulatorConfig:
    return SimulatorConfig.from_common(params.rl.common)


def load_panels(
    params: Params, features_dir: Path, embeddings_path: Path | None, market_path: Path
) -> dict[str, MarketPanel]:
    """Train, val and test panels from the stage outputs, with the agents' window."""
    return split_panels(features_dir, embeddings_path, market_path, params.rl.common.window)


def checkpoint_dir_for(
    root: Path, algo: str, params: Params, input_files: list[Path], extra: dict[str, Any] | None = None
) -> Path:
    """``root/<algo>/<run key>``: where an agent's (or, with ``extra=`` the hybrid section, a
    hybrid's) resumable training state lives; ``input_files`` are what the run trains on."""
    settings = {
        "algo": algo,
        "common": asdict(params.rl.common),
        "algo_params": asdict(getattr(params.rl, algo)),
        "seed": params.base.seed,
        "extra": extra or {},
    }
    return root / (f"hybrid_{algo}" if extra else algo) / run_key(settings, input_files)


def train_agent(
    algo: str,
    params: Params,
    panels: dict[str, MarketPanel],
    agent_dir: Path,
    metrics_path: Path | None = None,
    *,
    plots_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    keep_checkpoints: bool = False,
    tensorboard: str | None = None,
    sim: SimulatorConfig | None = None,
    build: Builder | None = None,
    total_timesteps: int | None = None,
    features_extractor: dict[str, Any] | None = None,
    on_evaluate: Callable[[int, float], None] | None = None,
    evaluate_test: bool = True,
) -> AgentRun:
    """Train ``algo`` on ``panels['train']``, select by validation Sharpe, evaluate on test.

    Args:
        plots_path: TSV of the test equity curve (``step``, ``equity``) for ``dvc plots``.
        checkpoint_dir: where resumable checkpoints go (none without it); an existing
            checkpoint there is resumed unless ``resume`` is false, and the directory is
            removed after success unless ``keep_checkpoints``.
        tensorboard: directory for SB3's TensorBoard logs.
        sim: execution settings (default: from ``rl.common``).
        build: makes the model (and extra callbacks) on the training env, e.g. a hybrid;
            default: a fresh agent from the ``rl.<algo>`` params.
        total_timesteps: default ``rl.<algo>.total_timesteps``.
        features_extractor: recorded in ``policy.json`` (hybrids).
        on_evaluate: receives (step, val Sharpe) at each validation evaluation (Optuna pruning).
        evaluate_test: ``False`` leaves the test split untouched (hyperparameter search).
    """
    started = time.perf_counter()
    threads = apply_thread_plan(params.base.threads, "policy")
    config, sim = params.rl, sim or simulator_config(params)
    algo_config = getattr(config, algo)
    discrete = config.common.discrete
    raw_train = panels["train"]
    observation: Observation | None = None
    if build is None:  # a hybrid's extractor builds (and normalises) its observation itself
        observation = Observation.fit(observation_spec(params), raw_train)
        panels = {split: observation.apply(panel) for split, panel in panels.items()}
    env = VecPortfolioEnv(panels["train"], sim, n_envs=algo_config.n_envs, discrete=discrete, seed=params.base.seed)
    callbacks: list[BaseCallback] = []
    if build is None:
        model = build_agent(algo, env, config, seed=params.base.seed, tensorboard=tensorboard)
    else:
        model, extra = build(env)
        callbacks.extend(extra)
    resuming = checkpoint_dir is not None and resume and has_checkpoint(checkpoint_dir)
    warm = build is not None  # hybrids start as their stage-2 agent
    if build is None and config.common.warm_start and not resuming:
        warm = _warm_start(model, params, raw_train, panels["train"], observation, sim, discrete)
    selector = ValSharpeCallback(
        panels["val"],
        sim,
        config.common.eval_freq,
        discrete,
        on_evaluate,
        margin=config.common.selection_margin,
        evaluate_at_start=warm,
    )
    callbacks.insert(0, selector)
    resumed_from = 0
    if checkpoint_dir is not None:
        if not resume:
            clear_checkpoint(checkpoint_dir)
        elif resuming:
            resumed_from = load_checkpoint(model, selector, checkpoint_dir)
            log.info("%s: resuming from %s at step %d", algo, checkpoint_dir, resumed_from)
        callbacks.append(CheckpointCallback(checkpoint_dir, config.common.checkpoint_freq, selector))
    total = total_timesteps or algo_config.total_timesteps
    remaining = max(total - resumed_from, 0)
    with Progress(algo, total, "steps", done=resumed_from) as progress:
        callbacks.append(ProgressCallback(progress))
        try:
            model.learn(
                total_timesteps=remaining, callback=callbacks, reset_num_timesteps=resumed_from == 0, tb_log_name=algo
            )
        except KeyboardInterrupt:
            saved = has_checkpoint(checkpoint_dir)
            resumes = (
                f"the checkpoint in {checkpoint_dir} resumes on the next run" if saved else "the next run starts over"
            )
            raise TrainingInterrupted(f"{algo}: interrupted at step {model.num_timesteps}/{total}; {resumes}") from None
    if selector.best_state is not None:
        model.policy.load_state_dict(selector.best_state)

    def predict(obs: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(obs, deterministic=True)[0])

    # The selected policy on val (its Sharpe is the selection score) and, once, on test.
    metrics = {f"val/{k}": v for k, v in evaluate(predict, panels["val"], sim, discrete).items()}
    # 0 with a warm start: validation kept the starting (cloned) policy; RL found nothing clearly better.
    metrics["train/selected_step"] = float(selector.best_step)
    metrics["periods_per_year"] = float(panels["val"].periods_per_year)  # what val/ and test/ are annualised with
    metrics["threads"] = float(threads)  # how it ran (the thread plan), not a result
    returns = np.zeros(0)
    if evaluate_test:
        episode = run_episode(predict, panels["test"], sim, discrete)
        returns = episode.returns
        metrics |= {f"test/{k}": v for k, v in episode_metrics(episode, panels["test"].periods_per_year).items()}
        metrics["test/total_reward"] = float(episode.total_reward)
        # The registry grades the bootstrap lower bound too (docs/grading.md).
        bounds = sharpe_bounds(episode.returns, params.evaluate, params.base.seed, panels["test"].periods_per_year)
        metrics |= {f"test/{k}": v for k, v in bounds.items()}
    agent_dir.mkdir(parents=True, exist_ok=True)
    save_policy(
        model,
        algo,
        net_arch(config, algo),
        agent_dir,
        features_extractor=features_extractor,
        observation=observation.to_json() if observation is not None else None,
    )
    save_sb3_zip(model, agent_dir / SB3_ZIP)
    write_json(agent_dir / "metrics.json", metrics)
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    if plots_path is not None and evaluate_test:
        equity = pd.DataFrame({"step": np.arange(1, len(returns) + 1), "equity": np.cumprod(1.0 + returns)})
        plots_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(plots_path) as tmp:
            equity.to_csv(tmp, sep="\t", index=False, float_format="%.6f")
    if checkpoint_dir is not None and not keep_checkpoints:
        clear_checkpoint(checkpoint_dir)
    duration = time.perf_counter() - started
    log.info(
        "%s: val/sharpe %.3f, test/sharpe %.3f (%.1f s)",
        algo,
        metrics["val/sharpe"],
        metrics.get("test/sharpe", float("nan")),
        duration,
    )
    return AgentRun(algo, agent_dir, metrics, duration, resumed_from)


class ProgressCallback(BaseCallback):
    """Timesteps into a :class:`Progress` (bar on a terminal, periodic lines otherwise)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self._every = max(progress.total // 200, 1)  # _on_step runs every env step: update in 0.5 % steps
        self._last = progress.done

    def _on_step(self) -> bool:
        if self.model.num_timesteps - self._last >= self._every:
            self._last = self.model.num_timesteps
            self.progress.update(self._last)
        return True

    def _on_training_end(self) -> None:
        self.progress.update(self.model.num_timesteps)


def registered_settings(params: Params) -> dict[str, Any]:
    """``common`` and ``runtime`` of an agent's training_config: the thread count is how the
    run was executed, not a hyperparameter, so it does not move the version."""
    return {"common": asdict(params.rl.common), "runtime": {"threads": planned_threads(params.base.threads, "policy")}}


def observation_spec(params: Params) -> ObservationSpec:
    common = params.rl.common
    return ObservationSpec(tuple(common.features), common.embedding, common.window)


def _warm_start(
    model: BaseAlgorithm,
    params: Params,
    raw_train: MarketPanel,
    train: MarketPanel,
    observation: Observation | None,
    sim: SimulatorConfig,
    discrete: bool,
) -> bool:
    """Behaviour-clone ``model`` to the stage-1 threshold policy; False when the panels hold
    no CNN-LSTM probabilities to clone (the agent then starts from scratch)."""
    if observation is None or not all(c in raw_train.context_names for c in PROBABILITY_COLUMNS):
        log.warning("rl.common.warm_start: the observation holds no CNN-LSTM probabilities; starting from scratch")
        return False
    index = [raw_train.context_names.index(c) for c in PROBABILITY_COLUMNS]
    common = params.rl.common
    targets = threshold_weights(raw_train.context[:, :, index], params.evaluate.cnn_lstm_threshold, common.max_leverage)
    steps = 8 * train.n_bars
    observations, actions = demonstrations(train, targets, sim, n_envs=8, steps=steps, seed=params.base.seed)
    clone_policy(model, observations, actions, discrete=discrete, seed=params.base.seed)
    return True


def register_agent(
    run: AgentRun, params: Params, cnn_lstm_dir: Path, registry: ModelRegistry, tags: list[str] | None = None
) -> str:
    """Register an agent with lineage to the exact CNN-LSTM (and its preprocessor) it saw
    (``tags``: e.g. ``optimize:<study>:<trials>``)."""
    cnn_lstm_id = register_cnn_lstm(cnn_lstm_dir, params, registry)  # existing id: content is known
    spec = read_json(run.agent_dir / "policy.json")
    algo_params = asdict(getattr(params.rl, run.algo))
    training_config = {
        **{k: v for k, v in algo_params.items()},
        **registered_settings(params),
        "seed": params.base.seed,
        "interface": {
            "observation_space": spec["observation_space"]["shape"],
            "action_space": spec["action_space"],
            "window": params.rl.common.window,
            "discrete": params.rl.common.discrete,
        },
    }
    return registry.register_model(
        run.algo,
        run.agent_dir,
        None,
        training_config,
        run.metrics,
        {"cnn_lstm": cnn_lstm_id, "preprocessor_id": read_json(cnn_lstm_dir / "config.json")["preprocessor_id"]},
        dependencies=[cnn_lstm_id],
        training_duration=round(run.duration_s, 3),
        tags=tags,
    )
