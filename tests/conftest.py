"""Shared fixtures: isolated environment, tiny params, small data, one tiny DVC repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

from trade_agent.config import FeaturesConfig, LabelsConfig, Params
from trade_agent.data.synthetic import SyntheticSpec, generate_synthetic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for benchmarks.reference_features

# Small but complete: every feature family on, short periods so ~300 bars suffice.
TINY_FEATURES = {
    "return_periods": [1, 5],
    "sma_periods": [5, 10],
    "ema_periods": [5],
    "rsi_period": 7,
    "macd_fast": 5,
    "macd_slow": 10,
    "macd_signal": 4,
    "atr_period": 7,
    "bbands_period": 10,
    "stoch_k": 7,
    "stoch_smooth": 3,
    "stoch_d": 3,
    "adx_period": 7,
    "willr_period": 7,
    "cci_period": 10,
    "mfi_period": 7,
    "obv_window": 10,
    "volatility_windows": [5],
    "volume_ratio_window": 10,
    "sequence_length": 10,
}


TINY_CNN_LSTM = {
    "conv_filters": [8],
    "kernel_sizes": [3],
    "lstm_hidden": 8,
    "attention_heads": 2,
    "epochs": 2,
    "batch_size": 64,
}


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep DVC/git away from the developer's config and from the network (as DVC's suite does)."""
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    os.environ.pop("TRADE_AGENT_TRACEBACK", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory: nothing lands in the working tree (logs/,
    models/, the registry store) and relative paths cannot leak between tests."""
    monkeypatch.chdir(tmp_path)


def tiny_params_dict(**overrides: dict) -> dict:
    """params.yaml content for tests: synthetic data, tiny indicator periods."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update({"source": "synthetic", "synthetic_symbols": 2, "synthetic_bars": 300})
    raw["features"].update(TINY_FEATURES)
    raw["labels"]["horizon"] = 2
    raw["cnn_lstm"].update(TINY_CNN_LSTM)
    raw["rl"]["common"].update(window=5, episode_length=40, eval_freq=100, features=["ret_1", "ret_5", "rvol_5"])
    raw["rl"]["ppo"].update(net_arch=[16], total_timesteps=256, n_envs=2, n_steps=64, batch_size=64, n_epochs=1)
    for algo in ("sac", "td3"):
        raw["rl"][algo].update(net_arch=[16], total_timesteps=200, learning_starts=50, batch_size=32)
    raw["hybrid"].update(total_timesteps=128, freeze_encoder_steps=32)
    raw["evaluate"].update(bootstrap_samples=200)
    # 300 business days from 2000-01-03: folds test Jul, Sep and Nov 2000 (two months each).
    raw["walkforward"].update(train_period="4M", val_period="2M", test_period="2M", folds=[0, 1, 2], pbo_blocks=4)
    raw["walkforward"]["budget"].update(
        cnn_lstm_epochs=1, ppo_timesteps=128, sac_timesteps=100, td3_timesteps=100, hybrid_timesteps=64
    )
    for section, values in overrides.items():
        raw[section].update(values)
    return raw


@pytest.fixture
def tiny_params() -> Params:
    from trade_agent.config import params_from_dict

    return params_from_dict(tiny_params_dict())


@pytest.fixture(scope="session")
def market() -> pd.DataFrame:
    """Two synthetic symbols x 400 bars (canonical layout)."""
    return generate_synthetic(SyntheticSpec(n_symbols=2, n_bars=400, seed=7))


@pytest.fixture
def tiny_features() -> FeaturesConfig:
    return FeaturesConfig(**TINY_FEATURES)


@pytest.fixture
def labels_config() -> LabelsConfig:
    return replace(LabelsConfig(), horizon=2)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"))
    return path


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def trade_agent_cli(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``trade-agent ARGS`` run in ``repo`` as a user would (a fresh process, output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "trade_agent.cli", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def dvc_template(tmp_path_factory: pytest.TempPathFactory, _isolated_environment: None) -> Path:
    """A committed git + DVC repo with this project's pipeline and tiny params (built once)."""
    repo = tmp_path_factory.mktemp("dvc-template") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "stages", "trade_agent"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, repo / name)
    (repo / "data" / "raw").mkdir(parents=True)
    (repo / "data" / "raw" / ".gitkeep").touch()
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        result = run(cmd, repo)
        assert result.returncode == 0, result.stderr
    return repo


@dataclass(frozen=True)
class ReproducedRepo:
    """The template after its one full `dvc repro` (dvc.lock and outputs uncommitted)."""

    path: Path
    output: str  # stdout + stderr of that `dvc repro`


@pytest.fixture(scope="session")
def dvc_reproduced(dvc_template: Path, tmp_path_factory: pytest.TempPathFactory) -> ReproducedRepo:
    """The template reproduced once per test run: every test that needs a built pipeline copies this.

    Under pytest-xdist the workers share it (the first to arrive builds it under a file lock in
    the run's common temp folder), so `make test` pays for one full `dvc repro`, not one per worker.
    """
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # .../pytest-N/ (each worker's basetemp is .../pytest-N/gwK)
    repo, log = shared / "dvc-reproduced" / "repo", shared / "dvc-reproduced" / "repro.log"
    with FileLock(str(shared / "dvc-reproduced.lock")):
        if not log.is_file():
            if repo.exists():
                shutil.rmtree(repo)  # a worker died mid-build: start over
            shutil.copytree(dvc_template, repo, symlinks=True)
            result = run(["dvc", "repro"], repo)
            assert result.returncode == 0, result.stdout + result.stderr
            log.write_text(result.stdout + result.stderr)  # written last: the repo is complete
    return ReproducedRepo(repo, log.read_text())


@pytest.fixture
def dvc_repo(dvc_reproduced: ReproducedRepo, tmp_path: Path) -> Path:
    """A private copy of the reproduced repo for one test: workspace outputs, dvc.lock, .dvc/cache
    (run-cache included), the registry store under .dvc and .git. The cache link type is DVC's
    default (reflink, else copy), so workspace files are independent of the cache: a plain copy."""
    repo = tmp_path / "repo"
    shutil.copytree(dvc_reproduced.path, repo, symlinks=True)
    return repo


@pytest.fixture
def dvc_fresh_repo(dvc_template: Path, tmp_path: Path) -> Path:
    """A private copy of the template before any `dvc repro` (no outputs, empty cache)."""
    repo = tmp_path / "repo"
    shutil.copytree(dvc_template, repo, symlinks=True)
    return repo


@pytest.fixture(scope="session")
def tiny_features_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`prepare` + `features` outputs for the tiny params (built once per session)."""
    from trade_agent.config import params_from_dict
    from trade_agent.data.ingest import prepare
    from trade_agent.features.build import run_features_stage

    root = tmp_path_factory.mktemp("tiny-features")
    params = params_from_dict(tiny_params_dict())
    prepare(params.data, root / "prepared", params.base.seed)
    run_features_stage(params, root / "prepared" / "market.parquet", root / "features")
    return root / "features"


@pytest.fixture(scope="session")
def tiny_stage2(tiny_features_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny CNN-LSTM, its embeddings and a tiny PPO and SAC on them (built once per session).

    Keys: ``features``, ``market``, ``cnn_lstm``, ``embeddings``, ``ppo``, ``sac``.
    """
    from trade_agent.agents.train import load_panels, train_agent
    from trade_agent.cnn_lstm.embed import run_embed_stage
    from trade_agent.cnn_lstm.stage import train_cnn_lstm
    from trade_agent.config import params_from_dict

    root = tmp_path_factory.mktemp("tiny-stage2")
    params = params_from_dict(tiny_params_dict())
    market = tiny_features_dir.parent / "prepared" / "market.parquet"
    train_cnn_lstm(params, tiny_features_dir, root / "cnn_lstm", checkpoint_root=None)
    run_embed_stage(root / "cnn_lstm", tiny_features_dir, root / "embeddings.parquet")
    panels = load_panels(params, tiny_features_dir, root / "embeddings.parquet", market)
    paths = {"features": tiny_features_dir, "market": market, "cnn_lstm": root / "cnn_lstm"}
    paths["embeddings"] = root / "embeddings.parquet"
    for algo in ("ppo", "sac"):
        train_agent(algo, params, panels, root / algo)
        paths[algo] = root / algo
    return paths
