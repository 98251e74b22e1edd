"""Statistics of the comparison report: a variant against the baseline, paired by seed or Welch, Holm-corrected.

Pure functions on plain numbers (no MLflow): `compare_runs` picks the test, `paired_difference` and
`welch_difference` compute the mean difference, its 95% confidence interval and the two-sided p-value,
`holm` corrects the p-values of one metric over the variants, `verdict` reads them in the metric's direction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special as _special  # the t distribution's ufuncs: scipy.stats.t's numbers, 30x faster a call

# Which way a metric is better ("min", "max" or None), under any of its logged names: the metric table's.
from xentlab.metric_table import direction  # noqa: F401  (re-exported: the report's modules read it here)

ALPHA = 0.05
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    """A variant minus the baseline on one metric.

    Attributes:
        mean: mean difference (variant - baseline); NaN when a side has no value.
        ci_low: lower bound of its 95% confidence interval (NaN when untested).
        ci_high: upper bound (NaN when untested).
        p: two-sided p-value before correction (NaN when untested).
        test: "paired" (t-test on the common seeds), "welch" (Welch's t-test) or "untested".
        n: pairs for "paired", else the runs of the variant.
        n_baseline: pairs for "paired", else the runs of the baseline.
        sd: sample std of the paired differences for "paired", of the variant's values for "welch" (what the
            seeds-needed advice of report.power plans with); NaN when untested.
        sd_baseline: sample std of the baseline's values for "welch"; NaN otherwise.
    """

    mean: float
    ci_low: float
    ci_high: float
    p: float
    test: str
    n: int
    n_baseline: int
    sd: float = float("nan")
    sd_baseline: float = float("nan")

    @property
    def tested(self) -> bool:
        return self.test != "untested"


def _t_interval(mean: float, se: float, dof: float, confidence: float) -> tuple[float, float, float]:
    """(low, high, two-sided p of mean = 0) of a t statistic with standard error `se` and `dof` degrees."""
    if se == 0.0:
        # Every difference equal: no spread to test against. Zero difference -> no evidence (p = 1); a constant
        # non-zero difference -> as certain as a t statistic can be (p = 0), the interval the single value.
        return mean, mean, 1.0 if mean == 0.0 else 0.0
    q = float(_special.stdtrit(dof, 0.5 + confidence / 2))  # = scipy.stats.t.ppf
    p = float(2 * _special.stdtr(dof, -abs(mean / se)))  # = 2 scipy.stats.t.sf(|t|)
    return mean - q * se, mean + q * se, p


def paired_difference(variant: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
                      ) -> Difference:
    """Paired t-test: the i-th values of both sides come from the same seed.

    The interval is the t interval of the mean of the differences, mean(d) +- t(n-1) * sd(d) / sqrt(n).
    With fewer than 2 pairs the difference is untested.
    """
    if len(variant) != len(baseline):
        raise ValueError(f"paired values need the same length on both sides, got {len(variant)} and {len(baseline)}")
    d = np.asarray(variant, dtype="float64") - np.asarray(baseline, dtype="float64")
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return Difference(mean, float("nan"), float("nan"), float("nan"), "untested", n, n)
    sd = float(d.std(ddof=1))
    low, high, p = _t_interval(mean, sd / math.sqrt(n), n - 1, confidence)
    return Difference(mean, low, high, p, "paired", n, n, sd)


def welch_difference(variant: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
                     ) -> Difference:
    """Welch's t-test (unequal variances) of mean(variant) - mean(baseline).

    The interval uses the Welch-Satterthwaite degrees of freedom,
    dof = (va/na + vb/nb)^2 / ((va/na)^2/(na-1) + (vb/nb)^2/(nb-1)). Untested with fewer than 2 runs a side.
    """
    a = np.asarray(variant, dtype="float64")
    b = np.asarray(baseline, dtype="float64")
    mean = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return Difference(mean, float("nan"), float("nan"), float("nan"), "untested", len(a), len(b))
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else 1.0
    low, high, p = _t_interval(mean, se, dof, confidence)
    return Difference(mean, low, high, p, "welch", len(a), len(b), float(a.std(ddof=1)), float(b.std(ddof=1)))


def compare_runs(variant: Mapping[str, float] | Sequence[tuple[str, float]],
                 baseline: Mapping[str, float] | Sequence[tuple[str, float]]) -> Difference:
    """Variant against baseline from (seed, value) pairs of their runs (NaN values are left out).

    Paired on the seeds both sides ran when there are at least 2 of them and no seed repeats within a side;
    otherwise Welch's test over all runs; untested when even that lacks 2 runs a side.
    """
    a = [(str(s), float(v)) for s, v in (variant.items() if isinstance(variant, Mapping) else variant)
         if math.isfinite(float(v))]
    b = [(str(s), float(v)) for s, v in (baseline.items() if isinstance(baseline, Mapping) else baseline)
         if math.isfinite(float(v))]
    seeds_a, seeds_b = [s for s, _ in a], [s for s, _ in b]
    unique = len(set(seeds_a)) == len(seeds_a) and len(set(seeds_b)) == len(seeds_b)
    common = sorted(set(seeds_a) & set(seeds_b))
    if unique and len(common) >= 2:
        va, vb = dict(a), dict(b)
        return paired_difference([va[s] for s in common], [vb[s] for s in common])
    return welch_difference([v for _, v in a], [v for _, v in b])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family = the finite entries; NaN stays NaN).

    Sorted ascending p(1) <= ... <= p(m): adj(i) = max over j <= i of min(1, (m - j + 1) * p(j)).
    """
    finite = [(p, i) for i, p in enumerate(p_values) if math.isfinite(p)]
    finite.sort()
    m = len(finite)
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(diff: Difference, p_adjusted: float, better: str, alpha: float = ALPHA) -> str:
    """ "better" / "worse" / "no difference" at `alpha` after correction; "untested" without a p-value.

    `better` is "min" (lower is better) or "max".
    """
    if not diff.tested or not math.isfinite(p_adjusted):
        return "untested"
    if p_adjusted >= alpha or diff.mean == 0.0:
        return "no difference"
    improves = diff.mean < 0 if better == "min" else diff.mean > 0
    return "better" if improves else "worse"

