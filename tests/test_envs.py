"""Trading environment: gymnasium/SB3 compliance, t+1 fills, costs, vectorised equivalence."""

from __future__ import annotations

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
