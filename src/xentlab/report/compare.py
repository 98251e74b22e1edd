"""Comparison report of a sweep (`xentlab-compare`): every variant against a baseline, with tests a reader can trust.

Reads the child runs of a sweep's parent run from MLflow (all pages), aggregates seeds (mean +- sample std), and
compares each variant with the baseline on every ranked metric (report.statistics: paired t-test on common seeds,
else Welch; Holm over the variants of a metric). Writes a Markdown report, two CSVs and three charts, logged as
artifacts of the parent run under report/.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from xentlab.report.charts import plot_charts
from xentlab.report.columns import (
    COLUMN_NAMES,
    HISTORY_METRIC,
    LOSS_COLUMNS,
    MAX_RELIABILITY_VARIANTS,
    PAGE_SIZE,
    RANKED,
    Comparison,
    Report,
)
from xentlab.report.followup import failed_jobs_section, seeds_needed_section
from xentlab.report.query import (
    RELIABILITY_SAMPLE,
    _workers,
    fetch_children,
    loss_scale,
    read_histories,
    read_reliability,
    run_values,
)
from xentlab.report.render import to_markdown, write_csvs
from xentlab.report.statistics import compare_runs, direction, holm, verdict
from xentlab.report.variants import choose_baseline, variant_name
from xentlab.tracking.store import (
    BASELINE_TAG,
    SWEEP_TAG,
)


# ---------------------------------------------------------------------------------------------- statistics
def aggregate(per_run: dict[str, list[dict[str, float]]]) -> list[dict]:
    """Rows of mean, std (sample std, ddof=1; 0 for one run) and n per variant."""
    rows = []
    for variant, runs in per_run.items():
        row: dict = {"variant": variant, "n": len(runs)}
        for column in COLUMN_NAMES:
            vals = np.array([r[column] for r in runs], dtype="float64")
            vals = vals[np.isfinite(vals)]
            row[column] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{column}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def compare_variants(seeded: dict[str, list[tuple[str, dict[str, float]]]], baseline: str, columns: list[str]
                     ) -> list[Comparison]:
    """Every variant but the baseline against it on each of `columns`, Holm-corrected per column.

    Args:
        seeded: {variant: [(trainer.seed, column values of one run), ...]}.
        baseline: a key of `seeded`.
        columns: the ranked columns.
    """
    out: list[Comparison] = []
    others = [v for v in seeded if v != baseline]
    for column in columns:
        base = [(seed, values[column]) for seed, values in seeded[baseline]]
        diffs = [compare_runs([(seed, values[column]) for seed, values in seeded[v]], base) for v in others]
        adjusted = holm([d.p for d in diffs])
        better = direction(column) or "min"
        out += [Comparison(v, column, d, p, verdict(d, p, better)) for v, d, p in zip(others, diffs, adjusted,
                                                                                          strict=True)]
    return out


# ---------------------------------------------------------------------------------------------- the report
def write_report(uri: str, *, parent_run_id: str, out_dir: Path, metric: str = "val_nll",
                 baseline: str | None = None, page_size: int = PAGE_SIZE) -> Report:
    """Builds the report of the sweep whose parent run is `parent_run_id` and logs it to that run.

    Args:
        uri: tracking URI.
        parent_run_id: the sweep's parent run.
        out_dir: folder for the files.
        metric: the primary metric (verdict column; rows after the baseline are sorted by it when ranked).
        baseline: a variant name (overrides in any order); default the parent's `xentlab.baseline` tag, else
            the first variant launched.
        page_size: runs per search request.

    Raises:
        ValueError: `baseline` names no variant (the message lists them), or the sweep has no finished run.
    """
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    sweep_id = parent.data.tags.get(SWEEP_TAG, "?")
    children = fetch_children(client, parent.info.experiment_id, parent_run_id, page_size)
    finished = [r for r in children if r.info.status == "FINISHED"]
    if not finished and any(r.info.status in ("FAILED", "KILLED") for r in children):
        return _failed_only(client, parent_run_id, sweep_id, children, out_dir)
    runs_by_variant: dict[str, list] = {}
    for run in finished:
        runs_by_variant.setdefault(variant_name(run.info.run_name or run.info.run_id), []).append(run)
    base, note = choose_baseline(list(runs_by_variant), baseline, parent.data.tags.get(BASELINE_TAG))

    workers = _workers(uri)
    histories = read_histories(client, [r.info.run_id for r in finished], HISTORY_METRIC, workers)
    values = {r.info.run_id: run_values(r, histories[r.info.run_id]) for r in finished}
    seeded = {v: [(r.info.run_id, values[r.info.run_id]) for r in runs] for v, runs in runs_by_variant.items()}
    seeds = {r.info.run_id: r.data.params.get("trainer.seed", r.info.run_id) for r in finished}

    scales = {loss_scale(r.data.params) for r in finished}
    ranked = list(RANKED)
    losses_note = None
    if len(scales) == 1:
        ranked = [c for c in COLUMN_NAMES if direction(c)]  # one loss for every variant: its values compare
    else:
        losses_note = (f"{', '.join(LOSS_COLUMNS)} are not ranked: the variants train different losses (loss.* "
                       "params: kind, smoothing, ...), so their values are on different scales. Compare val_nll.")
    by_seed = {v: [(seeds[rid], vals) for rid, vals in runs] for v, runs in seeded.items()}
    comparisons = compare_variants(by_seed, base, ranked)

    rows = aggregate({v: [vals for _, vals in runs] for v, runs in seeded.items()})
    better = direction(metric) if metric in ranked else None
    first = [r for r in rows if r["variant"] == base]
    rest = [r for r in rows if r["variant"] != base]
    if better:
        rest.sort(key=lambda r: (not math.isfinite(r[metric]), r[metric] if better == "min" else -r[metric]))
    rows = first + rest

    skipped = len(children) - len(finished)
    title = f"sweep {sweep_id}: {len(finished)} runs, {len(rows)} variants" + (
        f" ({skipped} runs not FINISHED, left out)" if skipped else "")
    shown = [r["variant"] for r in rows][:MAX_RELIABILITY_VARIANTS]
    reliability, sampled = read_reliability(client, {v: runs_by_variant[v] for v in shown}, workers)
    markdown = to_markdown(rows, comparisons, title=title, baseline=base, baseline_note=note, metric=metric,
                           ranked=ranked, losses_note=losses_note)
    markdown += _followup(parent, children, comparisons, [metric, _test_twin(metric)], seeds, sampled)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown + "\n")
    files = [out_dir / "report.md", *write_csvs(rows, comparisons, base, out_dir)]
    files += plot_charts(rows, seeded, comparisons, histories, reliability, baseline=base, metric=metric,
                         out=out_dir)
    for f in files:
        client.log_artifact(parent_run_id, str(f), "report")
    return Report(sweep_id, parent_run_id, base, rows, comparisons, markdown, files)


# ---------------------------------------------------------------------------------------------- follow-up
def _test_twin(metric: str) -> str:
    """`test_nll` for `val_nll`: the verdict table's second metric."""
    return "test_" + metric.removeprefix("val_") if metric.startswith("val_") else metric


def _followup(parent, children: list, comparisons: list[Comparison], metrics: list[str], seeds: dict[str, str],
              sampled: bool) -> str:
    """The sections after the tables: the failed jobs, and the seeds each "not shown" difference needs."""
    params = parent.data.params
    overrides = [params[f"sweep.override.{i}"] for i in range(len(params)) if f"sweep.override.{i}" in params]
    lines = [f"- reliability.png pools at most {RELIABILITY_SAMPLE} runs per variant: runs logged before the "
             "`xentlab.reliability` tag are read from their files, a bounded sample."] if sampled else []
    lines += failed_jobs_section(children)
    lines += seeds_needed_section(comparisons, list(dict.fromkeys(metrics)), overrides, list(seeds.values()))
    return "\n" + "\n".join(lines) if lines else ""


def _failed_only(client: MlflowClient, parent_run_id: str, sweep_id: str, children: list, out_dir: Path) -> Report:
    """The report of a sweep none of whose jobs finished: the failed jobs and their errors."""
    markdown = "\n".join([f"### sweep {sweep_id}: no job FINISHED, nothing to compare", *failed_jobs_section(children)])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown + "\n")
    client.log_artifact(parent_run_id, str(out_dir / "report.md"), "report")
    return Report(sweep_id, parent_run_id, "", [], [], markdown, [out_dir / "report.md"])
