"""Semantic versions per model type.

MAJOR: the interface changed (input feature schema, sequence length / observation space,
architecture family, action space) versus the latest version of the type - unless it
matches an earlier major line, which then continues. MINOR: same interface, but
hyperparameters, data or an upstream model differ from the latest version of that line.
PATCH: only the seed or code differ. Versions once issued are never issued again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    major, minor, patch = (int(x) for x in text.lstrip("v").split("."))
    return major, minor, patch


def format_version(version: Version) -> str:
    return f"{version[0]}.{version[1]}.{version[2]}"


@dataclass(frozen=True)
class Fingerprint:
    """What versioning compares: hashes of the interface, the hyperparameters, the data
    and the upstream models (seed and code are deliberately absent)."""

    interface: str
    hyperparameters: str
    data: str
    upstream: str


def next_version(
    new: Fingerprint, existing: Iterable[tuple[Version, Fingerprint]], issued: Iterable[Version]
) -> Version:
    """The version for a new model of a type.

    Args:
        new: the new model's fingerprint.
        existing: (version, fingerprint) of the type's registered models.
        issued: every version ever handed out for the type (deleted ones included).
    """
    issued = set(issued)
    existing = sorted(existing)
    if not existing and not issued:
        return (1, 0, 0)
    line = [(v, f) for v, f in existing if f.interface == new.interface]
    if not line:
        # New interface: a new major line.
        return (max(v[0] for v in issued | {v for v, _ in existing}) + 1, 0, 0)
    latest_version, latest = line[-1]
    major = latest_version[0]
    same_major = [v for v in issued if v[0] == major] + [v for v, _ in line]
    if (new.hyperparameters, new.data, new.upstream) != (latest.hyperparameters, latest.data, latest.upstream):
        return (major, max(v[1] for v in same_major) + 1, 0)
    minor = latest_version[1]
    return (major, minor, max(v[2] for v in same_major if v[1] == minor) + 1)
