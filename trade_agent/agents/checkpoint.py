"""Resumable SB3 training without pickle.

A checkpoint directory (outside the DVC outputs, under ``models/temp/<algo>/<inputs hash>``)
holds ``state.pt`` (every network and optimiser state dict, SAC's entropy coefficient,
the counters and the best validation policy so far, all tensors or plain values, read
with ``weights_only=True``), ``state.json`` (counters and the evaluation history) and, for
SAC/TD3, ``buffer.npz`` with the filled part of the replay buffer. SB3's own ``save``
would cloudpickle the buffer and the schedules; none of that is needed to resume.

Checkpoints are taken at the start of a rollout, i.e. right after a gradient update, so
a resumed run repeats no update and loses only the unfinished rollout. The episode that
was running restarts (the environment is reset), so a resumed run is close to, not
bit-identical with, an uninterrupted one.
"""

from __future__ import annotations

import logging
import operator
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from trade_agent.agents.evaluation import ValSharpeCallback
from trade_agent.errors import IntegrityError
from trade_agent.io import atomic_dir, read_json, read_npz, write_json, write_npz

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
STATE_JSON = "state.json"
BUFFER_FILE = "buffer.npz"
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _torch_variables(model: BaseAlgorithm) -> list[str]:
    return list(model._get_torch_save_params()[1])


def save_checkpoint(model: BaseAlgorithm, selector: ValSharpeCallback, directory: Path) -> None:
    """Write the checkpoint of ``model`` and its val-Sharpe selector (atomically, as a whole)."""
    state: dict[str, Any] = {
        "parameters": model.get_parameters(),
        "variables": {name: operator.attrgetter(name)(model).detach().clone() for name in _torch_variables(model)},
        "best_state": selector.best_state,
        "torch_rng": torch.get_rng_state(),
    }
    counters = {
        "num_timesteps": model.num_timesteps,
        "n_updates": getattr(model, "_n_updates", 0),
        "episode_num": model._episode_num,
        "best_sharpe": selector.best_sharpe if np.isfinite(selector.best_sharpe) else None,
        "best_step": selector.best_step,
        "next_evaluation": selector.next_evaluation,
        "history": selector.history,
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(directory) as tmp:
        torch.save(state, tmp / STATE_FILE)
        if isinstance(model, OffPolicyAlgorithm) and isinstance(model.replay_buffer, ReplayBuffer):
            buffer = model.replay_buffer
            filled = buffer.buffer_size if buffer.full else buffer.pos
            write_npz(tmp / BUFFER_FILE, {name: getattr(buffer, name)[:filled] for name in BUFFER_ARRAYS})
            counters |= {"buffer_pos": buffer.pos, "buffer_full": buffer.full}
        write_json(tmp / STATE_JSON, counters)


def load_checkpoint(model: BaseAlgorithm, selector: ValSharpeCallback, directory: Path) -> int:
    """Restore ``model`` and ``selector`` from ``directory``; returns the resumed timestep.

    Raises:
        IntegrityError: the checkpoint does not fit this model (other network sizes or spaces).
    """
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    counters = read_json(directory / STATE_JSON)
    try:
        model.set_parameters(state["parameters"], exact_match=True)
        with torch.no_grad():
            for name, value in state["variables"].items():
                operator.attrgetter(name)(model).copy_(value)
        if isinstance(model, OffPolicyAlgorithm) and (directory / BUFFER_FILE).is_file():
            buffer = model.replay_buffer
            assert isinstance(buffer, ReplayBuffer)
            arrays = read_npz(directory / BUFFER_FILE)
            for name in BUFFER_ARRAYS:
                target = getattr(buffer, name)
                target[: len(arrays[name])] = arrays[name]
            buffer.pos, buffer.full = int(counters["buffer_pos"]), bool(counters["buffer_full"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise IntegrityError(
            f"{directory}: checkpoint does not fit this agent ({exc}); delete the directory or pass resume=False"
        ) from exc
    torch.set_rng_state(state["torch_rng"])
    model.num_timesteps = int(counters["num_timesteps"])
    model._episode_num = int(counters["episode_num"])
    if hasattr(model, "_n_updates"):
        model._n_updates = int(counters["n_updates"])
    selector.best_state = state["best_state"]
    selector.best_sharpe = counters["best_sharpe"] if counters["best_sharpe"] is not None else -np.inf
    selector.best_step = int(counters.get("best_step", -1))
    selector.next_evaluation = int(counters["next_evaluation"])
    selector.history = list(counters["history"])
    return model.num_timesteps


def has_checkpoint(directory: Path | None) -> bool:
    return directory is not None and (directory / STATE_JSON).is_file()


def clear_checkpoint(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class CheckpointCallback(BaseCallback):
    """Checkpoint every ``every`` environment steps, at the start of a rollout (after an update)."""

    def __init__(self, directory: Path, every: int, selector: ValSharpeCallback) -> None:
        super().__init__()
        self.directory, self.every, self.selector = directory, every, selector
        self._last = 0
        self.saved = 0

    def _on_training_start(self) -> None:
        self._last = self.model.num_timesteps

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps - self._last >= self.every:
            save_checkpoint(self.model, self.selector, self.directory)
            self._last = self.model.num_timesteps
            self.saved += 1
            log.debug("checkpoint at step %d -> %s", self.model.num_timesteps, self.directory)

    def _on_step(self) -> bool:
        return True
