"""The registered form of an SB3 agent: policy state dict + JSON, loadable without pickle.

SB3's ``.zip`` embeds cloudpickled objects; it is still written for users who want to
call ``PPO.load`` themselves on files they trust, but our code never loads it. The
registry's form is ``policy.pt`` (``torch.save`` of ``policy.state_dict()``, read with
``weights_only=True``) and ``policy.json`` (algorithm, spaces, network sizes) from which
the policy - or SB3's whole algorithm object, :func:`load_sb3_model` - is rebuilt.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy

from trade_agent.agents.factory import build_agent
from trade_agent.config.loader import from_mapping
from trade_agent.config.rl import RLConfig
from trade_agent.errors import DataSourceError, IntegrityError
from trade_agent.io import atomic_path, host_platform, path_inside, read_json, sha256_file, write_json

if TYPE_CHECKING:
    from trade_agent.registry import ModelRegistry

POLICY_FILE = "policy.pt"
SB3_ZIP = "model.zip"
POLICY_SPEC = "policy.json"
POLICY_CLASSES: dict[str, type[BasePolicy]] = {"ppo": ActorCriticPolicy, "sac": SACPolicy, "td3": TD3Policy}


def _space_to_json(space: gym.Space[Any]) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(), "shape": list(space.shape)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    raise TypeError(f"unsupported space {space}")


def _space_from_json(spec: dict[str, Any]) -> gym.Space[Any]:
    if spec["type"] == "Box":
        low = np.array(spec["low"], dtype=np.float32)
        high = np.array(spec["high"], dtype=np.float32)
        return gym.spaces.Box(low, high, shape=tuple(spec["shape"]), dtype=np.float32)
    return gym.spaces.MultiDiscrete(spec["nvec"])


def save_policy(
    model: BaseAlgorithm,
    algo: str,
    net_arch: list[int],
    directory: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    features_extractor: dict[str, Any] | None = None,
    observation: dict[str, Any] | None = None,
) -> None:
    """Write ``policy.pt`` and ``policy.json`` (``state_dict`` defaults to the current policy).

    ``observation``: the agent's observed columns and state normalisation
    (:meth:`trade_agent.market.observation.Observation.to_json`), replayed at inference.

    ``features_extractor``: ``{"name": ..., "kwargs": {...}}`` of a registered extractor
    (see :data:`trade_agent.hybrid.model.EXTRACTORS`), for hybrids.
    """
    directory.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.policy.state_dict()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, directory / POLICY_FILE)
    write_json(
        directory / POLICY_SPEC,
        {
            "algo": algo,
            "net_arch": list(net_arch),
            "observation_space": _space_to_json(model.observation_space),
            "action_space": _space_to_json(model.action_space),
            **({"features_extractor": features_extractor} if features_extractor else {}),
            **({"observation": observation} if observation else {}),
        },
    )


def _machine_neutral_system_info(content: bytes) -> bytes:
    """SB3's ``system_info.txt`` with the OS line as :func:`~trade_agent.io.host_platform` (the package
    versions, which do shape results, are kept)."""
    return re.sub(rb"^- OS: .*$", f"- OS: {host_platform()}".encode(), content, flags=re.MULTILINE)


def save_sb3_zip(model: BaseAlgorithm, target: Path) -> Path:
    """``model.save`` made reproducible: the same weights give the same bytes.

    SB3's zip records wall-clock values (entry timestamps, ``start_time``) and readable
    reprs beside each cloudpickled object (some with memory addresses). Loading needs only
    ``:type:`` and ``:serialized:``, so the rest is dropped and the timestamps are fixed.
    Written atomically.
    """
    buffer = io.BytesIO()
    model.save(buffer)
    with zipfile.ZipFile(buffer) as source, atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w") as out:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "data":
                data = json.loads(content)
                data["start_time"] = 0
                for key, value in data.items():
                    if isinstance(value, dict) and ":serialized:" in value:
                        data[key] = {k: value[k] for k in (":type:", ":serialized:") if k in value}
                content = json.dumps(data, indent=4, sort_keys=True).encode()
            elif info.filename == "system_info.txt":  # its "OS:" line carries the kernel build
                content = _machine_neutral_system_info(content)
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            out.writestr(fixed, content)
    return target


def is_hybrid(spec: Mapping[str, Any]) -> bool:
    """A hybrid's ``policy.json`` names the features extractor that holds the CNN-LSTM encoder."""
    return "features_extractor" in spec


def policy_model_type(directory: Path) -> str:
    """``hybrid`` or the agent's algorithm, from the directory's ``policy.json``."""
    spec = read_json(directory / POLICY_SPEC)
    return "hybrid" if is_hybrid(spec) else str(spec["algo"])


def load_policy(
    directory: Path, extractors: Mapping[str, type[BaseFeaturesExtractor]] | None = None
) -> tuple[BasePolicy, dict[str, Any]]:
    """Rebuild the policy from ``policy.json`` and load ``policy.pt`` (never unpickles).

    Raises:
        DataSourceError: the directory holds no saved policy.
    """
    if not (directory / POLICY_FILE).is_file() or not (directory / POLICY_SPEC).is_file():
        raise DataSourceError(f"{directory}: no {POLICY_FILE} + {POLICY_SPEC}; not an agent directory")
    spec = read_json(directory / POLICY_SPEC)
    policy_class = POLICY_CLASSES[spec["algo"]]
    extra: dict[str, Any] = {}
    if is_hybrid(spec):
        extractor = spec["features_extractor"]
        known = extractors or {}  # the allow-list of classes a policy.json may name
        if extractor["name"] not in known:
            raise DataSourceError(f"{directory / POLICY_SPEC}: unknown features extractor '{extractor['name']}'")
        extra = {
            "features_extractor_class": known[extractor["name"]],
            "features_extractor_kwargs": extractor["kwargs"],
        }
        extra |= {"share_features_extractor": extractor.get("shared", True)} if spec["algo"] != "ppo" else {}
    policy = policy_class(
        _space_from_json(spec["observation_space"]),
        _space_from_json(spec["action_space"]),
        lambda _: 0.0,  # no optimisation happens on a loaded policy
        net_arch=spec["net_arch"],
        **extra,
    )
    policy.load_state_dict(torch.load(directory / POLICY_FILE, map_location="cpu", weights_only=True))
    return policy.eval(), spec


class _SpacesOnly(gym.Env[np.ndarray, np.ndarray]):
    """The spaces of a loaded agent and nothing else: SB3 builds its networks from an env."""

    def __init__(self, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        raise RuntimeError("this agent was loaded without an environment; call model.set_env(env) before learn()")

    def step(self, action: np.ndarray) -> Any:
        raise RuntimeError("this agent was loaded without an environment; call model.set_env(env) before learn()")


def _algorithm_config(algo: str, training_config: dict[str, Any], net_arch: list[int]) -> RLConfig:
    """The ``rl`` settings an agent was registered with (unknown or missing keys: defaults),
    re-checked by the strict config loader: a registry entry is untrusted input."""
    defaults = asdict(RLConfig())
    own = {k: v for k, v in training_config.items() if k in defaults[algo]} | {"net_arch": net_arch}
    common = training_config.get("common")
    common = {k: v for k, v in common.items() if k in defaults["common"]} if isinstance(common, dict) else {}
    return from_mapping(RLConfig, {"algos": [algo], "common": common, algo: own}, "registry entry training_config")


def load_sb3_model(registry: ModelRegistry, model_id: str, work_dir: Path) -> BaseAlgorithm:
    """SB3's own object (``PPO``/``SAC``/``TD3``) of a registered agent, rebuilt without pickle.

    SB3's ``model.zip`` embeds cloudpickled objects and a checksum cannot make it safe (whoever
    can edit a shared store can edit its index too), so it is never loaded. Instead the
    agent is rebuilt from its registered pickle-free form: the spaces and network sizes in
    ``policy.json``, the hyperparameters in the registry entry (checked like params.yaml),
    and ``policy.pt`` read with ``weights_only=True``. The model is restored (every file
    verified) into ``work_dir/<model_id>``.

    ``.predict`` works at once on observations prepared as in training (``policy.json``
    "observation": :class:`trade_agent.market.observation.Observation`); ``.learn`` needs
    ``model.set_env(env)`` first. Optimiser state is not restored (resumable training uses
    the checkpoints of :mod:`trade_agent.agents.checkpoint`).

    Raises:
        IntegrityError: not an SB3 agent, or a file does not match its recorded checksum.
        ModelNotFoundError: unknown id.
    """
    entry = registry.get_model(model_id)
    if entry.model_type not in POLICY_CLASSES or POLICY_FILE not in entry.files or POLICY_SPEC not in entry.files:
        raise IntegrityError(
            f"{entry.model_id}: not a registered PPO/SAC/TD3 agent with {POLICY_FILE} + {POLICY_SPEC}; "
            "load hybrids and ensembles with load_policy or the backtest API"
        )
    directory = path_inside(work_dir, entry.model_id)
    if not directory.is_dir():
        registry.restore(entry.model_id, directory)
    for name in (POLICY_FILE, POLICY_SPEC):  # a cached copy is re-verified before use
        if sha256_file(directory / name) != entry.files[name]["sha256"]:
            raise IntegrityError(
                f"{directory / name}: sha256 does not match the registry entry of {entry.model_id}; "
                "delete the directory and load again to restore a verified copy"
            )
    spec = read_json(directory / POLICY_SPEC)
    if spec.get("algo") != entry.model_type:
        raise IntegrityError(f"{directory / POLICY_SPEC}: algo {spec.get('algo')!r} is not {entry.model_type}")
    config = _algorithm_config(entry.model_type, entry.training_config, [int(n) for n in spec["net_arch"]])
    observation_space = _space_from_json(spec["observation_space"])
    action_space = _space_from_json(spec["action_space"])
    n_envs = getattr(getattr(config, entry.model_type), "n_envs", 1)  # PPO's rollout buffer is sized by it
    env = DummyVecEnv([lambda: _SpacesOnly(observation_space, action_space)] * n_envs)
    model = build_agent(entry.model_type, env, config, seed=0)
    model.policy.load_state_dict(torch.load(directory / POLICY_FILE, map_location="cpu", weights_only=True))
    model.policy.eval()
    return model
