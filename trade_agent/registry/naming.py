"""Model ids and lookups.

Ids read ``{model_type}_v{X.Y.Z}_grade_{G}_{label}_{value}``, e.g.
``cnn_lstm_v1.0.0_grade_A_acc_0.95``. A lookup accepts the full id, any unique prefix
(``cnn_lstm_v1.0.0``), ``type@vX.Y.Z``, ``type@latest`` and ``type@best``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from trade_agent.errors import InputError
from trade_agent.registry.grading import format_value
from trade_agent.registry.versioning import parse_version


class ModelNotFoundError(InputError):
    """No registered model matches the requested id (message lists the closest ones)."""


def make_model_id(model_type: str, version: str, grade: str, key_label: str, key_value: float | None) -> str:
    suffix = f"_{key_label}_{format_value(key_value)}" if key_value is not None else ""
    return f"{model_type}_v{version}_grade_{grade}{suffix}"


def resolve(
    query: str,
    entries: Sequence[dict[str, Any]],
    best_key: Callable[[dict[str, Any]], tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """The entry ``query`` names.

    Raises:
        ModelNotFoundError: nothing matches, or a prefix matches several models.
    """
    ids = [e["model_id"] for e in entries]
    if "@" in query:
        model_type, _, selector = query.partition("@")
        of_type = [e for e in entries if e["model_type"] == model_type]
        if selector in ("latest", "best"):  # aliases mean the active models
            of_type = [e for e in of_type if not e.get("archived")] or of_type
        if not of_type:
            raise ModelNotFoundError(f"no {model_type} models are registered; `trade-agent train list` shows them")
        if selector == "latest":
            return max(of_type, key=lambda e: parse_version(e["version"]))
        if selector == "best":
            if best_key is None:
                raise ModelNotFoundError("@best needs a ranking")
            return max(of_type, key=best_key)
        wanted = selector.lstrip("v")
        for entry in of_type:
            if entry["version"] == wanted:
                return entry
        versions = ", ".join(sorted((f"v{e['version']}" for e in of_type), key=parse_version))
        raise ModelNotFoundError(f"{query}: no such version; {model_type} has {versions}")
    if query in ids:
        return entries[ids.index(query)]
    # A prefix must end at a field boundary: cnn_lstm_v1.0.1 must not match v1.0.10.
    matches = [e for e in entries if e["model_id"].startswith(query) and e["model_id"][len(query)] == "_"]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = ", ".join(sorted(m["model_id"] for m in matches)[:5])
        raise ModelNotFoundError(f"'{query}' is ambiguous: it matches {listed}; give more of the id")
    close = difflib.get_close_matches(query, ids, n=3, cutoff=0.3)
    hint = f"; closest: {', '.join(close)}" if close else "; `trade-agent train list` shows the registered ids"
    raise ModelNotFoundError(f"model '{query}' not found{hint}")
