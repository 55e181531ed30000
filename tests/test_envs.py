"""Trading environment: gymnasium/SB3 compliance, t+1 fills, costs, vectorised equivalence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

from trade_agent.data.frequency import DAILY_PERIODS_PER_YEAR
from trade_agent.market.simulator import MarketPanel, SimulatorConfig
from trade_agent.market.trading_env import PortfolioEnv, VecPortfolioEnv


def panel(n_bars: int = 80, n_assets: int = 2, seed: int = 0) -> MarketPanel:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_bars, n_assets)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.003, (n_bars, n_assets)))
    return MarketPanel(
        features=rng.normal(size=(n_bars, n_assets, 3)).astype(np.float32),
        context=rng.random((n_bars, n_assets, 2)).astype(np.float32),
        open=open_,
        close=close,
        periods_per_year=DAILY_PERIODS_PER_YEAR,
    )


CONFIG = SimulatorConfig(window=5, cost_bps=10.0, slippage_bps=5.0, episode_length=40)


@pytest.mark.parametrize("discrete", [False, True])
def test_check_env_passes(discrete: bool) -> None:
    check_env(PortfolioEnv(panel(), CONFIG, random_start=True, discrete=discrete), warn=True)


def test_fill_at_next_open_not_at_the_decision_bar() -> None:
    base = panel()
    env = PortfolioEnv(base, CONFIG)
    _, info = env.reset(options={"start": 10})
    t = info["t"]
    _, reward, *_ = env.step(np.array([1.0, 0.0]))

    def reward_with(open_=None, close=None) -> float:
        p = MarketPanel(
            base.features,
            base.context,
            open_ if open_ is not None else base.open,
            close if close is not None else base.close,
            base.periods_per_year,
        )
        e = PortfolioEnv(p, CONFIG)
        e.reset(options={"start": 10})
        return e.step(np.array([1.0, 0.0]))[1]

    moved_open = base.open.copy()
    moved_open[t + 1, 0] *= 1.05
    assert reward_with(open_=moved_open) != pytest.approx(reward)  # the fill price is open[t+1]
    moved_close = base.close.copy()
    moved_close[t, 0] *= 1.05  # bar t's close, which the decision already saw
    assert reward_with(close=moved_close) == pytest.approx(reward)
    # The reward is exactly: cost at the fill, then open[t+1] -> close[t+1].
    expected = np.log((1 - 15e-4) * base.close[t + 1, 0] / base.open[t + 1, 0])
    assert reward == pytest.approx(expected)


def test_rewards_and_reported_value_agree_on_costs() -> None:
    env = PortfolioEnv(panel(seed=3), CONFIG)
    env.reset(options={"start": 4})
    rng = np.random.default_rng(1)
    total, costs, done = 0.0, 0.0, False
    while not done:
        _, reward, done, _, info = env.step(rng.uniform(-1, 1, 2))
        total += reward
        costs += info["cost"]
    assert np.exp(total) == pytest.approx(info["portfolio_value"])
    assert costs > 0 and info["t"] == 4 + CONFIG.episode_length


def test_leverage_is_capped() -> None:
    env = PortfolioEnv(panel(), SimulatorConfig(window=5, max_leverage=1.5))
    env.reset()
    *_, info = env.step(np.array([1.0, -1.0]))
    assert np.abs(info["target"]).sum() == pytest.approx(1.5)


def test_vectorised_env_gives_the_same_trajectories() -> None:
    p = panel(n_bars=120, seed=5)
    starts = [4, 10, 30, 60]
    vec = VecPortfolioEnv(p, CONFIG, n_envs=4, starts=starts)
    singles = [PortfolioEnv(p, CONFIG) for _ in starts]
    observations = vec.reset()
    for env, start, obs in zip(singles, starts, observations, strict=True):
        np.testing.assert_allclose(env.reset(options={"start": start})[0], obs, rtol=1e-6)
    rng = np.random.default_rng(2)
    for _ in range(50):  # crosses episode ends: auto-reset must match a manual reset
        actions = rng.uniform(-1, 1, (4, 2)).astype(np.float32)
        obs, rewards, dones, infos = vec.step(actions)
        for i, env in enumerate(singles):
            single_obs, reward, done, _, _ = env.step(actions[i])
            assert reward == pytest.approx(float(rewards[i]), rel=1e-5) and done == bool(dones[i])
            if done:
                np.testing.assert_allclose(infos[i]["terminal_observation"], single_obs, rtol=1e-6)
                single_obs, _ = env.reset(options={"start": starts[i]})
            np.testing.assert_allclose(obs[i], single_obs, rtol=1e-6)


def test_panel_from_stage_outputs(tiny_features_dir) -> None:
    import json

    import pandas as pd

    from trade_agent.market.panel import build_panel

    features = pd.read_parquet(tiny_features_dir / "features.parquet")
    names = json.loads((tiny_features_dir / "schema.json").read_text())["feature_names"]
    market = pd.read_parquet(tiny_features_dir.parent / "prepared" / "market.parquet")
    embeddings = features[["timestamp", "symbol"]].assign(emb_0=1.0, prob_up=0.5)
    panel, times, symbols = build_panel(features, names, embeddings, market, "val", window=5, periods_per_year=6_000.0)
    assert symbols == ["SYN0", "SYN1"] and panel.features.shape == (len(times), 2, len(names))
    assert panel.context.shape[2] == 2 and panel.periods_per_year == 6_000.0
    val_times = features.loc[features["split"] == "val", "timestamp"].unique()
    assert times[4] == val_times.min() and times[-1] == val_times.max()  # 4 bars of history before
    row = market[(market["timestamp"] == times[7]) & (market["symbol"] == "SYN1")]
    assert panel.open[7, 1] == row["open"].iloc[0] and panel.close[7, 1] == row["close"].iloc[0]
    env = PortfolioEnv(panel, SimulatorConfig(window=5))
    assert env.reset()[1]["t"] == 4  # the first decision is the split's first bar


@pytest.mark.parametrize(("n_assets", "penalty"), [(1, 0.0), (3, 0.5)])
def test_single_portfolio_matches_the_batched_simulator(n_assets: int, penalty: float) -> None:
    from trade_agent.market.simulator import PortfolioSimulator
    from trade_agent.market.single import SinglePortfolio

    p = panel(n_bars=150, seed=7, n_assets=n_assets)
    config = SimulatorConfig(window=5, episode_length=100, drawdown_penalty=penalty, max_leverage=1.5)
    single, batched = SinglePortfolio(p, config), PortfolioSimulator(p, config, n_envs=1)
    single.reset(7)
    batched.reset(np.array([0]), np.array([7]))
    rng = np.random.default_rng(3)
    done = False
    while not done:
        np.testing.assert_allclose(single.observe(), batched.observe()[0], rtol=1e-6)
        action = rng.uniform(-1.2, 1.2, n_assets) * (rng.random(n_assets) > 0.2)  # some flats, some clipping
        reward, done, info = single.step(action)
        rewards, dones, details = batched.step(action[None])
        assert reward == pytest.approx(float(rewards[0]), rel=1e-12, abs=1e-15) and done == bool(dones[0])
        for key in ("cost", "turnover", "portfolio_value"):
            assert info[key] == pytest.approx(float(details[key][0]), rel=1e-12)
        np.testing.assert_allclose(info["target"], details["target"][0], rtol=1e-12)
    assert single.t == 107


def test_evaluation_episodes_run_to_the_end_with_training_observations() -> None:
    p = panel(n_bars=120, seed=8)
    config = SimulatorConfig(window=5, episode_length=20)
    train, whole = PortfolioEnv(p, config), PortfolioEnv(p, config)
    obs_train, _ = train.reset(options={"start": 4})
    obs_whole, _ = whole.reset(options={"start": 4, "to_end": True})
    action = np.array([0.5, -0.5])  # held positions make the time-in-position feature grow
    for step in range(1, 21):
        np.testing.assert_array_equal(obs_whole, obs_train)
        obs_train, _, done_train, _, _ = train.step(action)
        obs_whole, _, done_whole, _, _ = whole.step(action)
        assert done_train == (step == 20) and not done_whole
    for _ in range(39):
        assert not whole.step(action)[2]
    assert whole.sim.t == 63 and whole.sim.end == 119  # the last decision is bar 118


def _reference_batched(p: MarketPanel, config: SimulatorConfig, starts: np.ndarray):
    """The batched dynamics written plainly (no precomputed bars): what the fast path must equal bit for bit."""
    n_envs, n = len(starts), p.n_assets
    s: dict[str, Any] = {"t": starts.copy(), "w": np.zeros((n_envs, n)), "v": np.ones(n_envs)}
    s |= {"peak": np.ones(n_envs), "entry": np.ones((n_envs, n)), "held": np.zeros((n_envs, n))}
    rate = (config.cost_bps + config.slippage_bps) / 1e4
    end = np.minimum(starts + config.episode_length, p.n_bars - 1)

    def reset(envs: np.ndarray) -> None:
        s["t"][envs], s["v"][envs], s["peak"][envs] = starts[envs], 1.0, 1.0
        s["w"][envs], s["entry"][envs], s["held"][envs] = 0.0, 1.0, 0.0

    def observe() -> np.ndarray:
        t = s["t"]
        window = p.features[t[:, None] + np.arange(-config.window + 1, 1)].reshape(n_envs, -1)
        unrealised = np.sign(s["w"]) * np.log(p.close[t] / s["entry"])
        state = [s["w"], unrealised, s["held"] / config.episode_length]
        return np.concatenate([window, p.context[t].reshape(n_envs, -1), *state], axis=1).astype(np.float32)

    def step(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        t, w = s["t"], s["w"]
        a = np.clip(np.asarray(actions, dtype=np.float64).reshape(n_envs, -1), -1.0, 1.0)
        gross = np.abs(a).sum(axis=1)
        cap = config.max_leverage
        target = a * np.where(gross > cap, cap / np.maximum(gross, 1e-12), 1.0)[:, None]
        gap = p.open[t + 1] / p.close[t] - 1.0
        gap_return = (w * gap).sum(axis=1)
        drifted = w * (1.0 + gap) / (1.0 + gap_return)[:, None]
        value = s["v"] * (1.0 + gap_return)
        turnover = np.abs(target - drifted).sum(axis=1)
        cost = value * turnover * rate
        value = value - cost
        day = p.close[t + 1] / p.open[t + 1] - 1.0
        day_return = (target * day).sum(axis=1)
        new_value = value * (1.0 + day_return)
        flipped = np.sign(target) != np.sign(drifted)
        s["entry"] = np.where(flipped, p.open[t + 1], s["entry"])
        s["held"] = np.where(flipped, 0.0, s["held"] + 1.0) * (target != 0)
        s["w"] = target * (1.0 + day) / (1.0 + day_return)[:, None]
        growth = np.log(new_value / s["v"])
        s["peak"] = np.maximum(s["peak"], new_value)
        rewards = growth - config.drawdown_penalty * (1.0 - new_value / s["peak"])
        s["v"], s["t"] = new_value, t + 1
        details = {"cost": cost, "turnover": turnover, "growth": growth, "portfolio_value": new_value, "target": target}
        return rewards, s["t"] >= end, details

    return observe, step, reset


def _reference_single(p: MarketPanel, config: SimulatorConfig, start: int):
    """One portfolio on Python floats, written plainly: what SinglePortfolio must equal bit for bit."""
    import math

    sign = lambda x: (x > 0) - (x < 0)  # noqa: E731
    n, rate = p.n_assets, (config.cost_bps + config.slippage_bps) / 1e4
    features = p.features.reshape(p.n_bars, -1).astype(np.float32)
    context = p.context.reshape(p.n_bars, -1).astype(np.float32)
    s: dict[str, Any] = {"t": start, "w": [0.0] * n, "entry": [1.0] * n, "held": [0.0] * n, "v": 1.0, "peak": 1.0}

    def observe() -> np.ndarray:
        t, close = s["t"], p.close[s["t"]].tolist()
        unrealised = [sign(w) * math.log(c / e) for w, c, e in zip(s["w"], close, s["entry"], strict=True)]
        state = np.array(s["w"] + unrealised + [h / config.episode_length for h in s["held"]]).astype(np.float32)
        return np.concatenate([features[t - config.window + 1 : t + 1].reshape(-1), context[t], state])

    def step(action: np.ndarray) -> tuple[float, dict]:
        t = s["t"]
        a = [min(max(x, -1.0), 1.0) for x in np.ravel(action).tolist()]
        gross, cap = sum(map(abs, a)), config.max_leverage
        target = [x * (cap / max(gross, 1e-12)) for x in a] if gross > cap else a
        open1, close0, close1 = p.open[t + 1].tolist(), p.close[t].tolist(), p.close[t + 1].tolist()
        gaps = [o / c - 1.0 for o, c in zip(open1, close0, strict=True)]
        gap_return = sum([w * g for w, g in zip(s["w"], gaps, strict=True)])
        drifted = [w * (1.0 + g) / (1.0 + gap_return) for w, g in zip(s["w"], gaps, strict=True)]
        value = s["v"] * (1.0 + gap_return)
        turnover = sum([abs(x - y) for x, y in zip(target, drifted, strict=True)])
        cost = value * turnover * rate
        value -= cost
        days = [c / o - 1.0 for c, o in zip(close1, open1, strict=True)]
        day_return = sum([w * d for w, d in zip(target, days, strict=True)])
        new_value = value * (1.0 + day_return)
        for i, (new, old) in enumerate(zip(target, drifted, strict=True)):
            flipped = sign(new) != sign(old)
            if flipped:
                s["entry"][i] = open1[i]
            s["held"][i] = (0.0 if flipped else s["held"][i] + 1.0) if new != 0 else 0.0
        s["w"] = [w * (1.0 + d) / (1.0 + day_return) for w, d in zip(target, days, strict=True)]
        growth = math.log(new_value / s["v"])
        s["peak"] = max(s["peak"], new_value)
        reward = growth - config.drawdown_penalty * (1.0 - new_value / s["peak"])
        s["v"], s["t"] = new_value, t + 1
        info = {"cost": cost, "turnover": turnover, "growth": growth, "portfolio_value": new_value}
        return reward, info | {"target": np.array(target)}

    return observe, step


def _bits(x: object) -> bytes:
    return np.asarray(x).tobytes()  # bit-for-bit, signed zeros included


@pytest.mark.parametrize("prefix", [True, False])  # precomputed observation rows, or a strided view
@pytest.mark.parametrize(
    ("n_assets", "penalty", "leverage"), [(1, 0.0, 1.0), (1, 0.3, 0.5), (3, 0.0, 1.0), (3, 0.2, 2.5)]
)
def test_fast_paths_equal_the_plain_formulas_bit_for_bit(
    n_assets: int, penalty: float, leverage: float, prefix: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trade_agent.market import simulator

    if not prefix:
        monkeypatch.setattr(simulator, "PREFIX_BUDGET_BYTES", 0)
    p = panel(n_bars=90, n_assets=n_assets, seed=11)
    config = SimulatorConfig(window=5, episode_length=30, drawdown_penalty=penalty, max_leverage=leverage)
    rng = np.random.default_rng(4)
    starts = np.array([4, 20, 51, 57])
    vec = VecPortfolioEnv(p, config, n_envs=4, starts=starts.tolist())
    observe, step, reset = _reference_batched(p, config, starts)
    assert _bits(vec.reset()) == _bits(observe())
    for _ in range(45):  # through auto-resets
        actions = (rng.uniform(-1.5, 1.5, (4, n_assets)) * (rng.random((4, n_assets)) > 0.3)).astype(np.float32)
        obs, rewards, dones, infos = vec.step(actions)
        expected_rewards, expected_dones, expected = step(actions)
        assert _bits(rewards) == _bits(expected_rewards.astype(np.float32)) and _bits(dones) == _bits(expected_dones)
        for key, values in expected.items():
            assert _bits(vec.details[key]) == _bits(values), key
        terminal = observe()
        for i in np.flatnonzero(dones):
            assert _bits(infos[i]["terminal_observation"]) == _bits(terminal[i])
        reset(np.flatnonzero(dones))
        assert _bits(obs) == _bits(observe())
    single = PortfolioEnv(p, config)
    for start in (4, 60):
        observe1, step1 = _reference_single(p, config, start)
        assert _bits(single.reset(options={"start": start})[0]) == _bits(observe1())
        done = False
        while not done:
            action = rng.uniform(-1.5, 1.5, n_assets) * (rng.random(n_assets) > 0.3)
            obs1, reward, done, _, info = single.step(action)
            expected_reward, expected_info = step1(action)
            assert _bits(reward) == _bits(expected_reward) and _bits(obs1) == _bits(observe1())
            assert all(_bits(info[k]) == _bits(v) for k, v in expected_info.items())


def test_vec_infos_hold_sb3_keys_and_the_details_stay_arrays() -> None:
    p = panel(n_bars=60, seed=2)
    vec = VecPortfolioEnv(p, SimulatorConfig(window=5, episode_length=3), n_envs=3, starts=[4, 4, 50])
    vec.reset()
    for step in range(1, 4):
        obs, _, dones, infos = vec.step(np.zeros((3, 2), np.float32))
        assert all(info["TimeLimit.truncated"] is False for info in infos)  # episode ends are terminal
        assert [("terminal_observation" in info) for info in infos] == list(dones) == [step == 3] * 3
        assert set(vec.details) == {"cost", "turnover", "growth", "portfolio_value", "target"}
        assert vec.details["target"].shape == (3, 2) and vec.details["portfolio_value"].shape == (3,)
    assert not np.array_equal(infos[0]["terminal_observation"], np.asarray(obs)[0])  # before the reset, not after


def test_starts_outside_the_decision_bars_are_refused() -> None:
    p = panel(n_bars=40)
    with pytest.raises(ValueError, match="decision bars"):
        VecPortfolioEnv(p, CONFIG, n_envs=2, starts=[3, 10])  # window 5: the first decision is bar 4
    with pytest.raises(ValueError, match="decision bars"):
        VecPortfolioEnv(p, CONFIG, n_envs=2, starts=[4])
    env = PortfolioEnv(p, CONFIG)
    for start in (3, 39):  # bar 39 has no next bar to fill at
        with pytest.raises(ValueError, match="decision bars"):
            env.reset(options={"start": start})


def test_per_bar_arrays_are_shared_per_panel_and_go_with_it() -> None:
    import gc

    from trade_agent.market import simulator

    p = panel(n_bars=50)
    a, b = PortfolioEnv(p, CONFIG), PortfolioEnv(p, CONFIG)
    vec = VecPortfolioEnv(p, CONFIG, n_envs=2)
    assert a.sim._bars is b.sim._bars and a.sim._bars.prefix is vec.sim._prefix is not None
    key = id(p)
    assert key in simulator._PER_PANEL
    del a, b, vec, p
    gc.collect()
    assert key not in simulator._PER_PANEL
