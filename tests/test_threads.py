"""The thread plan (``base.threads``) and eager-only torch in stage processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from trade_agent.config import params_from_dict
from trade_agent.errors import ConfigError
from trade_agent.threads import AUTO_PLAN, planned_threads


def _python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_auto_is_the_plan_and_a_count_applies_to_every_kind_of_work() -> None:
    assert params_from_dict({}).base.threads == "auto"
    for work in AUTO_PLAN:
        assert planned_threads("auto", work) == AUTO_PLAN[work]
        assert planned_threads(3, work) == 3
    # The plan never depends on the machine: bit-reproducible CPU results need a fixed count.
    assert AUTO_PLAN == {"cnn_lstm": 1, "embed": 1, "policy": 1}


@pytest.mark.parametrize("value", [0, -2, "two", True])
def test_a_bad_thread_setting_is_refused_with_its_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"base\.threads"):
        params_from_dict({"base": {"threads": value}})


def test_the_plan_pins_torch_and_the_openmp_mkl_environment_whatever_the_shell_says() -> None:
    out = _python(
        """
        import json, os, torch
        from trade_agent.threads import apply_thread_plan
        torch.set_num_threads(2)
        n = apply_thread_plan("auto", "policy")
        print(json.dumps([n, torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"]]))
        """,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "2"},
    )
    assert json.loads(out) == [1, 1, "1", "1"]


TRAIN_STEP = """
import sys, torch
{setup}
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(5):
    loss = model(torch.randn(32, 8)).pow(2).mean()
    optimizer.zero_grad(); loss.backward(); optimizer.step()
state = torch.cat([p.detach().flatten() for p in model.parameters()])
print(type(sys.modules.get("torch._dynamo")).__name__, state.double().sum().item(), state.abs().sum().item())
"""


def test_eager_torch_trains_bit_identically_without_importing_dynamo() -> None:
    plain = _python(TRAIN_STEP.format(setup=""))
    eager = _python(TRAIN_STEP.format(setup="from trade_agent.threads import eager_torch; eager_torch()"))
    assert plain.split()[0] == "module"  # what torch does on its own: an optimiser imports dynamo
    assert eager.split()[0] == "_EagerDynamo"
    assert eager.split()[1:] == plain.split()[1:]  # same weights, to the last bit


def test_anything_beyond_the_two_calls_loads_the_real_dynamo() -> None:
    out = _python(
        """
        import sys, torch
        from trade_agent.threads import eager_torch
        eager_torch()
        torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
        before = type(sys.modules["torch._dynamo"]).__name__
        import torch._dynamo.config  # a submodule
        after = type(sys.modules["torch._dynamo"]).__name__
        print(before, after, torch._dynamo.config is not None, hasattr(torch._dynamo, "optimize"))
        """
    )
    assert out == "_EagerDynamo module True True"


def test_an_sb3_stage_never_imports_dynamo() -> None:
    """PPO and SAC on our env through the stage's entry point keep the shim."""
    out = _python(
        """
        import sys
        import numpy as np
        from stable_baselines3 import PPO, SAC
        from trade_agent.threads import apply_thread_plan
        from trade_agent.market.simulator import MarketPanel, SimulatorConfig
        from trade_agent.market.trading_env import VecPortfolioEnv
        apply_thread_plan("auto", "policy")
        rng = np.random.default_rng(0)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (300, 2)), axis=0))
        panel = MarketPanel(rng.standard_normal((300, 2, 3)).astype(np.float32), np.zeros((300, 2, 0), np.float32),
                            close, close, 252.0)
        env = VecPortfolioEnv(panel, SimulatorConfig(window=2, episode_length=64), n_envs=2, seed=0)
        PPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0, device="cpu").learn(64)
        SAC("MlpPolicy", env, learning_starts=16, batch_size=16, seed=0, device="cpu").learn(48)
        print(type(sys.modules.get("torch._dynamo")).__name__)
        """
    )
    assert out == "_EagerDynamo"


@pytest.mark.parametrize("section", ["cnn_lstm", "rl.common"])
def test_an_old_per_stage_thread_key_says_where_it_moved(section: str) -> None:
    raw: dict[str, object] = {"cnn_lstm": {"threads": 1}}
    if section == "rl.common":
        raw = {"rl": {"common": {"threads": 1}}}
    with pytest.raises(ConfigError, match=rf"^{re.escape(section)}\.threads is now base\.threads .*'{section}'$"):
        params_from_dict(raw)
