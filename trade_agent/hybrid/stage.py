"""Train and register stage-3 hybrids (library side of the ``hybrid@<algo>`` stage).

A hybrid starts as the stage-2 agent with the stage-1 encoder computing its embeddings
live (see :mod:`trade_agent.hybrid.model`), then fine-tunes with the agent's algorithm
through the same loop as the agents (:func:`trade_agent.agents.train.train_agent`:
val-Sharpe selection, resumable checkpoints, after-cost test metrics).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from trade_agent.agents.factory import build_agent
from trade_agent.agents.policy_io import POLICY_FILE
from trade_agent.agents.train import AgentRun, register_agent, registered_settings, simulator_config, train_agent
from trade_agent.cnn_lstm.store import PREPROCESSOR_DIR, load_cnn_lstm
from trade_agent.config import Params
from trade_agent.errors import ConfigError
from trade_agent.hybrid.model import (
    EXTRACTOR_NAME,
    CNNLSTMExtractor,
    EncoderWarmup,
    attach_panels,
    extractor_kwargs,
    load_encoder,
    set_encoder_trainable,
    split_encoder_learning_rate,
    warm_start_heads,
)
from trade_agent.io import read_json, write_json
from trade_agent.market.panel import split_panels
from trade_agent.market.simulator import MarketPanel, SimulatorConfig
from trade_agent.registry import ModelRegistry

log = logging.getLogger(__name__)

HYBRID_SPEC = "hybrid.json"


def hybrid_panels(features_dir: Path, market_path: Path, sequence_length: int) -> dict[str, MarketPanel]:
    """Raw scaled feature panels with the encoder's window (no precomputed embeddings)."""
    return split_panels(features_dir, None, market_path, sequence_length)


class HybridBuilder:
    """Makes the hybrid SB3 model on an env: encoder from stage 1, heads from stage 2."""

    def __init__(self, algo: str, params: Params, cnn_lstm_dir: Path, agent_dir: Path) -> None:
        self.algo, self.params = algo, params
        self.encoder, self.cnn_lstm_config = load_cnn_lstm(cnn_lstm_dir)
        self.agent_state = torch.load(agent_dir / POLICY_FILE, map_location="cpu", weights_only=True)
        agent_spec = read_json(agent_dir / "policy.json")
        if agent_spec["algo"] != algo:
            raise ConfigError(f"{agent_dir}: is a {agent_spec['algo']} agent; a {algo} hybrid needs a {algo} agent")
        self.observation: dict[str, Any] | None = agent_spec.get("observation")
        self.window = int(self.observation["window"]) if self.observation else params.rl.common.window
        self.sequence_length = self.encoder.spec.sequence_length
        if self.window > self.sequence_length:
            raise ConfigError(
                f"rl.common.window {self.window} exceeds the CNN-LSTM's sequence length "
                f"{self.sequence_length}; a hybrid needs window <= sequence_length"
            )
        self.copied: list[str] = []
        self.skipped: list[str] = []
        self.panels: dict[str, MarketPanel] = {}  # splits whose embeddings are computed in batch

    def sim(self) -> SimulatorConfig:
        return replace(simulator_config(self.params), window=self.sequence_length)

    def extractor_spec(self, n_assets: int) -> dict[str, Any]:
        return {
            "name": EXTRACTOR_NAME,
            "kwargs": extractor_kwargs(self.cnn_lstm_config, n_assets, self.window, self.observation),
            "shared": self.algo == "ppo" or self.params.hybrid.off_policy_encoder == "shared",
        }

    def __call__(self, env: VecEnv) -> tuple[BaseAlgorithm, list[BaseCallback]]:
        hybrid = self.params.hybrid
        n_assets = env.action_space.shape[0] if env.action_space.shape else len(env.action_space.nvec)  # type: ignore[attr-defined]
        spec = self.extractor_spec(n_assets)
        policy_kwargs: dict[str, Any] = {
            "features_extractor_class": CNNLSTMExtractor,
            "features_extractor_kwargs": spec["kwargs"],
        }
        if self.algo != "ppo":
            policy_kwargs["share_features_extractor"] = spec["shared"]
        model = build_agent(
            self.algo,
            env,
            self.params.rl,
            self.params.base.seed,
            policy_kwargs=policy_kwargs,
            learning_rate=hybrid.learning_rate,
        )
        load_encoder(model.policy, self.encoder.state_dict())
        self.copied, self.skipped = warm_start_heads(model.policy, self.agent_state)
        if self.skipped:
            log.warning(
                "hybrid: %d stage-2 tensors did not fit and were not copied: %s", len(self.skipped), self.skipped[:3]
            )
        callbacks: list[BaseCallback] = []
        if self.algo == "ppo":
            split_encoder_learning_rate(model, hybrid.learning_rate, hybrid.encoder_learning_rate)
            callbacks.append(EncoderWarmup(hybrid.freeze_encoder_steps))
        elif hybrid.off_policy_encoder == "frozen":
            set_encoder_trainable(model.policy, False)
        else:
            callbacks.append(EncoderWarmup(hybrid.freeze_encoder_steps))
        # After the freeze: the warm-up's rollouts, minibatches and evaluations look them up.
        attach_panels(model.policy, [panel.features for panel in self.panels.values()])
        return model, callbacks


def train_hybrid(
    algo: str,
    params: Params,
    features_dir: Path,
    market_path: Path,
    cnn_lstm_dir: Path,
    agent_dir: Path,
    out_dir: Path,
    metrics_path: Path | None = None,
    *,
    plots_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    tensorboard: str | None = None,
) -> AgentRun:
    """Fine-tune a hybrid of ``cnn_lstm_dir`` and ``agent_dir``; writes ``out_dir``."""
    builder = HybridBuilder(algo, params, cnn_lstm_dir, agent_dir)
    panels = hybrid_panels(features_dir, market_path, builder.sequence_length)
    builder.panels = panels
    spec = builder.extractor_spec(panels["train"].n_assets)
    run = train_agent(
        algo,
        params,
        panels,
        out_dir,
        metrics_path,
        plots_path=plots_path,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        tensorboard=tensorboard,
        sim=builder.sim(),
        build=builder,
        total_timesteps=params.hybrid.total_timesteps,
        features_extractor=spec,
    )
    write_json(
        out_dir / HYBRID_SPEC,
        {
            "algo": algo,
            "sequence_length": builder.sequence_length,
            "window": builder.window,
            "feature_names": builder.cnn_lstm_config["feature_names"],
            "preprocessor_id": builder.cnn_lstm_config["preprocessor_id"],
            "warm_started_tensors": len(builder.copied),
            "hybrid": asdict(params.hybrid),
        },
    )
    # The encoder's own preprocessor travels with the hybrid, for inference on new data.
    preprocessor = out_dir / PREPROCESSOR_DIR
    if preprocessor.exists():
        shutil.rmtree(preprocessor)
    shutil.copytree(cnn_lstm_dir / PREPROCESSOR_DIR, preprocessor)
    return run


def register_hybrid(run: AgentRun, params: Params, cnn_lstm_dir: Path, agent_dir: Path, registry: ModelRegistry) -> str:
    """Register a hybrid with lineage to the exact CNN-LSTM and stage-2 agent it started from."""
    agent_run = AgentRun(run.algo, agent_dir, read_json(agent_dir / "metrics.json"), 0.0)
    agent_id = register_agent(agent_run, params, cnn_lstm_dir, registry)  # existing id when known
    cnn_lstm_id = registry.get_model(agent_id).dependencies[0]
    spec = read_json(run.agent_dir / "policy.json")
    training_config = {
        "algo": run.algo,
        "hybrid": asdict(params.hybrid),
        "algo_params": asdict(getattr(params.rl, run.algo)),
        **registered_settings(params),
        "seed": params.base.seed,
        "interface": {
            "observation_space": spec["observation_space"]["shape"],
            "action_space": spec["action_space"],
            "window": params.rl.common.window,
            "sequence_length": read_json(run.agent_dir / HYBRID_SPEC)["sequence_length"],
        },
    }
    return registry.register_model(
        "hybrid",
        run.agent_dir,
        None,
        training_config,
        run.metrics,
        {
            "cnn_lstm": cnn_lstm_id,
            "agent": agent_id,
            "preprocessor_id": read_json(run.agent_dir / HYBRID_SPEC)["preprocessor_id"],
        },
        dependencies=[cnn_lstm_id, agent_id],
        training_duration=round(run.duration_s, 3),
    )
