"""How many seeds an open question needs: the power of the report's t-tests and the seeds (pairs) that would detect an
observed difference.

Pure functions on plain numbers (no MLflow). The power of a two-sided t-test at level alpha, with `dof` degrees of
freedom and noncentrality `nc`, is P(|T| > t(1 - alpha/2, dof)) for T ~ noncentral t(dof, nc):
- paired (the t-test on n per-seed differences): dof = n - 1, nc = |Δ| / sd(d) · sqrt(n), as statsmodels'
  `TTestPower` computes it;
- Welch with n runs a side: se = sqrt((sd_a² + sd_b²) / n), nc = |Δ| / se, dof by Welch-Satterthwaite; with equal
  sds this is the two-sample test of statsmodels' `TTestIndPower` (dof = 2n - 2, nc = d · sqrt(n / 2)).

The report plans at alpha / m, Holm's strictest step over the m tested variants of a metric: a difference that
clears it is declared whatever the other variants' p-values are.
"""

from __future__ import annotations

import math

from scipy import special as _special  # ufuncs behind scipy.stats.t and .nct: the same numbers, far cheaper a call

from xentlab.report.statistics import Difference

POWER = 0.8  # the usual planning target: 4 chances in 5 to detect a true difference of the observed size
MAX_SEEDS = 50  # beyond this the advice is "too small to chase", not a number


def t_test_power(nc: float, dof: float, alpha: float) -> float:
    """Power of a two-sided t-test at level `alpha` with noncentrality `nc` and `dof` degrees of freedom."""
    crit = float(_special.stdtrit(dof, 1 - alpha / 2))
    upper = 1.0 - float(_special.nctdtr(dof, abs(nc), crit))
    lower = float(_special.nctdtr(dof, abs(nc), -crit))
    # The noncentral t returns NaN for a far tail (below ~1e-30) at a large nc: it is 0 to any precision here.
    return min(1.0, (upper if math.isfinite(upper) else 1.0) + (lower if math.isfinite(lower) else 0.0))


def paired_power(delta: float, sd: float, n: int, alpha: float) -> float:
    """Power of the paired t-test on `n` pairs whose differences have mean `delta` and std `sd`."""
    return t_test_power(abs(delta) / sd * math.sqrt(n), n - 1, alpha)


def welch_power(delta: float, sd_a: float, sd_b: float, n: int, alpha: float) -> float:
    """Power of Welch's t-test with `n` runs a side, side stds `sd_a` and `sd_b`, true difference `delta`."""
    va, vb = sd_a**2 / n, sd_b**2 / n
    dof = (va + vb) ** 2 / ((va**2 + vb**2) / (n - 1))
    return t_test_power(abs(delta) / math.sqrt(va + vb), dof, alpha)


def seeds_needed(diff: Difference, alpha: float, *, power: float = POWER, cap: int = MAX_SEEDS) -> int | None:
    """The fewest seeds (pairs for a paired test, runs a side for Welch) whose test at level `alpha` detects the
    observed difference `diff.mean` with probability `power`, taking the observed spread as the truth.

    Returns None when even `cap` seeds would not (a zero difference included): the effect is too small to chase.
    An untested difference (fewer than 2 runs a side) has no spread to plan with: ValueError.
    """
    if not diff.tested:
        raise ValueError(f"an untested difference ({diff.test}) has no spread to plan seeds with")
    if diff.mean == 0.0 or not math.isfinite(diff.mean):
        return None
    if diff.test == "paired":
        if diff.sd == 0.0:
            return 2  # every pair differs by the same amount: the smallest test detects it
        reaches = lambda n: paired_power(diff.mean, diff.sd, n, alpha) >= power  # noqa: E731
    else:
        if diff.sd == 0.0 and diff.sd_baseline == 0.0:
            return 2
        reaches = lambda n: welch_power(diff.mean, diff.sd, diff.sd_baseline, n, alpha) >= power  # noqa: E731
    if not reaches(cap):
        return None
    low, high = 2, cap  # power grows with n: bisect for the first n that reaches it
    while low < high:
        middle = (low + high) // 2
        if reaches(middle):
            high = middle
        else:
            low = middle + 1
    return low
