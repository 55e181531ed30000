"""Sections ``walkforward`` (calendar folds over the whole history) and ``release`` (promotion gates)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trade_agent.errors import ConfigError

PERIOD = re.compile(r"^(\d+)([DWMY])$")  # 30D, 2W, 6M, 1Y
FOLD_STAGES = ("cnn_lstm", "rl", "hybrid", "ensemble")


def check_period(key: str, value: str) -> None:
    if not PERIOD.match(value) or int(value[:-1]) == 0:
        raise ConfigError(f"{key}: '{value}' is not a calendar period; use e.g. 30D, 2W, 6M or 1Y")


@dataclass(frozen=True)
class WalkForwardBudget:
    """Training budget of each fold's models (a fold retrains the hierarchy; these keep ``make run`` short)."""

    cnn_lstm_epochs: int = 8
    ppo_timesteps: int = 8192
    sac_timesteps: int = 3000
    td3_timesteps: int = 3000
    hybrid_timesteps: int = 2048

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ConfigError(f"walkforward.budget.{name}: must be >= 1, got {value}")


@dataclass(frozen=True)
class WalkForwardConfig:
    """Calendar folds: each trains on its past, selects on ``val_period``, trades ``test_period``.

    Attributes:
        start: the first fold's test start (ISO date); empty: the data's first bar plus
            ``train_period`` and ``val_period``.
        train: ``expanding`` (every fold trains from the data's first bar) or ``rolling``
            (the last ``train_period`` before the validation window).
        train_period / val_period / test_period: calendar periods (``30D``, ``2W``, ``6M``, ``1Y``).
        folds: fold numbers; fold k trades ``[start + k x test_period, start + (k+1) x
            test_period)``. The list is what DVC's ``foreach`` expands: new data past the last
            fold's window needs a new number here (only that fold then runs).
        stages: what each fold trains, in hierarchy order (default: all of it).
        budget: per-fold training budgets.
        pbo_blocks: S, the blocks of the out-of-sample history for the PBO's CSCV (even).
    """

    start: str = ""
    train: str = "expanding"
    train_period: str = "3Y"
    val_period: str = "6M"
    test_period: str = "1Y"
    folds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    stages: list[str] = field(default_factory=lambda: list(FOLD_STAGES))
    budget: WalkForwardBudget = field(default_factory=WalkForwardBudget)
    pbo_blocks: int = 8

    def __post_init__(self) -> None:
        if self.train not in ("expanding", "rolling"):
            raise ConfigError(f"walkforward.train: '{self.train}' is unknown; use expanding or rolling")
        for key in ("train_period", "val_period", "test_period"):
            check_period(f"walkforward.{key}", getattr(self, key))
        if self.start and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.start):
            raise ConfigError(f"walkforward.start: '{self.start}' is not an ISO date (YYYY-MM-DD); or leave it empty")
        if not self.folds or len(set(self.folds)) != len(self.folds) or min(self.folds) < 0:
            raise ConfigError("walkforward.folds: give distinct fold numbers >= 0, e.g. [0, 1, 2]")
        unknown = [s for s in self.stages if s not in FOLD_STAGES]
        if unknown or "cnn_lstm" not in self.stages:
            raise ConfigError(
                f"walkforward.stages: {unknown or self.stages} is not valid; use a subset of "
                f"{', '.join(FOLD_STAGES)} that includes cnn_lstm"
            )
        if "hybrid" in self.stages and "rl" not in self.stages:
            raise ConfigError("walkforward.stages: hybrid fine-tunes an rl agent; add rl")
        if self.pbo_blocks < 2 or self.pbo_blocks % 2:
            raise ConfigError(f"walkforward.pbo_blocks: must be even and >= 2, got {self.pbo_blocks}")


@dataclass(frozen=True)
class ReleaseConfig:
    """Gates of ``trade-agent release ID --stage prod`` (walk-forward statistics; ``--force`` overrides)."""

    min_dsr: float = 0.95
    max_pbo: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.min_dsr <= 1 or not 0 <= self.max_pbo <= 1:
            raise ConfigError("release: min_dsr and max_pbo are probabilities in [0, 1]")
