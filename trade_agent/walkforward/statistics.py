"""Multiple-testing statistics for backtests: PSR, expected maximum Sharpe, DSR, PBO (CSCV) and a
paired bootstrap of a Sharpe-ratio difference.

Conventions shared by every function here:

* Inputs are per-bar simple returns (numpy float64). Sharpe ratios are **per period** (per bar,
  zero risk-free rate, not annualised) unless a parameter says otherwise (``periods_per_year``).
* The Sharpe ratio is ``mean / std`` with the sample standard deviation (``ddof=1``). A flat
  series (every value equal, or fewer than two values) has Sharpe 0, as in
  :func:`trade_agent.market.trading.trading_metrics`. Flatness is tested exactly (``max == min``),
  not by ``std == 0``: the floating-point standard deviation of a constant non-zero series is
  often a spurious ``1e-19``, which would turn "no evidence" into an enormous Sharpe ratio.
* Skewness and kurtosis are the plain moment estimators ``g3 = m3 / m2**1.5`` and
  ``g4 = m4 / m2**2`` with ``m_k = mean((r - mean(r))**k)``: ``g4`` is the non-excess kurtosis
  (3 for a normal law). These equal ``scipy.stats.skew(r)`` and
  ``scipy.stats.kurtosis(r, fisher=False)`` with their default ``bias=True``, the estimators used
  by the Python code accompanying Bailey & López de Prado's papers. With them ``g4 >= g3**2 + 1``
  always holds, so the PSR variance term below cannot be negative for a real return series.

References:
    Bailey, D. H. & López de Prado, M. (2012). The Sharpe Ratio Efficient Frontier.
        Journal of Risk 15(2), 3-44. (PSR)
    Bailey, D. H. & López de Prado, M. (2014). The Deflated Sharpe Ratio: Correcting for
        Selection Bias, Backtest Overfitting and Non-Normality. Journal of Portfolio
        Management 40(5), 94-107. (expected maximum Sharpe ratio SR0, DSR)
    Bailey, D. H., Borwein, J., López de Prado, M. & Zhu, Q. J. (2017). The Probability of
        Backtest Overfitting. Journal of Computational Finance 20(4), 39-69. (PBO by CSCV)
    Politis, D. N. & Romano, J. P. (1994). The Stationary Bootstrap. JASA 89(428), 1303-1313.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from trade_agent.market.bootstrap import stationary_bootstrap_indices
from trade_agent.type_aliases import BoolArray, FloatArray, IntArray

_NORMAL = NormalDist()
EULER_GAMMA = 0.5772156649015329  # Euler-Mascheroni constant
_PBO_CHUNK_ELEMENTS = 2_000_000  # (combinations x S/2 x N) gathered at once in pbo_cscv


def _returns_vector(returns: FloatArray, name: str = "returns") -> FloatArray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-bar returns, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return r


def sharpe_ratio(returns: FloatArray) -> float:
    """Per-period Sharpe ratio ``mean / std(ddof=1)``; 0 for a flat series or fewer than two bars."""
    r = _returns_vector(returns)
    if r.size < 2 or r.max() == r.min():
        return 0.0
    return float(r.mean() / r.std(ddof=1))


def _moments(r: FloatArray) -> tuple[float, float, float]:
    """(per-period Sharpe, skewness g3, non-excess kurtosis g4) by the plain moment estimators.

    A flat series has no dispersion to estimate higher moments from: it gets the normal law's
    moments (skew 0, kurtosis 3) together with its Sharpe of 0.
    """
    if r.max() == r.min():
        return 0.0, 0.0, 3.0
    centred = r - r.mean()
    m2 = float(np.mean(centred**2))
    m3 = float(np.mean(centred**3))
    m4 = float(np.mean(centred**4))
    return float(r.mean() / r.std(ddof=1)), m3 / m2**1.5, m4 / m2**2


def skew_kurtosis(returns: FloatArray) -> tuple[float, float]:
    """Skewness and non-excess kurtosis as the PSR uses them (recorded so a DSR can be recomputed)."""
    _, skew, kurtosis = _moments(_returns_vector(returns))
    return skew, kurtosis


def psr_from_moments(sharpe: float, n: int, skew: float, kurtosis: float, benchmark_sharpe: float = 0.0) -> float:
    """Probabilistic Sharpe Ratio from summary statistics (Bailey & López de Prado 2012, eq. for PSR).

    ``PSR(SR*) = Phi( (SR - SR*) * sqrt(n - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR**2) )``:
    the probability that the true Sharpe ratio exceeds ``SR*`` given an estimate ``SR`` from ``n``
    observations whose skewness is ``g3`` and (non-excess) kurtosis ``g4``.

    Args:
        sharpe: estimated per-period Sharpe ratio ``SR``.
        n: number of observations behind it (at least 2).
        skew: skewness ``g3`` of the returns.
        kurtosis: non-excess kurtosis ``g4`` of the returns (3 for normal returns).
        benchmark_sharpe: per-period benchmark ``SR*``.

    Raises:
        ValueError: ``n < 2``, a non-finite input, or moments for which the variance term
            ``1 - g3 * SR + (g4 - 1) / 4 * SR**2`` is not positive (impossible for moments of a
            real sample, where ``g4 >= g3**2 + 1``).
    """
    if n < 2:
        raise ValueError(f"PSR needs at least 2 observations, got n={n}")
    values = (sharpe, skew, kurtosis, benchmark_sharpe)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"PSR inputs must be finite, got sharpe, skew, kurtosis, benchmark = {values}")
    variance_term = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if variance_term <= 0.0:
        raise ValueError(
            f"skew={skew} and kurtosis={kurtosis} give a non-positive Sharpe variance term ({variance_term}) "
            f"at sharpe={sharpe}: not the moments of a real sample (kurtosis must be >= skew**2 + 1)"
        )
    z = (sharpe - benchmark_sharpe) * math.sqrt(n - 1) / math.sqrt(variance_term)
    return _NORMAL.cdf(z)


def probabilistic_sharpe_ratio(returns: FloatArray, benchmark_sharpe: float = 0.0) -> float:
    """PSR of a return series against a per-period benchmark Sharpe ratio (Bailey & López de Prado 2012).

    The Sharpe ratio, skewness and kurtosis are estimated from ``returns`` as described in the
    module docstring and passed to :func:`psr_from_moments`. A flat (zero-variance) series has
    Sharpe 0 and normal moments, so its PSR is ``Phi(-SR* * sqrt(n - 1))``: 0.5 against the
    default benchmark 0 (no evidence either way).

    Raises:
        ValueError: fewer than 3 returns (skewness and kurtosis need three), or non-finite values.
    """
    r = _returns_vector(returns)
    if r.size < 3:
        raise ValueError(f"PSR needs at least 3 returns to estimate skewness and kurtosis, got {r.size}")
    sharpe, skew, kurtosis = _moments(r)
    return psr_from_moments(sharpe, r.size, skew, kurtosis, benchmark_sharpe)


def expected_max_sharpe(trial_sharpe_variance: float, n_trials: int) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe estimates whose true Sharpe is 0
    (Bailey & López de Prado 2014, SR0 of the DSR):

    ``SR0 = sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))``

    with ``gamma`` the Euler-Mascheroni constant and ``V`` the variance of the trials' Sharpe
    ratios (per period, as the result). One trial involves no selection: ``SR0 = 0``.

    Raises:
        ValueError: ``n_trials < 1`` or a negative or non-finite variance.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if not math.isfinite(trial_sharpe_variance) or trial_sharpe_variance < 0.0:
        raise ValueError(f"trial_sharpe_variance must be finite and non-negative, got {trial_sharpe_variance}")
    if n_trials == 1:
        return 0.0
    quantiles = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials) + EULER_GAMMA * _NORMAL.inv_cdf(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return math.sqrt(trial_sharpe_variance) * quantiles


@dataclass(frozen=True)
class DeflatedSharpe:
    """Result of :func:`deflated_sharpe_ratio` (all Sharpe ratios per period).

    Attributes:
        dsr: PSR of the selected strategy against ``benchmark_sharpe`` (the deflated Sharpe ratio).
        psr: PSR of the selected strategy against 0 (no deflation), for comparison.
        sharpe: the selected strategy's Sharpe ratio.
        benchmark_sharpe: SR0, the expected maximum Sharpe of ``n_trials`` skill-less trials.
        n_trials: number of (independent) trials ``N`` used for SR0.
        trial_sharpe_variance: the variance ``V`` of the trials' Sharpe ratios used for SR0.
    """

    dsr: float
    psr: float
    sharpe: float
    benchmark_sharpe: float
    n_trials: int
    trial_sharpe_variance: float


def deflated_sharpe_ratio(
    returns: FloatArray, trial_sharpes: FloatArray, n_trials: int | None = None
) -> DeflatedSharpe:
    """Deflated Sharpe Ratio (Bailey & López de Prado 2014): ``DSR = PSR(SR0)``.

    Args:
        returns: per-bar returns of the selected strategy (at least 3).
        trial_sharpes: per-period Sharpe ratios of **all** trials of the search, the selected one
            included. ``V`` is their sample variance (``ddof=1``).
        n_trials: number of independent trials ``N``; defaults to ``len(trial_sharpes)``. A smaller
            value may be passed as an effective number of independent trials when trials are
            correlated, a larger one when not every trial's Sharpe ratio was recorded.

    With fewer than two trial Sharpe ratios their variance cannot be estimated. ``V`` then falls
    back on the null hypothesis the DSR tests: all trials skill-less and independent, so their
    Sharpe estimates differ only by estimation error, whose variance at a true Sharpe of 0 is
    ``1 / (n - 1)`` (the PSR variance term at SR = 0, any skewness and kurtosis). With a single
    trial and no ``n_trials`` there is no selection: ``N = 1``, ``SR0 = 0`` and ``dsr == psr``.

    Raises:
        ValueError: fewer than 3 returns, non-finite values, or no trial at all (``N < 1``).
    """
    r = _returns_vector(returns)
    if r.size < 3:
        raise ValueError(f"DSR needs at least 3 returns to estimate skewness and kurtosis, got {r.size}")
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    if trials.ndim != 1:
        raise ValueError(f"trial_sharpes must be a 1-D array, got shape {trials.shape}")
    if not np.all(np.isfinite(trials)):
        raise ValueError("trial_sharpes contains NaN or infinite values")
    count = int(trials.size) if n_trials is None else int(n_trials)
    if count < 1:
        raise ValueError(f"the number of trials must be at least 1, got {count}")
    variance = float(trials.var(ddof=1)) if trials.size >= 2 else 1.0 / (r.size - 1)
    sharpe, skew, kurtosis = _moments(r)
    benchmark = expected_max_sharpe(variance, count)
    return DeflatedSharpe(
        dsr=psr_from_moments(sharpe, r.size, skew, kurtosis, benchmark),
        psr=psr_from_moments(sharpe, r.size, skew, kurtosis, 0.0),
        sharpe=sharpe,
        benchmark_sharpe=benchmark,
        n_trials=count,
        trial_sharpe_variance=variance,
    )


def column_sharpes(matrix: FloatArray) -> FloatArray:
    """Per-period Sharpe ratio of every column of a ``(T, N)`` matrix (0 for a flat column)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D (T, N) matrix, got shape {m.shape}")
    if m.shape[0] < 2:
        return np.zeros(m.shape[1])
    flat = m.max(axis=0) == m.min(axis=0)
    std = m.std(axis=0, ddof=1)
    return np.where(flat, 0.0, m.mean(axis=0) / np.where(flat, 1.0, std))


@dataclass(frozen=True, eq=False)
class PBOResult:
    """Result of :func:`pbo_cscv`; arrays have one entry per CSCV combination (read-only).

    Attributes:
        pbo: share of combinations whose in-sample best configuration ranks at or below the
            out-of-sample median (logit <= 0).
        logits: ``ln(w / (1 - w))`` with ``w`` the relative OOS rank of the IS-best configuration.
        n_combinations: ``C(S, S/2)``.
        n_blocks: ``S``.
        n_configurations: ``N``.
        rows_used: rows entering the blocks (``T - T mod S``, the first rows).
        best_in_sample: index of the IS-best configuration ``n*`` in each combination.
        is_performance: metric of ``n*`` in sample (Sharpe by default): the x of the
            performance-degradation scatter.
        oos_performance: metric of ``n*`` out of sample: the y of that scatter.
    """

    pbo: float
    logits: FloatArray
    n_combinations: int
    n_blocks: int
    n_configurations: int
    rows_used: int
    best_in_sample: IntArray
    is_performance: FloatArray
    oos_performance: FloatArray


def _sharpe_from_sums(
    total: FloatArray, squares: FloatArray, offset: FloatArray, flat: BoolArray, rows: int
) -> FloatArray:
    """Sharpe ratios from sums and sums of squares of column-centred returns over ``rows`` rows."""
    mean_centred = total / rows
    variance = np.maximum((squares - total * mean_centred) / (rows - 1), 0.0)
    degenerate = flat | (variance <= 0.0)
    return np.where(degenerate, 0.0, (mean_centred + offset) / np.sqrt(np.where(degenerate, 1.0, variance)))


def _relative_rank_logits(is_perf: FloatArray, oos_perf: FloatArray) -> tuple[IntArray, FloatArray]:
    """IS-best configuration per row and the logit of its relative OOS rank (ties: average rank)."""
    best = np.argmax(is_perf, axis=1)
    chosen = oos_perf[np.arange(len(best)), best][:, None]
    below = np.sum(oos_perf < chosen, axis=1)
    equal = np.sum(oos_perf == chosen, axis=1)  # counts n* itself
    rank = below + (equal + 1) / 2.0  # 1 = worst ... N = best
    omega = rank / (is_perf.shape[1] + 1)
    return best.astype(np.int64), np.log(omega / (1.0 - omega))


def pbo_cscv(
    performance_matrix: FloatArray,
    n_blocks: int = 16,
    metric: Callable[[FloatArray], FloatArray] | None = None,
) -> PBOResult:
    """Probability of Backtest Overfitting by combinatorially symmetric cross-validation
    (Bailey, Borwein, López de Prado & Zhu 2017).

    The ``(T, N)`` matrix of per-bar returns of ``N`` configurations loses its last ``T mod S``
    rows and is cut into ``S`` contiguous blocks of equal length. Each of the ``C(S, S/2)``
    choices of ``S/2`` blocks is an in-sample set, its complement the out-of-sample set. For each
    combination: ``n* = argmax`` of the in-sample metric (ties go to the lowest column index),
    ``w = rank_OOS(n*) / (N + 1)`` with rank 1 the worst and N the best out of sample (tied
    values share their average rank), and ``logit = ln(w / (1 - w))``. PBO is the share of
    combinations with ``logit <= 0``: the IS-best configuration does no better than the OOS median.

    Args:
        performance_matrix: ``(T, N)`` per-bar returns, ``N >= 2``, ``T >= S``.
        n_blocks: ``S``, even and at least 2.
        metric: ``None`` for the per-period Sharpe ratio, computed from per-block sums and sums of
            squares so that each combination costs O(S N) arithmetic; or a callable mapping a
            ``(rows, N)`` matrix to ``N`` finite scores (higher is better), evaluated on the
            concatenated blocks of every combination (slower).

    Raises:
        ValueError: odd or too small ``S``, ``N < 2``, ``T < S``, halves shorter than 2 rows,
            non-finite returns, or a metric returning the wrong shape or non-finite values.
    """
    m = np.asarray(performance_matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"performance_matrix must be 2-D (T bars x N configurations), got shape {m.shape}")
    n_rows, n_configs = m.shape
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be an even number >= 2, got {n_blocks}")
    if n_configs < 2:
        raise ValueError(f"PBO compares configurations: need at least 2 columns, got {n_configs}")
    if n_rows < n_blocks:
        raise ValueError(f"need at least n_blocks={n_blocks} rows, got T={n_rows}")
    block_len = n_rows // n_blocks
    half = n_blocks // 2
    half_rows = half * block_len
    if half_rows < 2:
        raise ValueError(f"each half has {half_rows} row(s): a Sharpe ratio needs at least 2 (use more rows)")
    if not np.all(np.isfinite(m)):
        raise ValueError("performance_matrix contains NaN or infinite values")
    rows_used = block_len * n_blocks
    blocks = m[:rows_used].reshape(n_blocks, block_len, n_configs)

    combos = np.array(list(itertools.combinations(range(n_blocks), half)), dtype=np.int64)
    complements = np.array([sorted(set(range(n_blocks)) - set(c)) for c in combos.tolist()], dtype=np.int64)
    n_comb = len(combos)
    best = np.empty(n_comb, dtype=np.int64)
    logits = np.empty(n_comb)
    is_best = np.empty(n_comb)
    oos_best = np.empty(n_comb)

    if metric is None:
        offset = m[:rows_used].mean(axis=0)
        centred = blocks - offset
        block_sum = centred.sum(axis=1)  # (S, N)
        block_sq = (centred**2).sum(axis=1)
        block_max = blocks.max(axis=1)
        block_min = blocks.min(axis=1)
        chunk = max(1, _PBO_CHUNK_ELEMENTS // (half * n_configs))
        for start in range(0, n_comb, chunk):
            part = slice(start, start + chunk)
            perf = []
            for chosen in (combos[part], complements[part]):
                flat = block_max[chosen].max(axis=1) == block_min[chosen].min(axis=1)
                perf.append(
                    _sharpe_from_sums(
                        block_sum[chosen].sum(axis=1), block_sq[chosen].sum(axis=1), offset, flat, half_rows
                    )
                )
            is_perf, oos_perf = perf
            best[part], logits[part] = _relative_rank_logits(is_perf, oos_perf)
            rows = np.arange(len(best[part]))
            is_best[part] = is_perf[rows, best[part]]
            oos_best[part] = oos_perf[rows, best[part]]
    else:
        is_all = np.empty((n_comb, n_configs))
        oos_all = np.empty((n_comb, n_configs))
        for i, (chosen, rest) in enumerate(zip(combos, complements, strict=True)):
            for target, sel in ((is_all, chosen), (oos_all, rest)):
                scores = np.asarray(metric(blocks[sel].reshape(half_rows, n_configs)), dtype=np.float64)
                if scores.shape != (n_configs,) or not np.all(np.isfinite(scores)):
                    raise ValueError(f"metric must return {n_configs} finite scores, got {scores!r}")
                target[i] = scores
        best, logits = _relative_rank_logits(is_all, oos_all)
        is_best = is_all[np.arange(n_comb), best]
        oos_best = oos_all[np.arange(n_comb), best]

    for array in (best, logits, is_best, oos_best):
        array.setflags(write=False)
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        n_combinations=n_comb,
        n_blocks=n_blocks,
        n_configurations=n_configs,
        rows_used=rows_used,
        best_in_sample=best,
        is_performance=is_best,
        oos_performance=oos_best,
    )


def _row_sharpes(resampled: FloatArray) -> FloatArray:
    """Per-period Sharpe ratio of every row (0 for a flat row)."""
    flat = resampled.max(axis=1) == resampled.min(axis=1)
    std = resampled.std(axis=1, ddof=1)
    return np.where(flat, 0.0, resampled.mean(axis=1) / np.where(flat, 1.0, std))


def paired_sharpe_difference(
    returns_a: FloatArray,
    returns_b: FloatArray,
    periods_per_year: float,
    samples: int = 2000,
    block_length: float = 10.0,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Annualised ``Sharpe(a) - Sharpe(b)`` and its percentile interval at ``level``.

    The two series are bars of the same calendar (same length). The stationary block bootstrap
    (Politis & Romano 1994; :func:`trade_agent.market.bootstrap.stationary_bootstrap_indices`)
    draws one set of indices per sample and applies it to **both** series, which keeps their
    dependence: the interval is that of the difference, not of two independent Sharpe ratios.
    Flat series (and resamples) have Sharpe 0; fewer than two bars give ``(0, 0, 0)``.

    Returns:
        ``(difference, low, high)``, annualised by ``sqrt(periods_per_year)``.

    Raises:
        ValueError: series of different lengths, non-finite values, ``samples < 1``,
            ``block_length < 1``, ``periods_per_year <= 0`` or ``level`` outside (0, 1).
    """
    a = _returns_vector(returns_a, "returns_a")
    b = _returns_vector(returns_b, "returns_b")
    if a.size != b.size:
        raise ValueError(f"paired series must have the same length, got {a.size} and {b.size}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if block_length < 1.0:
        raise ValueError(f"block_length must be at least 1, got {block_length}")
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if a.size < 2:
        return 0.0, 0.0, 0.0
    scale = math.sqrt(periods_per_year)
    difference = (sharpe_ratio(a) - sharpe_ratio(b)) * scale
    indices = stationary_bootstrap_indices(a.size, samples, block_length, seed)
    resampled = (_row_sharpes(a[indices]) - _row_sharpes(b[indices])) * scale
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return float(difference), float(low), float(high)
