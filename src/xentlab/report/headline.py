"""The sweep's answer on its parent run, where the MLflow UI shows it without a click.

- The run's description (tag `mlflow.note.content`, the Overview's "Description"): a Markdown headline, the
  baseline and primary metric, one line per variant with its verdict, difference, 95% interval and Holm p, then
  the same for calibration (`test_ece`) and the minority classes (`test_balanced_accuracy`,
  `test_worst_class_recall`); a language model's sweep: `test_bpc` instead.
- Metrics, one per variant (the runs table's columns, the chart view's sections), on the primary metric M:
  `delta_M/<variant>` (mean difference variant - baseline), `delta_M_low/<variant>` and `delta_M_high/<variant>`
  (its 95% interval), `p_holm_M/<variant>` (Holm-adjusted p-value); and the tag `xentlab.verdict`, the verdicts
  in a few words (`logit_adjusted better; 2 not shown (val_nll)`).
- The children's dataset inputs and git commit, so the parent's Dataset and Source columns say what they say.
"""

from __future__ import annotations

import math
import re

from xentlab import metric_table
from xentlab.report.columns import Report
from xentlab.report.render import format_delta, format_p, verdict_text
from xentlab.report.statistics import direction
from xentlab.tracking.store import VERDICT_TAG

NOTE_TAG = "mlflow.note.content"  # MLflow's run description, rendered as Markdown on the run's Overview
MAX_NOTE = 7900  # characters: MLflow keeps tag values up to 8,000
MAX_LINES = 12  # variants listed per metric; the report lists them all


def headline_metrics(report: Report) -> list[tuple[str, str]]:
    """(metric, what it tells) of the headline: the primary metric, then the secondary ones that were ranked."""
    others = metric_table.headline_metrics(metric_table.task_of_metric(report.metric))  # what each one tells
    tested = {c.metric for c in report.comparisons}
    return [(report.metric, "primary")] + [(m, why) for m, why in others if m in tested and m != report.metric]


def _direction_words(metric: str) -> str:
    return "lower is better" if direction(metric) == "min" else "higher is better"


def _unfinished(report: Report) -> str:
    """"`lr=1e+30` diverged, `focal` failed": the variants with runs that did not finish."""
    return ", ".join(f"`{variant}` {why}" for variant, why in report.unfinished.items())


def summary_line(report: Report) -> str:
    """One sentence: which variants differ from the baseline on the primary metric (with Δ, interval and Holm p),
    which were not shown, and which did not finish (diverged, failed); what the Overview shows before its "Show
    more"."""
    groups: dict[str, list[str]] = {}
    for row in report.rows:
        c = report.comparison(row["variant"], report.metric)
        if c is None:
            continue
        if c.verdict in ("better", "worse"):
            groups.setdefault(c.verdict, []).append(
                f"**{c.variant} {c.verdict}** (Δ {format_delta(c)}, p = {format_p(c.p_holm)})")
        else:
            groups.setdefault(verdict_text(c), []).append(c.variant)
    stopped = _unfinished(report)
    if not groups and stopped:
        done = ", ".join(f"`{r['variant']}`" for r in report.rows)
        return (f"Only {done} finished, so nothing is ranked on `{report.metric}`: {stopped} (see \"Jobs that did "
                "not finish\" in the report).")
    if not groups:
        return f"`{report.metric}` is not ranked in this sweep (see the report); baseline `{report.baseline}`."
    decided = groups.pop("better", []) + groups.pop("worse", [])
    rest = [f"{', '.join(names)}: {text}" for text, names in groups.items()]
    return (f"Against `{report.baseline}` on `{report.metric}` ({_direction_words(report.metric)}): "
            + "; ".join(decided + rest) + (f". Did not finish: {stopped}." if stopped else ""))


def metric_lines(report: Report, metric: str) -> list[str]:
    """One Markdown list item per variant: verdict, Δ [95% CI], Holm p and the test (the report's numbers)."""
    lines = []
    for row in report.rows:
        c = report.comparison(row["variant"], metric)
        if c is None:
            continue
        text = verdict_text(c)
        name = f"**{c.variant}**" if c.verdict in ("better", "worse") else c.variant
        test = f"paired, {c.diff.n} seeds" if c.diff.test == "paired" else (
            f"Welch, {c.diff.n} vs {c.diff.n_baseline} runs" if c.diff.test == "welch" else "untested")
        lines.append(f"- {name}: {text}, Δ {format_delta(c)}, p = {format_p(c.p_holm)} ({test})")
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"- ... and {len(lines) - MAX_LINES} more in the report"]
    return lines


def headline(report: Report) -> str:
    """The parent run's description: the answer first, the numbers behind it, how to read them, where the rest is."""
    lines = [report.verdict_line or summary_line(report), ""]
    for metric, why in headline_metrics(report):
        label = "primary metric" if why == "primary" else why
        lines += [f"**{metric}** ({label}, {_direction_words(metric)})", "", *metric_lines(report, metric), ""]
    lines += [f"Baseline `{report.baseline}` ({report.baseline_note}). Δ = variant − baseline with its 95% "
              "interval; p Holm-adjusted over the variants; verdicts at alpha 0.05. \"not shown\": no significant "
              "difference with this many seeds (not a proof of equality; more seeds may decide).", "",
              f"{report.title}. Full report: Artifacts → `report/report.html` (tables, charts, how to read it); "
              "`report/report.md` as printed."]
    text = "\n".join(lines)
    if len(text) > MAX_NOTE:
        text = text[: MAX_NOTE - 60].rsplit("\n", 1)[0] + "\n\n(cut: the full report is in report/report.html)"
    return text


def metric_key(prefix: str, variant: str) -> str:
    """`<prefix>/<variant>` with the characters MLflow refuses in a metric name made `_`."""
    safe = re.sub(r"[^\w.\- ]", "_", variant).replace("..", "_")
    return f"{prefix}/{safe}"


def parent_metrics(report: Report) -> dict[str, float]:
    """The primary metric's differences as parent metrics (see the module docstring for the names)."""
    m = report.metric
    values = {}
    for c in report.comparisons:
        if c.metric != m:
            continue
        for prefix, value in ((f"delta_{m}", c.diff.mean), (f"delta_{m}_low", c.diff.ci_low),
                              (f"delta_{m}_high", c.diff.ci_high), (f"p_holm_{m}", c.p_holm)):
            if math.isfinite(value):
                values[metric_key(prefix, c.variant)] = float(value)
    return values


def verdict_tag(report: Report) -> str:
    """The primary metric's verdicts in a few words, the decided variants first (tag `xentlab.verdict`: the run
    page shows tags above the description and cuts a value at about 35 characters; the title shows it whole)."""
    tested = [c for r in report.rows if (c := report.comparison(r["variant"], report.metric)) is not None]
    decided = [f"{c.variant} {c.verdict}" for c in sorted(tested, key=lambda c: c.verdict != "better")
               if c.verdict in ("better", "worse")]
    others = [c for c in tested if c.verdict not in ("better", "worse")]
    stopped = [f"{variant} {why}" for variant, why in report.unfinished.items()]
    if not tested:
        return "; ".join([*stopped, f"{report.metric} not ranked"])
    if not decided:
        return "; ".join([f"none shown on {report.metric} ({len(others)} tested vs {report.baseline})", *stopped])
    return "; ".join(decided + ([f"{len(others)} not shown"] if others else []) + stopped) + f" ({report.metric})"


def publish(client, report: Report, children: list, primary: bool = True) -> None:
    """Writes the headline, the verdict tag and the difference metrics to the parent run, and gives it the
    dataset inputs and git commit of its children when it lacks them. A report on another metric than the
    sweep's primary one (`primary` False) leaves the headline and the verdict as they are: its verdict goes to the
    tag `xentlab.verdict.<metric>`."""
    from mlflow.entities import DatasetInput, Metric, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT
    from mlflow.utils.time import get_current_time_millis

    parent = client.get_run(report.parent_run_id)
    now = get_current_time_millis()
    metrics = [Metric(k, v, now, 0) for k, v in parent_metrics(report).items()]
    tags = ([RunTag(NOTE_TAG, headline(report)), RunTag(VERDICT_TAG, verdict_tag(report)[:7900])] if primary
            else [RunTag(f"{VERDICT_TAG}.{report.metric}", verdict_tag(report)[:7900])])
    commits = {r.data.tags.get(MLFLOW_GIT_COMMIT) for r in children} - {None}
    if MLFLOW_GIT_COMMIT not in parent.data.tags and len(commits) == 1:
        tags.append(RunTag(MLFLOW_GIT_COMMIT, commits.pop()))
    for start in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1,000 metrics per batch
        client.log_batch(report.parent_run_id, metrics=metrics[start : start + 1000],
                         tags=tags if start == 0 else [])
    have = {(d.dataset.digest, _context(d)) for d in parent.inputs.dataset_inputs} if parent.inputs else set()
    new: dict[tuple[str, str], DatasetInput] = {}
    for run in children:
        for d in run.inputs.dataset_inputs if run.inputs else []:
            key = (d.dataset.digest, _context(d))
            if key not in have and key not in new:
                new[key] = DatasetInput(d.dataset, d.tags)
    if new:
        client.log_inputs(report.parent_run_id, datasets=list(new.values()))


def _context(dataset_input) -> str:
    return next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), "")
