"""Where the DVC stages read and write: one table for stage scripts and library alike.

``dvc.yaml`` names the same paths; a stage script passes them to the library functions,
which take paths as arguments so the API and CLI can run a stage on other folders.
"""

from __future__ import annotations

from pathlib import Path

PREPARED_DIR = Path("data/prepared")
MARKET = PREPARED_DIR / "market.parquet"
FEATURES_DIR = Path("data/features")
FEATURES_FILE = "features.parquet"  # inside a features directory
SCHEMA_FILE = "schema.json"
EMBEDDINGS = Path("data/embeddings/embeddings.parquet")
REGISTRY_ROOT = Path("models")
PIPELINE_MODELS = REGISTRY_ROOT / "pipeline"  # one directory per stage output model
CHECKPOINTS = REGISTRY_ROOT / "temp"  # resumable training state, outside the DVC outputs
WALKFORWARD_DATA = Path("data/walkforward")  # fold_<k>/: each walk-forward fold's inputs
WALKFORWARD_MODELS = REGISTRY_ROOT / "walkforward"  # fold_<k>/: each fold's models and test returns
FOLD_RETURNS = "returns.parquet"  # in each fold's models: per-bar test returns of every model and baseline
FOLD_SUMMARY = "fold.json"  # window, frequency, metrics
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")
LIVE_DIR = Path("dvclive")
STAGE_1 = "cnn_lstm"
ENSEMBLE = "ensemble"


def pipeline_model(name: str) -> Path:
    """``models/pipeline/<name>``: ``cnn_lstm``, an algorithm, ``hybrid_<algo>`` or ``ensemble``."""
    return PIPELINE_MODELS / name


def hybrid_name(algo: str) -> str:
    return f"hybrid_{algo}"


def pipeline_model_names(rl_algos: list[str], hybrid_algos: list[str]) -> list[str]:
    """Model directories the default pipeline produces, in report order."""
    return [STAGE_1, *rl_algos, *(hybrid_name(a) for a in hybrid_algos), ENSEMBLE]


def pipeline_models(rl_algos: list[str], hybrid_algos: list[str], root: Path = PIPELINE_MODELS) -> dict[str, Path]:
    """The pipeline's model directories that exist, by report name."""
    names = pipeline_model_names(rl_algos, hybrid_algos)
    return {name: root / name for name in names if (root / name).is_dir()}


def ensemble_members(rl_algos: list[str], hybrid_algos: list[str], root: Path = PIPELINE_MODELS) -> list[Path]:
    """Stage-2 agents and stage-3 hybrids the ensemble stage combines (existing ones)."""
    models = pipeline_models(rl_algos, hybrid_algos, root)
    return [path for name, path in models.items() if name not in (STAGE_1, ENSEMBLE)]


def fold_dir(root: Path, fold: int) -> Path:
    """``<root>/fold_<k>``: one walk-forward fold's inputs (``WALKFORWARD_DATA``) or models (``WALKFORWARD_MODELS``)."""
    return root / f"fold_{fold}"
