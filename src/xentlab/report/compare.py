"""Comparison report of a sweep (`xentlab-compare`): every variant against a baseline, with tests a reader can trust.

Reads the child runs of a sweep's parent run from MLflow (all pages), aggregates seeds (mean +- sample std), and
compares each variant with the baseline on every ranked metric (report.statistics: paired t-test on common seeds,
else Welch; Holm over the variants of a metric). Writes a Markdown report, two CSVs, the charts and a
self-contained report.html, logged as artifacts of the parent run under report/, and puts the answer on the parent
run itself (report.headline: its description, the differences as metrics).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from xentlab.errors import ReportError
from xentlab.metric_table import CLASSIFICATION, LANGUAGE_MODEL, PRIMARY
from xentlab.report.charts import curve_metric, plot_charts
from xentlab.report.columns import (
    COLUMN_NAMES,
    COLUMNS,
    HISTORY_METRIC,
    LOSS_COLUMNS,
    MAX_RELIABILITY_VARIANTS,
    PAGE_SIZE,
    POSTHOC_VARIANT,
    RANKED,
    Comparison,
    Report,
)
from xentlab.report.followup import failed_jobs_section, seeds_needed_section
from xentlab.report.headline import publish
from xentlab.report.html import write_html
from xentlab.report.query import (
    RELIABILITY_SAMPLE,
    _workers,
    fetch_children,
    loss_scale,
    posthoc_values,
    read_histories,
    read_reliability,
    run_values,
)
from xentlab.report.render import to_markdown, write_csvs
from xentlab.report.statistics import compare_runs, direction, holm, verdict
from xentlab.report.sweep_designs import (
    compared_runs,
    sequential_design,
    sequential_view,
    tuning_section,
    tuning_summary,
)
from xentlab.report.variants import choose_baseline, pair_key, variant_of
from xentlab.tracking.store import (
    BASELINE_TAG,
    ERROR_TAG,
    SWEEP_TAG,
)


# ---------------------------------------------------------------------------------------------- statistics
def aggregate(per_run: dict[str, list[dict[str, float]]]) -> list[dict]:
    """Rows of mean, std (sample std, ddof=1; 0 for one value) and the count `<column>_n` of the finite values per
    variant and column (n: its runs); non-finite values are left out of both."""
    rows = []
    for variant, runs in per_run.items():
        row: dict = {"variant": variant, "n": len(runs)}
        for column in COLUMN_NAMES:
            row.update(column_stats(column, [r[column] for r in runs]))
        rows.append(row)
    return rows


def column_stats(column: str, values: list[float]) -> dict[str, float]:
    """Mean, sample std and count of the finite `values`; with none finite, the infinity they share (else NaN)."""
    vals = np.asarray(values, dtype="float64")
    finite = vals[np.isfinite(vals)]
    if len(finite):
        mean = float(finite.mean())
    else:
        infinite = set(vals[np.isinf(vals)].tolist())
        mean = infinite.pop() if len(infinite) == 1 else float("nan")
    std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return {column: mean, f"{column}_std": std, f"{column}_n": len(finite)}


def non_finite_runs(runs: list, values: dict[str, dict[str, float]], limit: int = 10) -> str | None:
    """A note naming the runs that logged a NaN or infinite value in a report column (left out of its means and
    tests), or None when every logged value is finite."""
    found = []
    for run in runs:
        bad = [f"{c}={values[run.info.run_id][c]}" for c, source, _ in COLUMNS
               if source in run.data.metrics and not math.isfinite(values[run.info.run_id][c])]
        if bad:
            found.append(f"`{run.info.run_name}` ({run.info.run_id}): {', '.join(bad)}")
    if not found:
        return None
    more = f"; and {len(found) - limit} more runs" if len(found) > limit else ""
    return ("- **Left out** of the means, counts and tests (values that are not finite): "
            + "; ".join(found[:limit]) + more + ".")


def compare_variants(seeded: dict[str, list[tuple[str, dict[str, float]]]], baseline: str, columns: list[str]
                     ) -> list[Comparison]:
    """Every variant but the baseline against it on each of `columns`, Holm-corrected per column.

    Args:
        seeded: {variant: [(pairing key: trainer.seed, or "<seed>/fold<i>" with k-fold, column values of one
            run), ...]}.
        baseline: a key of `seeded`.
        columns: the ranked columns.
    """
    out: list[Comparison] = []
    others = [v for v in seeded if v != baseline]
    pairs = "seed/fold pairs" if any("/fold" in str(k) for runs in seeded.values() for k, _ in runs) else "seeds"
    for column in columns:
        base = [(seed, values[column]) for seed, values in seeded[baseline]]
        # A side that logged no value of the column (the post-hoc row's validation columns) is not compared.
        logged = [v for v in others if any(math.isfinite(values[column]) for _, values in seeded[v])
                  and any(math.isfinite(value) for _, value in base)]
        diffs = [compare_runs([(seed, values[column]) for seed, values in seeded[v]], base) for v in logged]
        adjusted = holm([d.p for d in diffs])
        better = direction(column) or "min"
        out += [Comparison(v, column, d, p, verdict(d, p, better), pairs) for v, d, p in zip(logged, diffs, adjusted,
                                                                                                 strict=True)]
    return out


def add_posthoc_variant(seeded: dict[str, list], keys: dict[str, str], baseline: str, runs: list,
                        overrides: dict[str, str]) -> None:
    """Adds `<baseline> + post-hoc`: the baseline's own runs scored by post-hoc logit adjustment, compared with
    the baseline like any variant (paired: the same runs) and shown beside the set-ups trained for the long tail.
    Only when every baseline run logged post-hoc metrics of a long-tailed split (`query.posthoc_values`)."""
    values = [posthoc_values(r, COLUMN_NAMES) for r in runs]
    if not runs or any(v is None for v in values):
        return
    name = baseline + POSTHOC_VARIANT
    seeded[name] = [(r.info.run_id + POSTHOC_VARIANT, v) for r, v in zip(runs, values, strict=True)]
    keys.update({r.info.run_id + POSTHOC_VARIANT: keys[r.info.run_id] for r in runs})
    overrides[name] = overrides.get(baseline, baseline) + POSTHOC_VARIANT


# ---------------------------------------------------------------------------------------------- the data
DATA_DIGEST_PARAM = "data.digest"  # a run's digest of its data's bytes (xentlab.data.digest)


def data_identity(run) -> tuple[str, str]:
    """What a run trained on: the digest of its data's bytes (param `data.digest`, for data with a path) and MLflow's
    digest of its training split (left out of a k-fold run: each fold trains on its own split by design)."""
    params = run.data.params
    if params.get("data.folds", "None") not in ("None", "null", ""):
        return params.get(DATA_DIGEST_PARAM, ""), ""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    training = [d.dataset.digest for d in inputs if any(t.key == "mlflow.data.context" and t.value == "training"
                                                        for t in d.tags)]
    return params.get(DATA_DIGEST_PARAM, ""), training[0] if training else ""


def current_data(finished: list) -> tuple[list, str | None]:
    """The runs of each variant that trained on the data of its newest run, and a note naming the runs left out
    (trained on other data: the file changed between two attempts), or None when every variant is on one data."""
    newest: dict[str, tuple[str, str]] = {}
    for run in sorted(finished, key=lambda r: r.info.start_time):
        newest[variant_of(run)[0]] = data_identity(run)
    kept = [r for r in finished if data_identity(r) == newest[variant_of(r)[0]]]
    left = [r for r in finished if data_identity(r) != newest[variant_of(r)[0]]]
    if not left:
        return finished, None
    names = "; ".join(f"`{r.info.run_name}` ({r.info.run_id}, data {'/'.join(filter(None, data_identity(r)))})"
                      for r in left[:10]) + (f"; and {len(left) - 10} more" if len(left) > 10 else "")
    return kept, (f"- **Left out: {len(left)} runs trained on other data** than the newest run of their variant "
                  f"(a variant's runs are never pooled across data): {names}.")


# ---------------------------------------------------------------------------------------------- the report
def group_variants(finished: list) -> tuple[dict[str, list], dict[str, str]]:
    """({variant: its runs, in launch order}, {variant: its overrides}) by each run's `xentlab.variant` tag (the
    run name without its seed for older runs)."""
    runs_by_variant: dict[str, list] = {}
    overrides: dict[str, str] = {}
    for run in finished:
        variant, said = variant_of(run)
        runs_by_variant.setdefault(variant, []).append(run)
        overrides.setdefault(variant, said)
    return runs_by_variant, overrides


def primary_metric(finished: list) -> str:
    """The metric table's primary metric: a language model's (val_bpc) when every run logs it, else a
    classifier's (val_nll, one scale for every loss)."""
    language_model = PRIMARY[LANGUAGE_MODEL]
    return language_model if finished and all(language_model in r.data.metrics for r in finished) else (
        PRIMARY[CLASSIFICATION])


def ranked_columns(finished: list) -> tuple[list[str], str | None]:
    """The ranked columns and, when the loss columns are left out of them, why."""
    if len({loss_scale(r.data.params) for r in finished}) == 1:
        return [c for c in COLUMN_NAMES if direction(c)], None  # one loss for every variant: its values compare
    return list(RANKED), (f"{', '.join(LOSS_COLUMNS)} are not ranked: the variants train different losses (loss.* "
                          "params: kind, smoothing, ...), so their values are on different scales. Compare val_nll.")


def order_rows(rows: list[dict], base: str, metric: str, ranked: list[str]) -> list[dict]:
    """The baseline first, then the others by the primary metric (best first) when it is ranked."""
    better = direction(metric) if metric in ranked else None
    rest = [r for r in rows if r["variant"] != base]
    if better:
        rest.sort(key=lambda r: (not math.isfinite(r[metric]), r[metric] if better == "min" else -r[metric]))
    return [r for r in rows if r["variant"] == base] + rest


def write_report(uri: str, *, parent_run_id: str, out_dir: Path, metric: str | None = None,
                 baseline: str | None = None, page_size: int = PAGE_SIZE) -> Report:
    """Builds the report of the sweep whose parent run is `parent_run_id` and logs it to that run: the files under
    `report/`, the headline as the run's description and the differences as its metrics (report.headline).

    Args:
        uri: tracking URI.
        parent_run_id: the sweep's parent run.
        out_dir: folder for the files.
        metric: the primary metric (verdict column; rows after the baseline are sorted by it when ranked);
            default `primary_metric` (val_nll; val_bpc for language models).
        baseline: a variant (its name or its overrides in any order); default the parent's `xentlab.baseline`
            tag, else the first variant launched.
        page_size: runs per search request.

    A `metric` other than the sweep's primary one is reported beside it (report.headline.publish), never over it.

    Raises:
        ReportError: `baseline` names no variant (the message lists them), `metric` is one no run logged (the
            message lists those logged), or the sweep has no finished run.
    """
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    sweep_id = parent.data.tags.get(SWEEP_TAG, "?")
    children = compared_runs(fetch_children(client, parent.info.experiment_id, parent_run_id, page_size))
    finished, other_data = current_data([r for r in children if r.info.status == "FINISHED"])
    if not finished and any(r.info.status in ("FAILED", "KILLED") for r in children):
        return _failed_only(client, parent_run_id, sweep_id, children, out_dir)
    runs_by_variant, overrides = group_variants(finished)
    posthoc_base = bool(baseline and baseline.endswith(POSTHOC_VARIANT))  # --baseline "<variant> + post-hoc"
    base, note = choose_baseline(list(runs_by_variant), baseline.removesuffix(POSTHOC_VARIANT) if posthoc_base
                                 else baseline, parent.data.tags.get(BASELINE_TAG), overrides)
    primary = primary_metric(finished)
    metric = metric or primary
    workers = _workers(uri)
    ids = [r.info.run_id for r in finished]
    histories = read_histories(client, ids, HISTORY_METRIC, workers)
    values = {r.info.run_id: run_values(r, histories[r.info.run_id]) for r in finished}
    seeded = {v: [(r.info.run_id, values[r.info.run_id]) for r in runs] for v, runs in runs_by_variant.items()}
    seeds = {r.info.run_id: pair_key(r.data.params, r.info.run_id) for r in finished}
    add_posthoc_variant(seeded, seeds, base, runs_by_variant[base], overrides)
    base = _posthoc_baseline(base, seeded, baseline) if posthoc_base else base
    ranked, losses_note = ranked_columns(finished)
    ranked = [c for c in ranked if any(math.isfinite(v[c]) for v in values.values())]  # logged by some run
    _check_logged(metric, values)
    by_seed = {v: [(seeds[rid], vals) for rid, vals in runs] for v, runs in seeded.items()}
    comparisons, verdict_line, design_lines, design_files = _designs(parent, by_seed, base, metric, ranked, out_dir)
    rows = order_rows(aggregate({v: [vals for _, vals in runs] for v, runs in seeded.items()}), base, metric, ranked)
    shown = {v: runs_by_variant[v] for v in [r["variant"] for r in rows if r["variant"] in runs_by_variant][
        :MAX_RELIABILITY_VARIANTS]}
    reliability, sampled = read_reliability(client, shown, workers)
    report = Report(sweep_id, parent_run_id, base, rows, comparisons, "", metric=metric, baseline_note=note,
                    ranked=ranked, losses_note=losses_note, overrides=overrides, unfinished=unfinished(children),
                    verdict_line=verdict_line, design_lines=design_lines)
    _write_markdown(report, parent, children, finished, values, sampled, out_dir, other_data)
    if curve_metric(metric) != HISTORY_METRIC:
        histories = read_histories(client, ids, curve_metric(metric), workers)
    _write_files(client, report, seeded, histories, reliability, out_dir, design_files, primary=metric == primary)
    publish(client, report, finished, primary=metric == primary)
    return report


def _designs(parent, by_seed: dict, base: str, metric: str, ranked: list[str], out_dir: Path
             ) -> tuple[list[Comparison], str | None, list[str], list[Path]]:
    """(comparisons, verdict line, design sections, design files): the plain tests, or a sequential sweep's rule
    (its verdicts replace the plain tests), and a tuned sweep's section (report.sweep_designs)."""
    comparisons = compare_variants(by_seed, base, ranked)
    verdict_line, design_lines, design_files = None, [], []
    design = sequential_design(parent)
    if design is not None:  # the sweep's verdicts are the sequential rule's, never the plain tests
        comparisons, design_lines, verdict_line = sequential_view(by_seed, base, metric, design)
    summary = tuning_summary(parent)
    if summary is not None:
        design_lines, design_files = tuning_section(summary, out_dir)
    return comparisons, verdict_line, design_lines, design_files


def _write_files(client: MlflowClient, report: Report, seeded: dict, histories: dict, reliability: dict,
                 out_dir: Path, design_files: list[Path], *, primary: bool) -> None:
    """The CSVs, charts and report.html beside report.md, logged to the parent under `report/` (a report on
    another metric than the sweep's primary one: `report/<metric>/`)."""
    report.files = [out_dir / "report.md", *write_csvs(report.rows, report.comparisons, report.baseline, out_dir,
                                                       report.overrides)]
    report.files += plot_charts(report, seeded, histories, reliability, out=out_dir) + design_files
    report.files.append(write_html(report, out_dir))
    for f in report.files:
        client.log_artifact(report.parent_run_id, str(f), "report" if primary else f"report/{report.metric}")


def _check_logged(metric: str, values: dict[str, dict[str, float]]) -> None:
    """Raises ReportError when no run logged `metric`, listing the report's metrics that some run logged."""
    if any(math.isfinite(v.get(metric, math.nan)) for v in values.values()):
        return
    logged = [c for c in COLUMN_NAMES if any(math.isfinite(v[c]) for v in values.values())]
    raise ReportError(f"--metric {metric}: no FINISHED run of this sweep logged it. Logged: {', '.join(logged)}")


def unfinished(children: list) -> dict[str, str]:
    """{variant: "diverged" (a loss that became NaN or infinite), "failed" or "killed"} for the variants with a
    current run that did not finish."""
    out: dict[str, str] = {}
    for run in children:
        if run.info.status in ("FAILED", "KILLED"):
            error = run.data.tags.get(ERROR_TAG, "")
            diverged = "NonFiniteLoss" in error or "became nan" in error.lower()
            out[variant_of(run)[0]] = "diverged" if diverged else run.info.status.lower()
    return out


# ---------------------------------------------------------------------------------------------- follow-up
def _test_twin(metric: str) -> str:
    """`test_nll` for `val_nll`: the verdict table's second metric."""
    return "test_" + metric.removeprefix("val_") if metric.startswith("val_") else metric


def _posthoc_baseline(base: str, seeded: dict, requested: str) -> str:
    """`<base> + post-hoc` as the baseline (--baseline asked for it), when the baseline's runs logged post-hoc."""
    if base + POSTHOC_VARIANT not in seeded:
        raise ReportError(f"--baseline {requested!r}: the runs of {base} logged no post-hoc metrics of a long-tailed "
                         f"training split (test_<metric>_posthoc and shot groups), so there is no post-hoc row")
    return base + POSTHOC_VARIANT


def _write_markdown(report: Report, parent, children: list, finished: list, values: dict, sampled: bool,
                    out_dir: Path, other_data: str | None = None) -> None:
    """The report's title and Markdown (report.render), the runs left out for non-finite values or other data, then
    the follow-up sections; written to `out_dir/report.md`."""
    skipped = len([r for r in children if r.info.status != "FINISHED"])
    report.title = f"sweep {report.sweep_id}: {len(finished)} runs, {len(report.rows)} variants" + (
        f" ({skipped} runs not FINISHED, left out)" if skipped else "")
    report.followup = _followup(parent, children, report, finished, sampled)
    markdown = to_markdown(report.rows, report.comparisons, title=report.title, baseline=report.baseline,
                           baseline_note=report.baseline_note, metric=report.metric, ranked=report.ranked,
                           losses_note=report.losses_note)
    every = sorted({r.data.params.get("trainer.validate_every", "1") for r in finished} - {"1"})
    if every:  # not every epoch validated: say so where the validation columns are read
        markdown += (f"\n- Validation ran every {' or '.join(every)} epochs (`trainer.validate_every`) and after the "
                     "last: `best_val_loss` and the learning curves cover the validated epochs only.")
    notes = [n for n in (other_data, non_finite_runs(finished, values)) if n]
    report.markdown = markdown + "".join(f"\n{x}" for x in notes + report.followup)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(report.markdown + "\n")


def _followup(parent, children: list, report: Report, finished: list, sampled: bool) -> list[str]:
    """The Markdown lines after the tables: a note when reliability files were sampled, the failed jobs, and the
    seeds each "not shown" difference needs (report.followup)."""
    params = parent.data.params
    overrides = [params[f"sweep.override.{i}"] for i in range(len(params)) if f"sweep.override.{i}" in params]
    lines = [f"- reliability.png pools at most {RELIABILITY_SAMPLE} runs per variant: runs logged before the "
             "`xentlab.reliability` tag are read from their files, a bounded sample."] if sampled else []
    lines += failed_jobs_section(children) + report.design_lines
    if report.verdict_line:  # a sequential sweep: its rule chose the seeds
        return lines
    seeds_done = [r.data.params.get("trainer.seed", "") for r in finished]
    # A k-fold sweep pairs by seed and fold: each added seed brings one pair per fold.
    per_seed = max(1, len({pair_key(r.data.params, r.info.run_id) for r in finished}) // max(1, len(set(seeds_done))))
    metrics = list(dict.fromkeys([report.metric, _test_twin(report.metric)]))
    return lines + seeds_needed_section(report.comparisons, metrics, overrides, seeds_done, pairs_per_seed=per_seed)


def _failed_only(client: MlflowClient, parent_run_id: str, sweep_id: str, children: list, out_dir: Path) -> Report:
    """The report of a sweep none of whose jobs finished: the failed jobs and their errors."""
    title = f"sweep {sweep_id}: no job FINISHED, nothing to compare"
    followup = failed_jobs_section(children)
    markdown = "\n".join([f"### {title}", *followup])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown + "\n")
    client.log_artifact(parent_run_id, str(out_dir / "report.md"), "report")
    return Report(sweep_id, parent_run_id, "", [], [], markdown, [out_dir / "report.md"], title=title,
                  followup=followup)
