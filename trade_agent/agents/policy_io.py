"""The registered form of an SB3 agent: policy state dict + JSON, loadable without pickle.

SB3's ``.zip`` embeds cloudpickled objects; it is kept for users who want ``PPO.load``
(loaded only after its checksum verifies), but the registry's form is ``policy.pt``
(``torch.save`` of ``policy.state_dict()``, read with ``weights_only=True``) and
``policy.json`` (algorithm, spaces, network sizes) from which the policy class is rebuilt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy

from trade_agent.errors import DataSourceError, IntegrityError
from trade_agent.io import read_json, sha256_file, write_json

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
    (:meth:`trade_agent.envs.observation.Observation.to_json`), replayed at inference.

    ``features_extractor``: ``{"name": ..., "kwargs": {...}}`` of a registered extractor
    (see :data:`trade_agent.models.hybrid.EXTRACTORS`), for hybrids.
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


def save_sb3_zip(model: BaseAlgorithm, target: Path) -> Path:
    """``model.save`` made reproducible: the same weights give the same bytes.

    SB3's zip records wall-clock values (entry timestamps, ``start_time``) and readable
    reprs beside each cloudpickled object (some with memory addresses). Loading needs only
    ``:type:`` and ``:serialized:``, so the rest is dropped and the timestamps are fixed.
    Written atomically.
    """
    import io
    import json
    import zipfile

    from trade_agent.io import atomic_path

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
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            out.writestr(fixed, content)
    return target


def load_policy(directory: Path) -> tuple[BasePolicy, dict[str, Any]]:
    """Rebuild the policy from ``policy.json`` and load ``policy.pt`` (never unpickles).

    Raises:
        DataSourceError: the directory holds no saved policy.
    """
    if not (directory / POLICY_FILE).is_file() or not (directory / POLICY_SPEC).is_file():
        raise DataSourceError(f"{directory}: no {POLICY_FILE} + {POLICY_SPEC}; not an agent directory")
    from trade_agent.models.hybrid import EXTRACTORS

    spec = read_json(directory / POLICY_SPEC)
    policy_class = POLICY_CLASSES[spec["algo"]]
    extra: dict[str, Any] = {}
    if "features_extractor" in spec:
        extractor = spec["features_extractor"]
        if extractor["name"] not in EXTRACTORS:
            raise DataSourceError(f"{directory / POLICY_SPEC}: unknown features extractor '{extractor['name']}'")
        extra = {
            "features_extractor_class": EXTRACTORS[extractor["name"]],
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


def load_sb3_model(registry: ModelRegistry, model_id: str, work_dir: Path) -> BaseAlgorithm:
    """SB3's own object (``PPO``/``SAC``/``TD3``) of a registered agent, for ``.learn``/``.predict`` users.

    The zip embeds cloudpickled objects, so it is unpickled only after its sha256 matches
    the registry entry: the model is restored (every file verified) into
    ``work_dir/<model_id>`` and the copy is hashed once more right before loading.

    Raises:
        IntegrityError: the zip is missing or does not match its recorded checksum.
        ModelNotFoundError: unknown id.
    """
    from stable_baselines3 import PPO, SAC, TD3

    entry = registry.get_model(model_id)
    algorithms: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}
    if entry.model_type not in algorithms or SB3_ZIP not in entry.files:
        raise IntegrityError(f"{entry.model_id}: not an SB3 agent with a {SB3_ZIP}; load it with load_policy")
    directory = work_dir / entry.model_id
    if not (directory / SB3_ZIP).is_file():
        registry.restore(entry.model_id, directory)
    path = directory / SB3_ZIP
    if sha256_file(path) != entry.files[SB3_ZIP]["sha256"]:
        raise IntegrityError(
            f"{path}: sha256 does not match the registry entry of {entry.model_id}; "
            "delete the directory and load again to restore a verified copy"
        )
    return algorithms[entry.model_type].load(path, device="cpu")
