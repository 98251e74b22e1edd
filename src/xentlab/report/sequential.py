"""Seeds until decided: a group-sequential test of every variant against the baseline that may look after each batch
of seeds and still holds its error rate (Armitage et al. 1969 show that looking without it does not).

Pure functions on plain numbers (numpy and scipy only):
- `obf_spending`: the Lan-DeMets alpha-spending function of O'Brien-Fleming type, in the convention of gsDesign's
  `sfLDOF` and ldbounds: each side spends a(t) = 2 - 2 Phi(Phi^-1(1 - a/4) / sqrt t) of its a = alpha/2, t the
  information fraction (seeds so far / `max_seeds`); two-sided, twice that;
- `boundaries`: the two-sided z boundaries c_1..c_K whose crossing probabilities under the null spend exactly
  alpha(t_k) - alpha(t_k-1) at look k (recursive numerical integration, Armitage, McPherson & Rowe 1969);
- `decide`: the looks replayed over per-seed values. At look k a comparison is tested with the paired t-test on its
  first n_k seeds, rejecting when its p-value is below the nominal level 2 (1 - Phi(c_k)) of its boundary. Holm
  across the m variants is the graphical step-down of Maurer & Bretz (2013): each open comparison holds
  alpha / (m - rejected), and a rejection at a look raises the others' level at that same look. A comparison also
  stops for futility when the seeds a fixed test at its final nominal level would need for 80% power (report.power)
  exceed `max_seeds` even for the observed difference plus one standard error, and at `max_seeds` whatever it shows.
The interval reported is the repeated confidence interval at the look the comparison stopped (Jennison & Turnbull
1989): mean +- t(n-1)^-1(1 - p_k/2) * se, with p_k that look's nominal level; it covers at 1 - alpha whatever look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import optimize, special

from xentlab.report.power import POWER, seeds_needed
from xentlab.report.statistics import Difference, paired_difference

GRID = 801  # Simpson points over a look's continuation region: boundaries to ~1e-4
DECIDED = ("better", "worse")
STOPPED = ("better", "worse", "futile", "not shown")  # "not shown": max_seeds reached without a decision


def _phi_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def obf_spending(t: float, alpha: float) -> float:
    """Two-sided alpha spent by information fraction `t` (0 < t): Lan-DeMets O'Brien-Fleming type, alpha/2 a side
    (the standard design: 5 equal looks at alpha 0.05 give the boundaries 4.877, 3.357, 2.680, 2.290, 2.031)."""
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return alpha
    z = float(special.ndtri(1.0 - alpha / 4.0))
    return 4.0 * _phi_sf(z / math.sqrt(t))


def _simpson(n: int, half: float) -> tuple[np.ndarray, np.ndarray]:
    """Points and Simpson weights over [-half, half] (n odd)."""
    x = np.linspace(-half, half, n)
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (x[1] - x[0]) / 3.0


def _crossing(edge: float, x: np.ndarray, mass: np.ndarray, sd: float) -> float:
    """P(|S_k| >= edge) over the paths still inside, carried as sub-density `mass` at points `x`, step sd `sd`."""
    return float(np.sum(mass * (special.ndtr((x - edge) / sd) + special.ndtr((-edge - x) / sd))))


@lru_cache(maxsize=256)
def boundaries(times: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """The two-sided z boundaries at information fractions `times` (increasing, the last at most 1) for the
    O'Brien-Fleming-type spending of `alpha`.

    The score S(t) = Z(t) sqrt(t) is Brownian motion under the null. The sub-density of S over the paths still
    inside every earlier boundary is carried from look to look on a grid; c_k solves
    P(inside before k, |Z_k| >= c_k) = alpha(t_k) - alpha(t_k-1).
    """
    if not times or any(b <= a for a, b in zip(times, times[1:], strict=False)) or times[0] <= 0 or times[-1] > 1:
        raise ValueError(f"information fractions must increase within (0, 1], got {times}")
    out = [float(special.ndtri(1.0 - obf_spending(times[0], alpha) / 2.0))]
    x, w = _simpson(GRID, out[0] * math.sqrt(times[0]))
    density = np.exp(-x**2 / (2 * times[0])) / math.sqrt(2 * math.pi * times[0])
    for k in range(1, len(times)):
        step, root_t = times[k] - times[k - 1], math.sqrt(times[k])
        target = obf_spending(times[k], alpha) - obf_spending(times[k - 1], alpha)
        mass = density * w
        ck = (optimize.brentq(lambda c, m=mass, s=step, r=root_t, g=target, p=x: _crossing(c * r, p, m, math.sqrt(s))
                              - g, 1e-6, 40.0, xtol=1e-10) if target > 0 else 40.0)
        out.append(float(ck))
        new_x, new_w = _simpson(GRID, ck * root_t)
        kernel = np.exp(-((new_x[:, None] - x[None, :]) ** 2) / (2 * step)) / math.sqrt(2 * math.pi * step)
        density, x, w = kernel @ mass, new_x, new_w
    return tuple(out)


def nominal_levels(times: Sequence[float], alpha: float) -> list[float]:
    """The two-sided nominal p-value each look rejects below: 2 (1 - Phi(c_k))."""
    return [2.0 * _phi_sf(c) for c in boundaries(tuple(float(t) for t in times), float(alpha))]


@dataclass(frozen=True)
class Design:
    """A sequential sweep's plan: seeds added `seed_batch` at a time up to `max_seeds`, family-wise `alpha`."""

    seed_batch: int = 3
    max_seeds: int = 12
    alpha: float = 0.05
    power: float = POWER

    def __post_init__(self) -> None:
        if self.seed_batch < 2:
            raise ValueError(f"sweep.seed_batch must be at least 2 (a t-test needs 2 seeds), got {self.seed_batch}")
        if self.max_seeds < self.seed_batch:
            raise ValueError(f"sweep.max_seeds ({self.max_seeds}) must be at least sweep.seed_batch "
                             f"({self.seed_batch})")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"the family-wise alpha must lie in (0, 1), got {self.alpha}")

    def looks(self) -> list[int]:
        """Seeds per comparison at each planned look: seed_batch, 2 seed_batch, ..., max_seeds."""
        return sorted({min(self.seed_batch * k, self.max_seeds)
                       for k in range(1, -(-self.max_seeds // self.seed_batch) + 1)})

    def line(self) -> str:
        return (f"seeds in batches of {self.seed_batch} up to {self.max_seeds}, Lan-DeMets O'Brien-Fleming alpha "
                f"spending, Holm across variants, family-wise alpha {self.alpha:g}")


@dataclass(frozen=True)
class Decision:
    """Where one comparison stands after the looks so far.

    Attributes:
        variant: the variant compared with the baseline.
        status: "open" (more seeds are planned), "better" / "worse" (decided), "futile" (the seeds it would need
            exceed max_seeds), or "not shown" (max_seeds reached undecided).
        look: the look it stopped at, or the latest look when open (1-based).
        seeds: pairs at that look.
        level: the comparison's share of alpha at that look (alpha / (m - rejected)).
        spent: alpha its test had spent by that look: obf_spending(seeds / max_seeds, level).
        nominal: the nominal p-value that look rejects below.
        diff: the paired difference at that look (variant - baseline).
        ci_low: lower bound of the repeated confidence interval.
        ci_high: upper bound.
    """

    variant: str
    status: str
    look: int
    seeds: int
    level: float
    spent: float
    nominal: float
    diff: Difference
    ci_low: float
    ci_high: float

    @property
    def open(self) -> bool:
        return self.status == "open"


def _paired_at(variant: Mapping, baseline: Mapping, n: int) -> Difference | None:
    """The paired difference on the first `n` seeds both sides ran (in seed order); None with fewer."""
    finite = {s for s in set(variant) & set(baseline) if math.isfinite(variant[s]) and math.isfinite(baseline[s])}
    common = sorted(finite, key=_seed_order)[:n]
    if len(common) < n:
        return None
    return paired_difference([variant[s] for s in common], [baseline[s] for s in common])


def _seed_order(seed) -> tuple:
    text = str(seed)
    return (0, int(text), text) if text.lstrip("-").isdigit() else (1, 0, text)


def _interval(diff: Difference, nominal: float) -> tuple[float, float]:
    if diff.n < 2 or not math.isfinite(diff.sd):
        return float("nan"), float("nan")
    half = float(special.stdtrit(diff.n - 1, 1.0 - nominal / 2.0)) * diff.sd / math.sqrt(diff.n)
    return diff.mean - half, diff.mean + half


def _decision(variant: str, status: str, look: int, n: int, level: float, design: Design, times: tuple,
              diff: Difference) -> Decision:
    nominal = nominal_levels(times, level)[-1]
    low, high = _interval(diff, nominal)
    return Decision(variant, status, look, n, level, obf_spending(n / design.max_seeds, level), nominal, diff,
                    low, high)


def _futile(diff: Difference, design: Design, level: float, looks: list[int]) -> bool:
    """The seeds a fixed test at the final look's nominal level would need for `design.power` exceed max_seeds, even
    for a difference one standard error larger than the observed one (a few seeds' estimate is too noisy to give up
    on as it stands: planned on the observed value alone, 4 + 4 + ... seeds up to 16 lose half the power at
    effect 0.8 sd)."""
    final = nominal_levels([n / design.max_seeds for n in looks], level)[-1]
    hopeful = replace(diff, mean=abs(diff.mean) + diff.sd / math.sqrt(diff.n))
    return seeds_needed(hopeful, final, power=design.power, cap=design.max_seeds) is None


def decide(values: Mapping[str, Mapping], baseline: str, design: Design, better: str = "min") -> list[Decision]:
    """Replays the planned looks over `values` ({variant: {seed: metric}}, the baseline among them) and says where
    each comparison with the baseline stands. Deterministic: the same runs give the same decisions.

    A look happens when every open comparison has its seeds; the seeds beyond the look a comparison stopped at are
    not used. `better` is "min" (lower is better) or "max".
    """
    others = [v for v in values if v != baseline]
    m = len(others)
    looks = design.looks()
    state: dict[str, Decision] = {}
    rejected = 0
    for k, n in enumerate(looks, start=1):
        times = tuple(x / design.max_seeds for x in looks[:k])
        diffs = {v: _paired_at(values[v], values[baseline], n) for v in others
                 if v not in state or state[v].open}
        if any(d is None for d in diffs.values()):  # this look's seeds are not all in: it has not happened
            break
        changed = True
        while changed:  # Holm step-down within the look: a rejection raises the others' level
            changed = False
            level = design.alpha / max(1, m - rejected)
            nominal = nominal_levels(times, level)[-1]
            for v, d in diffs.items():
                if v in state and not state[v].open:
                    continue
                if d.tested and d.p <= nominal and d.mean != 0.0:
                    improves = d.mean < 0 if better == "min" else d.mean > 0
                    state[v] = _decision(v, "better" if improves else "worse", k, n, level, design, times, d)
                    rejected += 1
                    changed = True
                    break
        level = design.alpha / max(1, m - rejected)
        for v, d in diffs.items():
            if v in state and not state[v].open:
                continue
            status = ("not shown" if n >= design.max_seeds else
                      "futile" if d.tested and _futile(d, design, level, looks) else "open")
            state[v] = _decision(v, status, k, n, level, design, times, d)
    return [state[v] for v in others if v in state]


def next_seeds(decisions: Sequence[Decision], variants: Sequence[str], design: Design) -> int:
    """Seeds each open comparison needs for its next look (0 when every comparison has stopped); before any look
    (no decisions yet), the first batch."""
    if not decisions or len(decisions) < len(variants):
        return design.looks()[0]
    open_ = [d for d in decisions if d.open]
    if not open_:
        return 0
    looks = design.looks()
    return looks[min(open_[0].look, len(looks) - 1)]


@dataclass(frozen=True)
class Simulation:
    """What `simulate` measured over `sweeps` simulated sweeps of one variant against the baseline.

    Attributes:
        sweeps: sweeps simulated.
        rejections: sweeps the sequential rule declared a difference in.
        naive_rejections: sweeps "extend until p < alpha" (the plain t-test at every look) declared one in.
        mean_seeds: seeds per side the sequential rule used, on average.
        fixed_seeds: the seeds a fixed paired t-test at alpha needs for the sequential rule's power (None under
            the null).
    """

    sweeps: int
    rejections: int
    naive_rejections: int
    mean_seeds: float
    fixed_seeds: int | None

    @property
    def rate(self) -> float:
        return self.rejections / self.sweeps

    @property
    def naive_rate(self) -> float:
        return self.naive_rejections / self.sweeps


def simulate(design: Design, effect: float, sweeps: int, seed: int = 0) -> Simulation:
    """Sweeps of a variant against the baseline whose per-seed metric differences are N(-effect, 1) (lower is
    better), each run through `decide` and through the naive rule at the same looks."""
    from xentlab.report.power import paired_power

    rng = np.random.default_rng(seed)
    rejections = naive = 0
    seeds = 0
    for _ in range(sweeps):
        base = rng.normal(size=design.max_seeds)
        variant = base - effect + rng.normal(size=design.max_seeds)
        decision = decide({"b": dict(enumerate(base)), "v": dict(enumerate(variant))}, "b", design)[0]
        rejections += decision.status in DECIDED
        seeds += decision.seeds
        naive += any(paired_difference(variant[:n], base[:n]).p < design.alpha for n in design.looks())
    power = rejections / sweeps
    fixed = (next((n for n in range(2, 1000) if paired_power(effect, 1.0, n, design.alpha) >= power), None)
             if effect else None)
    return Simulation(sweeps, rejections, naive, seeds / sweeps, fixed)
