"""Section ``optimize``: Optuna search spaces and budgets, per stage (``--optimize``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from trade_agent.errors import ConfigError


@dataclass(frozen=True)
class Distribution:
    """One searched parameter: ``float``/``int`` in [low, high] (``log`` scale, ``step``), or ``categorical``."""

    type: Literal["float", "int", "categorical"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)

    def check(self, key: str) -> None:
        if self.type == "categorical":
            if not self.choices:
                raise ConfigError(f"optimize space '{key}': categorical needs a non-empty 'choices' list")
        elif not self.low < self.high or (self.log and self.low <= 0):
            raise ConfigError(f"optimize space '{key}': needs low < high (and low > 0 with log: true)")


@dataclass(frozen=True)
class StageSearch:
    """Search space of one stage (keys are dotted params paths) and the per-trial budget:
    epochs for the CNN-LSTM, environment steps for an agent."""

    budget: int = 5
    space: dict[str, Distribution] = field(default_factory=dict)

    def check(self, stage: str) -> None:
        if self.budget < 1:
            raise ConfigError(f"optimize.{stage}.budget must be >= 1")
        for key, distribution in self.space.items():
            if key.count(".") < 1:
                raise ConfigError(f"optimize.{stage}.space: '{key}' must be a dotted params key like cnn_lstm.dropout")
            distribution.check(f"{stage}:{key}")


def _default_cnn_lstm() -> StageSearch:
    return StageSearch(
        budget=8,
        space={
            "cnn_lstm.learning_rate": Distribution("float", 1e-4, 3e-3, log=True),
            "cnn_lstm.dropout": Distribution("float", 0.0, 0.3),
            "cnn_lstm.lstm_hidden": Distribution("categorical", choices=[32, 64, 128]),
            "features.sequence_length": Distribution("int", 10, 40, step=10),
        },
    )


def _default_agent(lr_low: float, lr_high: float) -> StageSearch:
    return StageSearch(
        budget=8000,
        space={
            "learning_rate": Distribution("float", lr_low, lr_high, log=True),
            "gamma": Distribution("float", 0.9, 0.999),
        },
    )


@dataclass(frozen=True)
class OptimizeConfig:
    """Attributes:
    storage: Optuna storage: empty = SQLite at ``models/optuna/studies.db`` (git-ignored,
        outside DVC outputs, so a re-run continues the study), an RDB URL
        (``postgresql://user@host/db``, ``sqlite:///path``) or ``journal:///path/to/file.log``
        (Optuna's journal file storage, for sites whose only shared storage is NFS).
    heartbeat_s / stale_after_s: a running trial records a heartbeat every ``heartbeat_s``;
        one silent for ``stale_after_s`` (its worker was killed, or its machine lost) is
        marked FAIL by the next worker that looks, and re-queued with the same params up to
        ``retries`` times.
    n_startup_trials / n_warmup_steps: the median pruner waits for this many finished trials,
        and within a trial for this many reports, before pruning.
    cnn_lstm / ppo / sac / td3: each stage's search. Agent keys without a section
        (``learning_rate``) mean ``rl.<algo>.<key>``.
    """

    storage: str = ""
    n_startup_trials: int = 2
    n_warmup_steps: int = 1
    heartbeat_s: int = 30
    stale_after_s: int = 120
    retries: int = 1
    cnn_lstm: StageSearch = field(default_factory=_default_cnn_lstm)
    ppo: StageSearch = field(default_factory=lambda: _default_agent(1e-4, 1e-3))
    sac: StageSearch = field(default_factory=lambda: _default_agent(1e-4, 1e-3))
    td3: StageSearch = field(default_factory=lambda: _default_agent(3e-4, 3e-3))

    def __post_init__(self) -> None:
        if self.n_startup_trials < 0 or self.n_warmup_steps < 0:
            raise ConfigError("optimize: n_startup_trials and n_warmup_steps must be >= 0")
        if self.heartbeat_s < 1 or self.stale_after_s <= self.heartbeat_s or self.retries < 0:
            raise ConfigError(
                f"optimize: needs heartbeat_s >= 1, stale_after_s > heartbeat_s and retries >= 0 (got "
                f"{self.heartbeat_s}, {self.stale_after_s}, {self.retries}); e.g. 30, 120, 1"
            )
        for stage in ("cnn_lstm", "ppo", "sac", "td3"):
            self.search(stage).check(stage)

    def search(self, stage: str) -> StageSearch:
        """The stage's search with every key as a full dotted params path."""
        search: StageSearch = getattr(self, stage)
        if stage == "cnn_lstm":
            return search
        return StageSearch(search.budget, {k if "." in k else f"rl.{stage}.{k}": v for k, v in search.space.items()})
