"""Seeds until decided (xentlab.report.sequential): the spending boundaries against published values and a Monte
Carlo of Brownian motion, the looks replayed over a stubbed metric source, and the error rate by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xentlab.report.sequential import (
    DECIDED,
    Design,
    boundaries,
    decide,
    next_seeds,
    nominal_levels,
    obf_spending,
    simulate,
)

# Lan-DeMets O'Brien-Fleming-type boundaries, two-sided alpha 0.05 (0.025 a side), equally spaced looks, as gsDesign
# (sfLDOF) and ldbounds print them (e.g. Jennison & Turnbull 2000, ch. 7; ldbounds' documented example for K = 5).
PUBLISHED = {
    2: (2.9626, 1.9686),
    3: (3.7103, 2.5114, 1.9930),
    4: (4.3326, 2.9631, 2.3590, 2.0141),
    5: (4.8769, 3.3569, 2.6803, 2.2898, 2.0310),
}


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    low = stats.beta.ppf((1 - confidence) / 2, k, n - k + 1) if k else 0.0
    high = stats.beta.ppf(1 - (1 - confidence) / 2, k + 1, n - k) if k < n else 1.0
    return float(low), float(high)


@pytest.mark.parametrize("looks", sorted(PUBLISHED))
def test_boundaries_match_the_published_standard_designs(looks):
    times = tuple((k + 1) / looks for k in range(looks))
    assert boundaries(times, 0.05) == pytest.approx(PUBLISHED[looks], abs=2e-4)


def test_boundaries_spend_what_the_function_says_on_simulated_brownian_motion():
    """Independent of the integration: 200,000 standardized Brownian paths, unequal looks; the share of paths that
    first cross at each look matches alpha(t_k) - alpha(t_k-1) within Monte Carlo error."""
    times = (0.3, 0.55, 0.8, 1.0)
    alpha = 0.05
    c = np.array(boundaries(times, alpha))
    rng = np.random.default_rng(7)
    steps = np.diff((0.0, *times))
    score = np.cumsum(rng.normal(size=(200_000, len(times))) * np.sqrt(steps), axis=1)
    crossed = np.abs(score / np.sqrt(times)) >= c
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    spent = np.diff([0.0] + [obf_spending(t, alpha) for t in times])
    for k, expected in enumerate(spent):
        observed = np.mean(first == k)
        se = math.sqrt(max(expected, 1e-6) / len(first))
        assert abs(observed - expected) < 4 * se + 1e-5, (k, observed, expected)
    assert np.mean(first >= 0) == pytest.approx(alpha, abs=4 * math.sqrt(alpha / len(first)))


def test_spending_starts_near_zero_and_spends_alpha_at_the_last_look():
    assert obf_spending(0.0, 0.05) == 0.0
    assert obf_spending(0.25, 0.05) < 1e-4  # O'Brien-Fleming: almost nothing early
    assert obf_spending(1.0, 0.05) == 0.05
    values = [obf_spending(t, 0.05) for t in np.linspace(0.05, 1, 20)]
    assert values == sorted(values)


def test_a_design_refuses_batches_a_t_test_cannot_use():
    with pytest.raises(ValueError, match="seed_batch must be at least 2"):
        Design(seed_batch=1, max_seeds=10)
    with pytest.raises(ValueError, match="max_seeds"):
        Design(seed_batch=4, max_seeds=3)
    assert Design(seed_batch=4, max_seeds=10).looks() == [4, 8, 10]


def _values(diffs_by_variant: dict[str, list[float]], seeds: int) -> dict[str, dict[int, float]]:
    """A stubbed metric source: the baseline's values by seed, and each variant's as the baseline's plus its
    per-seed difference."""
    base = {s: 1.0 + 0.01 * s for s in range(seeds)}
    out = {"base": base}
    for name, diffs in diffs_by_variant.items():
        out[name] = {s: base[s] + diffs[s] for s in range(len(diffs))}
    return out


def test_a_clear_difference_is_decided_early_and_its_later_seeds_are_not_used():
    design = Design(seed_batch=3, max_seeds=12)
    jitter = [0.01, -0.01, 0.02, -0.02, 0.0, 0.01, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]  # seeds 6.. would say "worse"
    clear = [-1.0 + j for j in jitter]
    decisions = decide(_values({"clear": clear}, 12), "base", design)
    (d,) = decisions
    assert d.status == "better" and d.look == 2 and d.seeds == 6  # OBF: look 1 (3 seeds, p ~ 1e-5) is too strict
    assert d.level == 0.05 and d.spent == pytest.approx(obf_spending(0.5, 0.05))
    assert d.nominal == pytest.approx(nominal_levels([0.25, 0.5], 0.05)[-1])
    assert d.ci_low < d.diff.mean < d.ci_high < 0
    assert next_seeds(decisions, ["clear"], design) == 0  # decided: no more seeds


def test_an_open_comparison_asks_for_the_next_batch_and_a_null_one_stops_for_futility():
    design = Design(seed_batch=3, max_seeds=12)
    promising = [-0.5, -0.1, -0.4]  # observed -0.33, sd 0.2: worth more seeds, not yet significant
    null = [0.3, -0.3, 0.05]
    decisions = decide(_values({"promising": promising, "null": null}, 3), "base", design)
    by = {d.variant: d for d in decisions}
    assert by["promising"].status == "open" and by["promising"].look == 1
    assert by["null"].status == "futile"
    assert by["null"].level == pytest.approx(0.025)  # Holm: m = 2, nothing rejected yet
    assert next_seeds(decisions, ["promising", "null"], design) == 6
    assert next_seeds([], ["promising", "null"], design) == 3


def test_holm_passes_a_rejected_comparison_s_alpha_to_the_others_at_the_same_look():
    design = Design(seed_batch=4, max_seeds=8)
    strong = [-1.0, -1.01, -0.99, -1.0, -1.02, -0.98, -1.0, -1.01]
    # At the last look (8 seeds) p is between the nominal levels of alpha/2 and alpha: only the step-down rejects.
    weaker = [-0.30, -0.05, -0.40, 0.05, -0.25, -0.10, -0.35, 0.02]
    levels = nominal_levels([0.5, 1.0], 0.05)[-1], nominal_levels([0.5, 1.0], 0.025)[-1]
    decisions = {d.variant: d for d in decide(_values({"strong": strong, "weaker": weaker}, 8), "base", design)}
    assert levels[1] < decisions["weaker"].diff.p <= levels[0], decisions["weaker"].diff.p
    assert decisions["strong"].status == "better" and decisions["strong"].level == 0.025
    assert decisions["weaker"].status == "better" and decisions["weaker"].level == 0.05
    assert decisions["weaker"].look == 2


def test_undecided_at_max_seeds_is_not_shown():
    design = Design(seed_batch=2, max_seeds=4)
    wobbly = [-0.5, 0.1, -0.6, 0.3]
    (d,) = decide(_values({"wobbly": wobbly}, 4), "base", design)
    assert d.status in ("not shown", "futile") and d.status not in DECIDED


def test_under_the_null_peeking_inflates_the_error_and_the_sequential_rule_keeps_it():
    """2,000 simulated sweeps (4 looks of 4 seeds): the naive rule's 95% interval lies above 5%, the sequential
    rule's below it."""
    result = simulate(Design(seed_batch=4, max_seeds=16), effect=0.0, sweeps=2000, seed=0)
    assert clopper_pearson(result.naive_rejections, result.sweeps)[0] > 0.05, result
    assert clopper_pearson(result.rejections, result.sweeps)[1] <= 0.05, result


@pytest.mark.slow
def test_under_an_effect_the_sequential_rule_needs_fewer_seeds_than_a_fixed_design_of_its_power():
    result = simulate(Design(seed_batch=4, max_seeds=16), effect=0.8, sweeps=2000, seed=1)
    assert result.rate > 0.6, result
    assert result.mean_seeds < result.fixed_seeds, result


@pytest.mark.slow
def test_family_wise_error_across_three_variants_stays_at_alpha():
    design = Design(seed_batch=3, max_seeds=12)
    rng = np.random.default_rng(3)
    sweeps, any_rejected = 2000, 0
    for _ in range(sweeps):
        base = rng.normal(size=12)
        values = {"base": dict(enumerate(base))}
        values.update({f"v{i}": dict(enumerate(base + rng.normal(size=12))) for i in range(3)})
        any_rejected += any(d.status in DECIDED for d in decide(values, "base", design))
    assert clopper_pearson(any_rejected, sweeps)[1] <= 0.05, any_rejected


def test_the_report_of_a_sequential_sweep_shows_its_verdicts_not_the_plain_tests():
    from xentlab.report.columns import Report
    from xentlab.report.headline import headline
    from xentlab.report.sweep_designs import sequential_view

    design = Design(seed_batch=3, max_seeds=12)
    base = {str(s): {"val_nll": 1.0 + 0.01 * s} for s in range(9)}
    # Decided at look 2: seeds 6..8 (run for another comparison) must not change its numbers.
    clear = {s: {"val_nll": v["val_nll"] - 0.2 + (0.01 if int(s) % 2 else -0.01) + (5.0 if int(s) >= 6 else 0)}
             for s, v in base.items()}
    open_ = {s: {"val_nll": v["val_nll"] + (0.05 if int(s) % 2 else -0.06)} for s, v in base.items()}
    by_seed = {"base": list(base.items()), "clear": list(clear.items()), "open": list(open_.items())}
    comparisons, lines, one_line = sequential_view(by_seed, "base", "val_nll", design)
    by = {c.variant: c for c in comparisons}
    assert by["clear"].verdict == "better" and by["clear"].diff.n == 6 and by["clear"].diff.mean < 0
    assert by["open"].verdict == "no difference"  # not shown: the plain test's verdict is never used
    assert all(c.metric == "val_nll" and math.isnan(c.p_holm) for c in comparisons)
    assert one_line.startswith("Sequential (seeds in batches of 3 up to 12") and "`clear` better at look 2" in one_line
    assert any("| clear | better | 2 | 6 |" in line for line in lines)
    report = Report("s", "p", "base", [{"variant": v} for v in by_seed], comparisons, "", verdict_line=one_line)
    assert headline(report).splitlines()[0] == one_line


@pytest.mark.slow
def test_until_decided_through_the_cli_stops_the_decided_comparison_and_a_rerun_trains_nothing(tmp_path, store):
    from conftest import run_cli, runs_of

    args = ["-m", "optimizer.learning_rate=1.0,0.0001", "sweep.until_decided=true", "sweep.seed_batch=2",
            "sweep.max_seeds=6", "model=mlp", "trainer.epochs=1", "trainer.batch_size=32", "data.limit=64",
            "tracking.log_plots=false", "tracking.system_metrics=false", f"tracking.uri={store}"]
    result = run_cli(args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    parent = next(r for r in runs_of(store) if r.data.tags.get("xentlab.role") == "sweep")
    children = [r for r in runs_of(store) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    seeds = {}
    for r in children:
        seeds.setdefault(r.data.params["optimizer.learning_rate"], set()).add(r.data.params["trainer.seed"])
    # A learning rate of 1e-4 barely trains: worse on every seed, decided before max_seeds, so no seed past it.
    assert seeds["1.0"] == seeds["0.0001"] and len(seeds["1.0"]) < 6, seeds
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("Sequential (seeds in batches of 2 up to 6") and "worse at look" in note, note
    assert "#### Sequential verdicts (seeds until decided)" in result.stdout
    assert "#### Seeds needed" not in result.stdout  # the plain power advice is not the rule of this sweep
    again = run_cli(args, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(children)} jobs: 0 trained, {len(children)} reused, 0 failed" in again.stdout
