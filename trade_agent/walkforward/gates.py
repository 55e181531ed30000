"""Promotion gated by the walk-forward statistics (``trade-agent release ID --stage prod``).

A model is promoted only when, in ``metrics/walkforward.json`` of the commit being
released, its model type's walk-forward figures pass:

* deflated Sharpe ratio >= ``release.min_dsr``, with N = the walk-forward's configurations
  plus the trials the registry holds for the same symbols (:func:`registered_trials`:
  configurations x seeds, and every trial of the ``--optimize`` studies behind registered
  models), recomputed here from the recorded moments;
* the lower bound of its paired Sharpe difference against buy-and-hold >= 0;
* probability of backtest overfitting <= ``release.max_pbo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trade_agent.config.walkforward import ReleaseConfig
from trade_agent.errors import DataSourceError
from trade_agent.io import read_json
from trade_agent.walkforward.statistics import expected_max_sharpe, psr_from_moments


@dataclass(frozen=True)
class GateFigures:
    """A model's walk-forward figures as the release gate judges them."""

    model: str  # its name in the walk-forward (cnn_lstm, ppo, hybrid_ppo, ensemble, ...)
    dsr: float
    n_trials: int
    n_registered: int
    difference_ci_low: float
    pbo: float | None

    def failures(self, release: ReleaseConfig) -> list[str]:
        failed = []
        if self.dsr < release.min_dsr:
            failed.append(f"DSR {self.dsr:.3f} (N = {self.n_trials}) < release.min_dsr {release.min_dsr:g}")
        if self.difference_ci_low < 0:
            failed.append(f"paired Sharpe difference vs buy-and-hold has lower bound {self.difference_ci_low:+.2f} < 0")
        if self.pbo is not None and self.pbo > release.max_pbo:
            failed.append(f"PBO {self.pbo:.2f} > release.max_pbo {release.max_pbo:g}")
        return failed

    def summary(self) -> str:
        pbo = f"{self.pbo:.2f}" if self.pbo is not None else "-"
        return (
            f"walk-forward {self.model}: DSR {self.dsr:.3f} (N = {self.n_trials}: "
            f"{self.n_trials - self.n_registered} walk-forward + {self.n_registered} registered), "
            f"Sharpe - buy&hold lower bound {self.difference_ci_low:+.2f}, PBO {pbo}"
        )


def walkforward_name(entry: dict[str, Any]) -> str:
    """The walk-forward's name for a registry entry's model (hybrids by their agent's algorithm)."""
    model_type = str(entry.get("model_type"))
    if model_type == "hybrid":
        config = entry.get("training_config")
        algo = config.get("algo") if isinstance(config, dict) else None
        return f"hybrid_{algo}" if isinstance(algo, str) else "hybrid_ppo"
    return model_type


def registered_trials(entries: list[dict[str, Any]], symbols: list[str]) -> int:
    """Trials registered on ``symbols``: distinct (model type, hyperparameters, seed), plus the
    other trials of each ``--optimize`` study behind a registered model.

    A CNN-LSTM records its symbols; agents, hybrids and ensembles inherit them from the
    models they depend on. An optimised model carries the tag ``optimize:<study>:<trials>``;
    its study counts ``trials - 1`` more (the winner is one of the configurations), once per
    study whatever re-ran it.
    """
    by_id = {str(e.get("model_id")): e for e in entries}

    def symbols_of(entry: dict[str, Any], depth: int = 0) -> list[str] | None:
        info = entry.get("dataset_info")
        if isinstance(info, dict) and isinstance(info.get("symbols"), list):
            return sorted(str(s) for s in info["symbols"])
        upstream = entry.get("dependencies")
        if depth > 8 or not isinstance(upstream, list) or not upstream:
            return None
        parent = by_id.get(str(upstream[0]))
        return symbols_of(parent, depth + 1) if parent is not None else None

    configurations: set[tuple[str, str, str]] = set()
    studies: dict[str, int] = {}
    for entry in entries:
        fingerprint, config = entry.get("fingerprint"), entry.get("training_config")
        if not isinstance(fingerprint, dict) or symbols_of(entry) != symbols:
            continue
        seed = config.get("seed") if isinstance(config, dict) else None
        configurations.add((str(entry.get("model_type")), str(fingerprint.get("hyperparameters")), str(seed)))
        for tag in entry.get("tags") or []:
            study, _, count = str(tag).removeprefix("optimize:").rpartition(":")
            if str(tag).startswith("optimize:") and study and count.isdigit():
                studies[study] = max(studies.get(study, 0), int(count))
    return len(configurations) + sum(max(n - 1, 0) for n in studies.values())


def gate_figures(walkforward: object, entry: dict[str, Any], entries: list[dict[str, Any]], source: str) -> GateFigures:
    """The figures for ``entry`` from a ``metrics/walkforward.json`` document (untrusted).

    Raises:
        DataSourceError: the document lacks the model or a figure (naming the fix).
    """
    name = walkforward_name(entry)
    if not isinstance(walkforward, dict) or not isinstance(walkforward.get("models"), dict):
        raise DataSourceError(f"{source}: not a walk-forward metrics file; run `dvc repro walkforward` and commit it")
    row = walkforward["models"].get(name)
    needed = ("sharpe_per_bar", "skew", "kurtosis", "difference_ci_low")
    if not isinstance(row, dict) or not all(isinstance(row.get(k), int | float) for k in needed):
        raise DataSourceError(
            f"{source}: no walk-forward figures for '{name}'; add its stage to walkforward.stages, "
            "run `dvc repro walkforward` and commit metrics/walkforward.json"
        )
    try:
        bars, variance = int(walkforward["oos_bars"]), float(walkforward["trial_sharpe_variance"])
        own = int(walkforward["n_trials"])
        symbols = sorted(str(s) for s in walkforward["symbols"])
    except (KeyError, TypeError, ValueError):
        raise DataSourceError(f"{source}: oos_bars, n_trials, trial_sharpe_variance or symbols missing") from None
    registered = registered_trials(entries, symbols)
    n_trials = own + registered
    benchmark = expected_max_sharpe(variance, n_trials)
    dsr = psr_from_moments(float(row["sharpe_per_bar"]), bars, float(row["skew"]), float(row["kurtosis"]), benchmark)
    pbo = walkforward.get("pbo")
    return GateFigures(
        name, dsr, n_trials, registered, float(row["difference_ci_low"]), float(pbo) if pbo is not None else None
    )


def workspace_figures(
    metrics_path: Path, entry: dict[str, Any], entries: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, GateFigures | None]:
    """The workspace's walk-forward document and ``entry``'s figures in it (``None`` where absent)."""
    if not metrics_path.is_file():
        return None, None
    document = read_json(metrics_path)
    if not isinstance(document, dict):
        return None, None
    try:
        return document, gate_figures(document, entry, entries, str(metrics_path))
    except DataSourceError:
        return document, None
