"""The report as text: Markdown tables (verdict, values) and CSV files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from xentlab.report.columns import ADD_SEEDS, COLUMN_NAMES, COLUMNS, POSTHOC_VARIANT, TABLE_SECTIONS, Comparison
from xentlab.report.statistics import ALPHA, direction


# ---------------------------------------------------------------------------------------------- formatting
def bold_cells(comparisons: list[Comparison], baseline: str, variants: list[str]) -> set[tuple[str, str]]:
    """(variant, column) cells that are significantly best: a variant significantly better than the baseline
    (Holm-adjusted p < ALPHA, in the metric's direction); the baseline when every other variant is
    significantly worse than it."""
    cells = {(c.variant, c.metric) for c in comparisons if c.verdict == "better"}
    by_metric: dict[str, list[str]] = {}
    for c in comparisons:
        by_metric.setdefault(c.metric, []).append(c.verdict)
    for metric, verdicts in by_metric.items():
        if len(variants) > 1 and len(verdicts) == len(variants) - 1 and all(v == "worse" for v in verdicts):
            cells.add((baseline, metric))
    return cells


def _digits(column: str) -> int:
    return 0 if column in ("epochs", "samples_per_s") else 2 if column == "wall_time_s" else 4


def format_cell(row: dict, column: str, bold: bool) -> str:
    value, std = row[column], row[f"{column}_std"]
    if np.isnan(value):
        return "-"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    digits = _digits(column)
    n = row.get(f"{column}_n", row["n"])  # the runs whose value is finite
    text = f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")
    text += f" ({n} of {row['n']} runs)" if n < row["n"] else ""
    return f"**{text}**" if bold else text


def format_p(p: float) -> str:
    return "-" if not math.isfinite(p) else "<0.0001" if p < 1e-4 else f"{p:.4f}"


def format_delta(c: Comparison | None) -> str:
    if c is None or not math.isfinite(c.diff.mean):
        return ""
    text = f"{c.diff.mean:+.4f}"
    return text + (f" [{c.diff.ci_low:+.4f}, {c.diff.ci_high:+.4f}]" if c.diff.tested else "")


def verdict_text(c: Comparison | None) -> str:
    """A verdict as the report words it everywhere: better, worse, `identical` (every pair equal),
    `not shown with N seeds` (the test found no difference: with more seeds it might; `after Holm` when only the
    correction for the other variants made it so), `untested`."""
    if c is None:
        return ""
    if c.verdict != "no difference":
        return c.verdict
    if c.diff.mean == 0.0 and c.diff.ci_low == 0.0 and c.diff.ci_high == 0.0:
        return "identical"
    sample = f"{c.diff.n} seeds" if c.diff.test == "paired" else f"{c.diff.n} vs {c.diff.n_baseline} runs"
    # The interval is the test's own (unadjusted); Holm's correction for the other variants can leave an interval
    # that excludes 0 without a significant difference: say so, or the two would seem to disagree.
    excludes_zero = c.diff.ci_low > 0.0 or c.diff.ci_high < 0.0
    return f"not shown with {sample}" + (" after Holm" if excludes_zero else "")


def shown_columns(rows: list[dict], section: str) -> list[str]:
    """The columns of `section` that some variant has a value for (a classifier's sweep has no bpc, a language
    model's no per-class metrics worth a column)."""
    return [c for c, _, s in COLUMNS if s == section and any(not np.isnan(r[c]) for r in rows)]


def _test(c: Comparison | None) -> str:
    if c is None:
        return ""
    if c.diff.test == "paired":
        return f"paired, {c.diff.n} {c.pairs}"
    if c.diff.test == "welch":
        return f"Welch, {c.diff.n} vs {c.diff.n_baseline}"
    return f"untested, {c.diff.n} vs {c.diff.n_baseline}"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(c) + " |" for c in lines)]


def reading_notes(rows: list[dict], comparisons: list[Comparison], *, metric: str, ranked: list[str],
                  losses_note: str | None) -> list[str]:
    """The report's "How to read it" lines: what the cells mean, the tests, bold, and notes on these rows."""
    n_others = len(rows) - 1
    lines = ["- Mean ± sample std over the runs (seeds) of a variant; `-`: the runs did not log that metric.",
             f"- Δ = variant - baseline with its 95% confidence interval. Test: paired t-test on the seeds both "
             f"ran (equal `trainer.seed`, and `data.fold` in k-fold sweeps; at least 2), else Welch's t-test "
             f"(interval with Welch-Satterthwaite "
             f"degrees of freedom). p-values are Holm-corrected over the {n_others} variant(s) of each metric; "
             f"verdicts at alpha {ALPHA} in the metric's direction.",
             f"- **Bold**: significantly best, i.e. significantly better than the baseline (Holm-adjusted "
             f"p < {ALPHA}); the baseline is bold when every other variant is significantly worse. Bold values are "
             "not ranked against each other. Ranked: " + ", ".join(ranked) + ".",
             "- epochs, wall_time_s, samples_per_s (last epoch) are costs: shown, not tested."]
    if losses_note:
        lines.append(f"- {losses_note}")
    for posthoc in [r["variant"] for r in rows if r["variant"].endswith(POSTHOC_VARIANT)]:
        lines.append(f"- `{posthoc}`: the runs of `{posthoc.removesuffix(POSTHOC_VARIANT)}`, their test predictions "
                     "adjusted after training by the training prior (log p - tau * log prior, no retraining; "
                     "`test_<metric>_posthoc`), paired run by run; validation and cost columns do not apply to it. "
                     f"`xentlab-compare --baseline \"{posthoc}\"` tests the other variants against it.")
    untested = [c.variant for c in comparisons if c.verdict == "untested" and c.metric == metric]
    if untested:
        lines.append(f"- **Differences are untested** for {', '.join(untested)}: a t-test needs at least 2 runs "
                     f"per variant (2 common seeds to pair). Add seeds: {ADD_SEEDS}.")
    if len(rows) == 1:
        lines.append("- One variant: nothing to compare it with; sweep over more than one value of an option.")
    return lines


def to_markdown(rows: list[dict], comparisons: list[Comparison], *, title: str, baseline: str, baseline_note: str,
                metric: str, ranked: list[str], losses_note: str | None) -> str:
    """The report: the primary metric's verdicts, then every metric per section, then how to read it."""
    by_key = {(c.variant, c.metric): c for c in comparisons}
    bold = bold_cells(comparisons, baseline, [r["variant"] for r in rows])
    test_metric = "test_" + metric.removeprefix("val_") if metric.startswith("val_") else None
    if test_metric not in COLUMN_NAMES:
        test_metric = None
    better = direction(metric) if metric in ranked else None
    lines = [f"### {title}", "",
             f"Baseline: `{baseline}` ({baseline_note}). Primary metric `{metric}`"
             + (f" ({'lower' if better == 'min' else 'higher'} is better)." if better else " (not ranked)."), ""]

    header = ["variant", "n", metric, f"Δ {metric} [95% CI]", "p (Holm)", "t-test", "verdict"]
    if test_metric:
        header += [test_metric, f"Δ {test_metric} [95% CI]", "p (Holm)", "verdict"]
    body = []
    for row in rows:
        v = row["variant"]
        name = f"{v} (baseline)" if v == baseline else v
        c = by_key.get((v, metric))
        cells = [name, str(row["n"]), format_cell(row, metric, (v, metric) in bold), format_delta(c),
                 format_p(c.p_holm) if c else "", _test(c), verdict_text(c)]
        if test_metric:
            t = by_key.get((v, test_metric))
            cells += [format_cell(row, test_metric, (v, test_metric) in bold), format_delta(t),
                      format_p(t.p_holm) if t else "", verdict_text(t)]
        body.append(cells)
    lines += _table(header, body)

    for section, heading in TABLE_SECTIONS:
        columns = shown_columns(rows, section)
        if not columns:
            continue
        lines += ["", f"#### {heading}", ""]
        lines += _table(["variant", "n", *columns], [
            [r["variant"], str(r["n"]), *[format_cell(r, c, (r["variant"], c) in bold) for c in columns]] for r in rows
        ])

    lines += ["", "How to read it:", *reading_notes(rows, comparisons, metric=metric, ranked=ranked,
                                                     losses_note=losses_note)]
    return "\n".join(lines)


def write_csvs(rows: list[dict], comparisons: list[Comparison], baseline: str, out: Path,
               overrides: dict[str, str] | None = None) -> list[Path]:
    """report.csv (one row per variant: its overrides, mean and std of every column) and comparisons.csv (one
    row per variant and ranked metric: difference, interval, p-values, test, verdict)."""
    fields = ["variant", "overrides", "n", "baseline"] + [f for c in COLUMN_NAMES for f in (c, f"{c}_std")]
    with (out / "report.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows([{**{k: r[k] for k in fields if k in r}, "baseline": r["variant"] == baseline,
                           "overrides": (overrides or {}).get(r["variant"], r["variant"])} for r in rows])
    with (out / "comparisons.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "baseline", "metric", "diff", "ci_low", "ci_high", "p", "p_holm", "test",
                         "n", "n_baseline", "verdict"])
        for c in comparisons:
            d = c.diff
            writer.writerow([c.variant, baseline, c.metric, d.mean, d.ci_low, d.ci_high, d.p, c.p_holm, d.test,
                             d.n, d.n_baseline, c.verdict])
    return [out / "report.csv", out / "comparisons.csv"]
