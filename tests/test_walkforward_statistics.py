"""Multiple-testing statistics (PSR, SR0, DSR, PBO, paired Sharpe difference) against hand arithmetic,
the Deflated Sharpe Ratio paper's numerical example, Monte Carlo and planted-signal cases."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest

from trade_agent.market.bootstrap import stationary_bootstrap_indices
from trade_agent.walkforward.statistics import (
    DeflatedSharpe,
    column_sharpes,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    paired_sharpe_difference,
    pbo_cscv,
    probabilistic_sharpe_ratio,
    psr_from_moments,
    sharpe_ratio,
)

PHI = NormalDist().cdf

# ---------------------------------------------------------------------------------------------- PSR


def test_psr_hand_computed() -> None:
    """r = [0.04, 0, 0, 0, 0.01]: mean 0.01, deviations [0.03, -0.01, -0.01, -0.01, 0]."""
    r = np.array([0.04, 0.00, 0.00, 0.00, 0.01])
    # sum of squared deviations = (9 + 1 + 1 + 1 + 0)e-4 = 12e-4; cubes (27 - 3)e-6 = 24e-6; fourth (81 + 3)e-8
    std = math.sqrt(12e-4 / 4)  # ddof=1: sqrt(3e-4)
    sharpe = 0.01 / std  # = 1/sqrt(3) = 0.57735
    m2, m3, m4 = 12e-4 / 5, 24e-6 / 5, 84e-8 / 5  # 2.4e-4, 4.8e-6, 1.68e-7
    skew = m3 / m2**1.5  # = 2/sqrt(2.4) = 1.290994
    kurt = m4 / m2**2  # = 35/12 = 2.916667
    assert sharpe == pytest.approx(1 / math.sqrt(3))
    assert skew == pytest.approx(2 / math.sqrt(2.4))
    assert kurt == pytest.approx(35 / 12)
    assert sharpe_ratio(r) == pytest.approx(sharpe)
    # skew * SR = sqrt(5)/3 = 0.745356; (kurt - 1)/4 * SR^2 = 23/144 = 0.159722; sqrt(n - 1) = 2
    z = (1 / math.sqrt(3)) * 2 / math.sqrt(1 - math.sqrt(5) / 3 + 23 / 144)  # = 1.793813
    assert z == pytest.approx(1.793813, abs=1e-6)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(PHI(z), rel=1e-12)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(0.963578, abs=1e-6)
    assert psr_from_moments(sharpe, 5, skew, kurt) == pytest.approx(0.963578, abs=1e-6)
    # against a benchmark of 0.1 per period: z = (SR - 0.1) * 2 / sqrt(...)
    z_bench = (1 / math.sqrt(3) - 0.1) * 2 / math.sqrt(1 - math.sqrt(5) / 3 + 23 / 144)
    assert probabilistic_sharpe_ratio(r, benchmark_sharpe=0.1) == pytest.approx(PHI(z_bench), rel=1e-12)


def test_moment_estimators_match_scipy_defaults_written_out() -> None:
    """skew/kurtosis are the plain (bias=True) moment estimators; checked on a random series."""
    r = np.random.default_rng(3).standard_t(5, 500) * 0.01
    c = r - r.mean()
    skew = np.mean(c**3) / np.mean(c**2) ** 1.5
    kurt = np.mean(c**4) / np.mean(c**2) ** 2
    expected = psr_from_moments(r.mean() / r.std(ddof=1), r.size, skew, kurt, 0.02)
    assert probabilistic_sharpe_ratio(r, 0.02) == pytest.approx(expected, rel=1e-12)


def test_dsr_paper_numerical_example() -> None:
    """Bailey & López de Prado (2014), numerical example: annualised SR 2.5 over T = 1250 daily bars,
    N = 100 trials with V[SR] = 1/2 (annualised), skew -3, kurtosis 10 -> DSR ~ 0.9004.
    Per-period (250 bars/year): SR = 2.5/sqrt(250) = 0.158114, V = 0.5/250 = 0.002."""
    sharpe, variance = 2.5 / math.sqrt(250), 0.5 / 250
    sr0 = expected_max_sharpe(variance, 100)
    # sqrt(0.002) * (0.42278 * Phi^-1(0.99) + 0.57722 * Phi^-1(1 - 1/(100 e))) = 0.04472 * 2.53060
    assert sr0 == pytest.approx(0.113172, abs=1e-6)
    assert sr0 * math.sqrt(250) == pytest.approx(1.7894, abs=1e-4)  # SR0 annualised
    dsr = psr_from_moments(sharpe, 1250, -3.0, 10.0, sr0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_psr_at_its_own_sharpe_is_one_half_and_grows_with_n() -> None:
    r = np.random.default_rng(0).normal(0.001, 0.01, 300)
    assert probabilistic_sharpe_ratio(r, benchmark_sharpe=sharpe_ratio(r)) == pytest.approx(0.5, abs=1e-12)
    values = [psr_from_moments(0.05, n, -0.5, 6.0) for n in (10, 50, 250, 1000, 5000)]
    assert all(b > a for a, b in itertools.pairwise(values))
    assert values[0] > 0.5  # positive SR against 0


def test_psr_degenerate_inputs() -> None:
    assert probabilistic_sharpe_ratio(np.zeros(20)) == 0.5
    assert probabilistic_sharpe_ratio(np.full(20, 0.001)) == 0.5  # flat: Sharpe 0, no evidence
    assert probabilistic_sharpe_ratio(np.full(20, 0.001), 0.1) == pytest.approx(PHI(-0.1 * math.sqrt(19)))
    with pytest.raises(ValueError, match="at least 3 returns"):
        probabilistic_sharpe_ratio(np.array([0.01, 0.02]))
    with pytest.raises(ValueError, match="NaN"):
        probabilistic_sharpe_ratio(np.array([0.01, np.nan, 0.02]))
    with pytest.raises(ValueError, match="non-positive"):
        psr_from_moments(1.0, 100, 2.0, 1.0)  # kurtosis < skew^2 + 1: no real sample has these
    with pytest.raises(ValueError, match="at least 2"):
        psr_from_moments(0.1, 1, 0.0, 3.0)


# ------------------------------------------------------------------------------- expected max Sharpe


def test_expected_max_sharpe_one_trial_and_monotone() -> None:
    assert expected_max_sharpe(0.3, 1) == 0.0
    values = [expected_max_sharpe(1.0, n) for n in (1, 2, 5, 10, 100, 1000, 10_000)]
    assert all(b > a for a, b in itertools.pairwise(values))
    assert expected_max_sharpe(4.0, 10) == pytest.approx(2 * expected_max_sharpe(1.0, 10))
    with pytest.raises(ValueError):
        expected_max_sharpe(1.0, 0)
    with pytest.raises(ValueError):
        expected_max_sharpe(-1.0, 10)


@pytest.mark.parametrize("n_trials", [10, 100])
def test_expected_max_sharpe_matches_monte_carlo(n_trials: int) -> None:
    """E[max of N standard normals] x sqrt(V): 1.539 (N=10), 2.508 (N=100); the approximation is
    within a few percent (1.575 and 2.531)."""
    variance = 0.002
    draws = np.random.default_rng(42).standard_normal((20_000, n_trials))
    simulated = draws.max(axis=1).mean() * math.sqrt(variance)
    assert expected_max_sharpe(variance, n_trials) == pytest.approx(simulated, rel=0.04)


# ---------------------------------------------------------------------------------------------- DSR


def _selected_and_trials(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, 0.01, (1000, 30))
    returns[:, 0] += 0.0015  # a real per-period Sharpe of ~0.15
    return returns[:, 0], column_sharpes(returns)


def test_dsr_is_psr_at_sr0() -> None:
    selected, trials = _selected_and_trials()
    result = deflated_sharpe_ratio(selected, trials)
    assert isinstance(result, DeflatedSharpe)
    assert result.n_trials == 30
    assert result.trial_sharpe_variance == pytest.approx(trials.var(ddof=1))
    assert result.benchmark_sharpe == pytest.approx(expected_max_sharpe(trials.var(ddof=1), 30))
    assert result.sharpe == pytest.approx(sharpe_ratio(selected))
    assert result.dsr == pytest.approx(probabilistic_sharpe_ratio(selected, result.benchmark_sharpe), rel=1e-12)
    assert result.psr == pytest.approx(probabilistic_sharpe_ratio(selected), rel=1e-12)
    assert result.dsr < result.psr


def test_dsr_decreases_with_the_number_of_trials() -> None:
    selected, trials = _selected_and_trials()
    values = [deflated_sharpe_ratio(selected, trials, n_trials=n).dsr for n in (1, 2, 10, 100, 1000, 100_000)]
    assert all(b < a for a, b in itertools.pairwise(values))
    assert values[0] == pytest.approx(probabilistic_sharpe_ratio(selected))  # N = 1: no deflation


def test_dsr_with_a_single_trial() -> None:
    selected, _ = _selected_and_trials()
    alone = deflated_sharpe_ratio(selected, np.array([sharpe_ratio(selected)]))
    assert alone.n_trials == 1 and alone.benchmark_sharpe == 0.0
    assert alone.dsr == alone.psr
    # N trials reported but only one Sharpe recorded: V from the null, 1/(n - 1)
    declared = deflated_sharpe_ratio(selected, np.array([sharpe_ratio(selected)]), n_trials=50)
    assert declared.trial_sharpe_variance == pytest.approx(1 / 999)
    assert declared.benchmark_sharpe == pytest.approx(expected_max_sharpe(1 / 999, 50))
    with pytest.raises(ValueError, match="at least 1"):
        deflated_sharpe_ratio(selected, np.array([]))


# ---------------------------------------------------------------------------------------------- PBO


def _hand_case() -> np.ndarray:
    """T = 8, S = 4 blocks of 2 rows, N = 2. Config 0 has block means (4, 1, -2, -5)e-2 (rows
    mean -/+ 0.01, never flat); config 1 is flat (Sharpe 0 everywhere), so config 0's Sharpe
    beats it exactly when its mean is positive. Sums of block means per IS pair / OOS complement:
    {0,1}: +5 / -7 -> n* = 0, OOS worse than flat  -> rank 1, logit ln(1/2)  (overfit)
    {0,2}: +2 / -4 -> n* = 0, OOS worse           -> rank 1 (overfit)
    {0,3}: -1 / -1 -> n* = 1 (flat), config 0 loses OOS -> rank 2, logit ln 2
    {1,2}: -1 / -1 -> n* = 1, rank 2, logit ln 2
    {1,3}: -4 / +2 -> n* = 1, config 0 wins OOS   -> rank 1 (overfit)
    {2,3}: -7 / +5 -> n* = 1, rank 1 (overfit)
    PBO = 4/6."""
    means = [0.04, 0.01, -0.02, -0.05]
    config0 = np.array([[mu - 0.01, mu + 0.01] for mu in means]).ravel()
    return np.column_stack([config0, np.zeros(8)])


def test_pbo_hand_case() -> None:
    m = _hand_case()
    result = pbo_cscv(m, n_blocks=4)
    assert result.n_combinations == 6 and result.n_blocks == 4 and result.n_configurations == 2
    assert result.pbo == pytest.approx(4 / 6)
    np.testing.assert_array_equal(result.best_in_sample, [0, 0, 1, 1, 1, 1])
    ln2 = math.log(2.0)
    np.testing.assert_allclose(result.logits, [-ln2, -ln2, ln2, ln2, -ln2, -ln2])
    # degradation pair of {0,1}: IS rows of config 0 = [0.03, 0.05, 0.00, 0.02], OOS = [-0.03, -0.01, -0.06, -0.04]
    is_rows, oos_rows = np.array([0.03, 0.05, 0.00, 0.02]), np.array([-0.03, -0.01, -0.06, -0.04])
    assert result.is_performance[0] == pytest.approx(is_rows.mean() / is_rows.std(ddof=1))  # 0.025/0.0208 = 1.2
    assert result.oos_performance[0] == pytest.approx(oos_rows.mean() / oos_rows.std(ddof=1))
    assert result.is_performance[0] == pytest.approx(0.025 / math.sqrt(0.0013 / 3))
    assert result.oos_performance[2] == 0.0  # n* is the flat configuration
    # the generic metric path gives the same answer
    generic = pbo_cscv(m, n_blocks=4, metric=column_sharpes)
    np.testing.assert_allclose(generic.logits, result.logits)
    np.testing.assert_allclose(generic.is_performance, result.is_performance)


def test_pbo_drops_trailing_rows_and_ties_share_ranks() -> None:
    m = np.vstack([_hand_case(), [[9.0, -9.0], [9.0, -9.0], [9.0, -9.0]]])  # T = 11: last 3 rows dropped
    result = pbo_cscv(m, n_blocks=4)
    assert result.rows_used == 8
    assert result.pbo == pytest.approx(4 / 6)
    twins = np.tile(np.random.default_rng(0).normal(0, 0.01, (40, 1)), (1, 2))  # identical configurations
    tied = pbo_cscv(twins, n_blocks=4)
    np.testing.assert_array_equal(tied.logits, np.zeros(6))  # average rank 1.5 of 2 -> w = 1/2 -> logit 0
    assert tied.pbo == 1.0  # logit <= 0 counts as overfit


def test_pbo_fast_path_equals_generic_metric() -> None:
    m = np.random.default_rng(5).normal(0.0002, 0.01, (240, 6))
    fast = pbo_cscv(m, n_blocks=6)
    generic = pbo_cscv(m, n_blocks=6, metric=column_sharpes)
    assert fast.n_combinations == 20
    np.testing.assert_array_equal(fast.best_in_sample, generic.best_in_sample)
    np.testing.assert_allclose(fast.logits, generic.logits)
    np.testing.assert_allclose(fast.is_performance, generic.is_performance, rtol=1e-9)
    np.testing.assert_allclose(fast.oos_performance, generic.oos_performance, rtol=1e-9)


def test_pbo_planted_signal_is_not_overfit() -> None:
    rng = np.random.default_rng(11)
    m = rng.normal(0.0, 0.01, (1600, 11))
    m[:, 7] += 0.0015  # per-period Sharpe ~0.15 among ten skill-less configurations
    result = pbo_cscv(m, n_blocks=16)
    assert result.n_combinations == 12_870
    assert result.pbo < 0.1
    assert np.mean(result.best_in_sample == 7) > 0.9


def test_pbo_pure_noise_is_a_coin_flip() -> None:
    """Skill-less configurations (N = 20, T = 2000, S = 16): the IS-best lands above or below the OOS
    median at random, so PBO is about 1/2. One data set's PBO is itself very noisy (the 12,870
    combinations share the same bars: over 40 seeds it ranged 0.19-0.88), so the test averages ten."""
    values = [
        pbo_cscv(np.random.default_rng(seed).normal(0.0, 0.01, (2000, 20)), n_blocks=16).pbo for seed in range(10)
    ]
    assert 0.4 < np.mean(values) < 0.7
    result = pbo_cscv(np.random.default_rng(3).normal(0.0, 0.01, (2000, 20)), n_blocks=16)
    assert 0.3 < result.pbo < 0.7
    assert result.logits.shape == (12_870,)
    assert not result.logits.flags.writeable


def test_pbo_rejects_bad_shapes() -> None:
    m = np.random.default_rng(0).normal(0, 0.01, (64, 4))
    for bad in (3, 5, 0):
        with pytest.raises(ValueError, match="even"):
            pbo_cscv(m, n_blocks=bad)
    with pytest.raises(ValueError, match="at least 2 columns"):
        pbo_cscv(m[:, :1], n_blocks=4)
    with pytest.raises(ValueError, match="rows"):
        pbo_cscv(m[:6], n_blocks=8)
    with pytest.raises(ValueError, match="2-D"):
        pbo_cscv(m[:, 0], n_blocks=4)


# ------------------------------------------------------------------------------ paired difference


def test_paired_difference_of_identical_series_is_zero() -> None:
    r = np.random.default_rng(0).normal(0.0005, 0.01, 500)
    assert paired_sharpe_difference(r, r, 252, 500, 10.0, 0) == (0.0, 0.0, 0.0)
    assert paired_sharpe_difference(np.zeros(50), np.zeros(50), 252, 200, 5.0, 0) == (0.0, 0.0, 0.0)


def test_paired_difference_detects_a_constant_drift() -> None:
    b = np.random.default_rng(1).normal(0.0, 0.01, 1000)
    a = b + 0.002  # same noise, 0.2 per-period Sharpe more
    diff, low, high = paired_sharpe_difference(a, b, 252, 1000, 10.0, 3)
    assert diff == pytest.approx((sharpe_ratio(a) - sharpe_ratio(b)) * math.sqrt(252))
    assert diff == pytest.approx(0.002 / b.std(ddof=1) * math.sqrt(252))
    assert 0 < low < diff < high


def test_flat_series_has_sharpe_zero_in_the_difference() -> None:
    b = np.random.default_rng(4).normal(0.001, 0.01, 300)
    diff, low, high = paired_sharpe_difference(np.full(300, 0.001), b, 252, 300, 10.0, 0)
    assert diff == pytest.approx(-sharpe_ratio(b) * math.sqrt(252))
    assert low < diff < high


def test_paired_interval_is_narrower_than_an_unpaired_one() -> None:
    rng = np.random.default_rng(8)
    common = rng.normal(0.0005, 0.01, 800)
    a = common + rng.normal(0.0, 0.001, 800)  # correlation ~0.995
    b = common + rng.normal(0.0, 0.001, 800)
    _, low, high = paired_sharpe_difference(a, b, 252, 1000, 10.0, 0)
    idx_a = stationary_bootstrap_indices(800, 1000, 10.0, 0)
    idx_b = stationary_bootstrap_indices(800, 1000, 10.0, 1)  # independent resamples of each series
    unpaired = (column_sharpes(a[idx_a].T) - column_sharpes(b[idx_b].T)) * math.sqrt(252)
    u_low, u_high = np.quantile(unpaired, [0.025, 0.975])
    assert high - low < 0.25 * (u_high - u_low)


def test_paired_difference_rejects_bad_input() -> None:
    r = np.zeros(10)
    with pytest.raises(ValueError, match="same length"):
        paired_sharpe_difference(r, np.zeros(11), 252, 10, 5.0, 0)
    with pytest.raises(ValueError, match="level"):
        paired_sharpe_difference(r, r, 252, 10, 5.0, 0, level=1.0)
    with pytest.raises(ValueError, match="block_length"):
        paired_sharpe_difference(r, r, 252, 10, 0.5, 0)
