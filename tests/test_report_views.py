"""Where reviewers read a sweep's answer: the parent run's headline and metrics, the primary chart and report.html,
on one synthetic sweep laid out as sweeps lay runs out now (short names, `xentlab.variant` tags), checked against
the report's own numbers and against scipy."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from benchmarks.compare_scale import synthetic_sweep
from mlflow.tracking import MlflowClient
from scipy import stats

from xentlab.report.charts import delta_points
from xentlab.report.compare import write_report
from xentlab.report.headline import headline_metrics, metric_key
from xentlab.tracking.naming import run_name

# (variant, val_nll mean, spread over seeds): logit_adjusted clearly better, focal clearly worse, balanced noisy.
SETUPS = [("crossentropy", 0.66, 0.05), ("balanced", 0.58, 0.20), ("focal_effective_number", 0.80, 0.04),
          ("logit_adjusted", 0.50, 0.04)]
SEEDS = range(4)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(store, parent run id, report, {variant: {seed: child metrics}}) of a 4 x 4-seed sweep, reported once."""
    folder = tmp_path_factory.mktemp("views")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    rng = np.random.default_rng(5)
    shared = rng.normal(0.0, 1.0, len(SEEDS))  # a seed's split and start move every set-up alike: pairing helps
    specs, values = [], {}
    for variant, mean, spread in SETUPS:
        for seed in SEEDS:
            nll = mean + 0.05 * shared[seed] + spread * rng.normal()
            metrics = {"val_nll": nll, "val_loss": nll + 0.1, "test_nll": nll + 0.02,
                       "test_ece": rng.normal(0.08, 0.01), "test_balanced_accuracy": rng.normal(0.85, 0.02),
                       "test_worst_class_recall": rng.normal(0.5, 0.1)}
            values.setdefault(variant, {})[str(seed)] = metrics
            specs.append({"variant": f"+setup={variant}", "seed": seed, "name": run_name(variant, seed),
                          "metrics": metrics, "params": {"loss.name": variant},
                          "tags": {"xentlab.variant": variant, "xentlab.variant_overrides": f"+setup={variant}"}})
    parent = synthetic_sweep(uri, specs, baseline="+setup=crossentropy")
    report = write_report(uri, parent_run_id=parent, out_dir=folder / "report")
    return uri, parent, report, values


def test_variants_come_from_the_tag_and_the_preset_baseline_from_their_overrides(sweep):
    from xentlab.report.variants import choose_baseline

    _, _, report, _ = sweep
    assert [r["variant"] for r in report.rows][0] == "crossentropy" == report.baseline  # the preset's +setup=...
    assert {r["variant"] for r in report.rows} == {v for v, _, _ in SETUPS} and {r["n"] for r in report.rows} == {4}
    assert report.overrides["balanced"] == "+setup=balanced"
    variants = list(report.overrides)
    for wanted in ("balanced", "+setup=balanced"):  # --baseline takes the short name or the overrides
        assert choose_baseline(variants, wanted, None, report.overrides) == ("balanced", "chosen with --baseline")
    with pytest.raises(ValueError, match=r"balanced  \(\+setup=balanced\)"):  # the list names both
        choose_baseline(variants, "+setup=nothing", None, report.overrides)


def test_the_primary_chart_draws_the_tests_paired_intervals_coloured_by_verdict(sweep):
    """What the chart draws per variant equals the paired t-test on the child runs' values (scipy), and its
    colour is the verdict's."""
    _, _, report, values = sweep
    points = {p["variant"]: p for p in delta_points(report)}
    assert set(points) == {"balanced", "focal_effective_number", "logit_adjusted"}
    base = values["crossentropy"]
    for variant, point in points.items():
        a = [values[variant][s]["val_nll"] for s in sorted(base)]
        b = [base[s]["val_nll"] for s in sorted(base)]
        ref = stats.ttest_rel(a, b)
        ci = ref.confidence_interval(0.95)
        assert point["test"] == "paired" and point["n"] == 4
        assert (point["mean"], point["low"], point["high"]) == pytest.approx((np.mean(np.subtract(a, b)), ci.low,
                                                                              ci.high), rel=1e-9)
        c = report.comparison(variant, "val_nll")
        assert (point["verdict"], point["p_holm"]) == (c.verdict, c.p_holm)
    assert points["logit_adjusted"]["verdict"] == "better" and points["focal_effective_number"]["verdict"] == "worse"
    assert "val_nll_vs_baseline.png" in {f.name for f in report.files}


def _headline_items(note: str) -> dict[tuple[str, str], tuple[str, float, float, float, float]]:
    """{(metric, variant): (verdict text, Δ, low, high, p)} parsed from the headline's list items."""
    items, metric = {}, None
    number = r"([+-]?\d+\.\d+)"
    for line in note.splitlines():
        if m := re.match(r"\*\*(\w+)\*\* \(", line):
            metric = m.group(1)
        elif m := re.match(rf"- \**([\w.=-]+)\**: (.+?), Δ {number} \[{number}, {number}\], p = <?(\d\.\d+)", line):
            items[(metric, m.group(1))] = (m.group(2), *map(float, m.group(3, 4, 5, 6)))
    return items


def test_the_parent_headline_and_metrics_carry_the_reports_numbers(sweep):
    uri, parent, report, _ = sweep
    run = MlflowClient(uri).get_run(parent)
    note = run.data.tags["mlflow.note.content"]
    first = note.splitlines()[0]
    assert first.startswith("Against `crossentropy` on `val_nll` (lower is better): **logit_adjusted better** (Δ -0.")
    assert "balanced: not shown with 4 seeds" in first
    assert "**focal_effective_number worse** (Δ +0." in first
    from xentlab.report.render import format_delta, format_p

    for variant in ("logit_adjusted", "focal_effective_number"):  # the summary's numbers are the report's too
        c = report.comparison(variant, "val_nll")
        assert f"(Δ {format_delta(c)}, p = {format_p(c.p_holm)})" in first
    items = _headline_items(note)
    metrics = [m for m, _ in headline_metrics(report)]
    assert metrics == ["val_nll", "test_ece", "test_balanced_accuracy", "test_worst_class_recall"]
    assert {m for m, _ in items} == set(metrics) and len(items) == 3 * len(metrics)
    from xentlab.report.render import verdict_text

    for (metric, variant), (text, delta, low, high, p) in items.items():
        c = report.comparison(variant, metric)
        assert text == verdict_text(c)
        assert (delta, low, high) == pytest.approx((c.diff.mean, c.diff.ci_low, c.diff.ci_high), abs=5e-5)
        assert p == pytest.approx(max(c.p_holm, 1e-4), abs=5e-5)
        if text.startswith("not shown"):
            assert c.verdict == "no difference" and f"not shown with {c.diff.n} seeds" in text
    for c in report.comparisons:  # the runs table's columns: the primary metric's differences, exactly
        if c.metric == "val_nll":
            logged = run.data.metrics
            assert logged[metric_key("delta_val_nll", c.variant)] == pytest.approx(c.diff.mean, rel=1e-12)
            assert logged[metric_key("delta_val_nll_low", c.variant)] == pytest.approx(c.diff.ci_low, rel=1e-12)
            assert logged[metric_key("delta_val_nll_high", c.variant)] == pytest.approx(c.diff.ci_high, rel=1e-12)
            assert logged[metric_key("p_holm_val_nll", c.variant)] == pytest.approx(c.p_holm, rel=1e-12)
    assert run.data.tags["xentlab.verdict"] == (
        "logit_adjusted better; focal_effective_number worse; 1 not shown (val_nll)")


def test_report_html_is_self_contained_and_leads_with_the_verdict(sweep):
    uri, parent, report, _ = sweep
    page = next(f for f in report.files if f.name == "report.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://|//[\w.-]+\.\w+/", page)  # nothing fetched from a network at view time
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    assert not re.search(r"<script|<link|<iframe|url\(|@import", page, re.IGNORECASE)
    assert page.count("data:image/png;base64,") == len([f for f in report.files if f.suffix == ".png"]) >= 2
    verdict_table = page.index("<th>verdict</th>")
    assert verdict_table < page.index("<h2>Other verdicts") < page.index("<h2>Charts") < page.index("<h2>Every")
    assert re.search(r"logit_adjusted</td>.*?better</td>", page[verdict_table:page.index("</table>", verdict_table)])
    widest = max(len(re.findall(r"<th>", t)) for t in re.findall(r"<table>.*?</table>", page, re.DOTALL))
    assert widest <= 7  # narrow tables: the viewer shows them whole
    assert "report/report.html" in {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert not any(math.isnan(r["n"]) for r in report.rows)


def test_a_language_model_sweep_is_judged_in_bits_per_character(tmp_path):
    """Runs that log val_bpc (char LSTM): the primary metric is val_bpc, the headline's others test_bpc only
    (not worst-class recall over 256 byte classes)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rng = np.random.default_rng(9)
    specs = []
    for variant, bpc in (("rmsprop", 3.0), ("adam", 2.6)):
        for seed in range(3):
            value = bpc + 0.05 * rng.normal()
            metrics = {"val_nll": value * math.log(2), "val_bpc": value, "test_bpc": value + 0.01,
                       "test_nll": (value + 0.01) * math.log(2), "test_worst_class_recall": 0.0,
                       "test_balanced_accuracy": 0.01}
            specs.append({"variant": f"optimizer={variant}", "seed": seed, "name": run_name(variant, seed),
                          "metrics": metrics, "tags": {"xentlab.variant": variant,
                                                       "xentlab.variant_overrides": f"optimizer={variant}"}})
    report = write_report(uri, parent_run_id=synthetic_sweep(uri, specs), out_dir=tmp_path / "r")
    assert report.metric == "val_bpc" and report.baseline == "rmsprop"
    assert [m for m, _ in headline_metrics(report)] == ["val_bpc", "test_bpc"]
    assert report.comparison("adam", "val_bpc").verdict == "better"  # lower bpc is better
    assert "val_bpc_vs_baseline.png" in {f.name for f in report.files}
    note = MlflowClient(uri).get_run(report.parent_run_id).data.tags["mlflow.note.content"]
    assert note.startswith("Against `rmsprop` on `val_bpc` (lower is better): **adam better**")
    assert "worst_class_recall" not in note
