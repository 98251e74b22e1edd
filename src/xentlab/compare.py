"""Comparison report of a sweep (`xentlab-compare`): every variant against a baseline, with tests a reader can trust.

Reads the child runs of a sweep's parent run from MLflow (all pages), aggregates seeds (mean +- sample std), and
compares each variant with the baseline on every ranked metric (xentlab.stats: paired t-test on common seeds,
else Welch; Holm over the variants of a metric). Writes a Markdown report, two CSVs and three charts, logged as
artifacts of the parent run under report/.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from xentlab.stats import ALPHA, Difference, compare_runs, direction, holm, mean_interval, verdict
from xentlab.store import (
    BASELINE_TAG,
    ROLE_TAG,
    SWEEP_TAG,
    TrackingUnreachable,
    mask_uri,
    probe_server,
    resolve_tracking_uri,
)

# (column, source, section): source is a final metric, "best:val_loss" (min over epochs), "epochs" (epochs
# logged), or "wall_time_s" (end - start of the run). samples_per_s is the last epoch's (steady state: the first
# epoch also traces the graph), read from the run itself: only val_loss needs its history.
COLUMNS = [
    ("val_loss", "val_loss", "validation"),
    ("best_val_loss", "best:val_loss", "validation"),
    ("val_nll", "val_nll", "validation"),  # cross-entropy of the predictions: one scale for every loss variant
    ("val_ece", "val_ece", "validation"),
    ("val_brier", "val_brier", "validation"),
    ("val_accuracy", "val_accuracy", "validation"),
    ("val_balanced_accuracy", "val_balanced_accuracy", "validation"),
    ("val_macro_f1", "val_macro_f1", "validation"),
    ("val_worst_class_recall", "val_worst_class_recall", "validation"),
    ("val_auc", "val_auc", "validation"),
    ("test_loss", "test_loss", "test"),
    ("test_nll", "test_nll", "test"),
    ("test_ece", "test_ece", "test"),
    ("test_brier", "test_brier", "test"),
    ("test_accuracy", "test_accuracy", "test"),
    ("test_balanced_accuracy", "test_balanced_accuracy", "test"),
    ("test_macro_f1", "test_macro_f1", "test"),
    ("test_worst_class_recall", "test_worst_class_recall", "test"),
    ("test_auc", "test_auc", "test"),
    ("epochs", "epochs", "cost"),
    ("wall_time_s", "wall_time_s", "cost"),
    ("samples_per_s", "samples_per_s", "cost"),
]
COLUMN_NAMES = [c for c, _, _ in COLUMNS]
# Values of the training objective itself: on one scale only when every variant trains the same loss.
LOSS_COLUMNS = ("val_loss", "best_val_loss", "test_loss")
# Quality metrics ranked against the baseline; the loss columns join them when the loss scales agree.
RANKED = [c for c in COLUMN_NAMES if direction(c) and c not in LOSS_COLUMNS]
HISTORY_METRIC = "val_loss"  # the one history read per run: best_val_loss, epochs and the learning curves
PAGE_SIZE = 1000  # runs per search_runs page (MLflow's default page)
RELIABILITY_ARTIFACT = "evaluation/reliability.json"
MAX_RELIABILITY_VARIANTS = 10  # curves overlaid on one chart: more are unreadable
SWEEP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # what SweepRun makes (12 hex digits), or "latest"
SEED_OVERRIDE = re.compile(r"(^|,)trainer\.seed=[^,]*")
OVERRIDE_SPLIT = re.compile(r",(?=[+~]*[\w.\-/@]+=)")  # commas that start a new key=value (not inside a list)
ADD_SEEDS = ('`make sweep SWEEP=seeds ARGS="<the varying overrides>"` (5 seeds), or add `trainer.seed=0,1,2` '
             "to the sweep's overrides")


@dataclass
class Comparison:
    """One variant against the baseline on one metric."""

    variant: str
    metric: str
    diff: Difference
    p_holm: float
    verdict: str


@dataclass
class Report:
    sweep_id: str
    parent_run_id: str
    baseline: str
    rows: list[dict]
    comparisons: list[Comparison]
    markdown: str
    files: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- variants
def variant_name(run_name: str) -> str:
    """The run name without its seed, so runs that differ only by trainer.seed aggregate into one row."""
    name = SEED_OVERRIDE.sub("", run_name).strip(",")
    return name or "(default)"


def override_set(name: str) -> frozenset[str]:
    """The key=value items of a variant name, in any order (`a=1,b=2` and `b=2,a=1` are one variant); booleans in
    any case (Hydra names runs `x=False` for a grid written `x: true,false`)."""
    return frozenset(_canonical(item.strip()) for item in OVERRIDE_SPLIT.split(name) if item.strip())


def _canonical(item: str) -> str:
    key, sep, value = item.partition("=")
    return f"{key}{sep}{value.lower()}" if value.lower() in ("true", "false") else item


def find_variant(variants: list[str], wanted: str) -> str | None:
    """The variant named `wanted` (the same overrides in any order), or None."""
    if wanted in variants:
        return wanted
    key = override_set(variant_name(wanted))
    matches = [v for v in variants if override_set(v) == key]
    return matches[0] if len(matches) == 1 else None


def choose_baseline(variants: list[str], requested: str | None, preset: str | None) -> tuple[str, str]:
    """(baseline, how it was chosen). `requested` (--baseline) must name a variant; a preset's baseline that
    matches none (its grid was overridden) gives way to the first variant, and the report says so."""
    if not variants:
        raise ValueError("the sweep has no FINISHED child runs to compare")
    if requested:
        found = find_variant(variants, requested)
        if found is None:
            listed = "\n  ".join(variants)
            raise ValueError(f"--baseline {requested!r} names no variant of this sweep; the variants are:\n  {listed}")
        return found, "chosen with --baseline"
    if preset:
        found = find_variant(variants, preset)
        if found is not None:
            return found, "named by the sweep preset"
        return variants[0], f"the preset's baseline `{preset}` is not among the variants: first variant launched"
    return variants[0], "first variant launched (choose another with --baseline)"


# ---------------------------------------------------------------------------------------------- reading MLflow
def fetch_children(client: MlflowClient, experiment_id: str, parent_run_id: str, page_size: int = PAGE_SIZE) -> list:
    """Every child run of `parent_run_id`, oldest first, page after page."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            order_by=["attributes.start_time ASC"], max_results=page_size, page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _workers(uri: str) -> int:
    # A server answers requests in parallel; SQLite gains a little from overlapping Python and I/O.
    return 8 if uri.startswith(("http://", "https://")) else 4


BULK_RUNS, BULK_LIMIT = 100, 25000  # MLflow's bulk history read: at most 100 runs and 25,000 values a request


def _bulk_histories(client: MlflowClient, run_ids: list[str], metric: str) -> list[tuple[str, int, float]] | None:
    """(run id, step, value) of up to BULK_RUNS runs in one request, or None where the store has no bulk read.

    MLflow's client reads one run's history per request; its SQL store and its server (the endpoint the UI
    uses) both read a metric for many runs at once. Their results equal get_metric_history's.
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if hasattr(store, "get_metric_history_bulk"):  # SQL store (sqlite:///, postgresql://, ...)
        found = store.get_metric_history_bulk(run_ids, metric, BULK_LIMIT)
        return [(m.run_id, m.step, m.value) for m in found]
    if hasattr(store, "get_host_creds"):  # a tracking server
        from mlflow.utils.rest_utils import http_request

        response = http_request(store.get_host_creds(), "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                                params={"run_id": run_ids, "metric_key": metric, "max_results": BULK_LIMIT})
        if response.status_code != 200:
            return None
        return [(m["run_id"], int(m.get("step", 0)), float(m["value"])) for m in response.json().get("metrics", [])]
    return None


def read_histories(client: MlflowClient, run_ids: list[str], metric: str, workers: int = 4
                   ) -> dict[str, list[tuple[int, float]]]:
    """{run id: [(step, value), ...] sorted by step} of one metric.

    One bulk request per 100 runs where the store offers it; runs a bulk answer may have cut (it hit the value
    limit) and stores without one are read one run per request, `workers` at a time.
    """
    histories: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in run_ids}
    single: list[str] = []
    for start in range(0, len(run_ids), BULK_RUNS):
        chunk = run_ids[start : start + BULK_RUNS]
        found = _bulk_histories(client, chunk, metric)
        if found is None or len(found) >= BULK_LIMIT:
            single += chunk
            continue
        for run_id, step, value in found:
            histories[run_id].append((step, value))

    def one(run_id: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run_id, metric)]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        histories.update(zip(single, pool.map(one, single), strict=True))
    return {run_id: sorted(values) for run_id, values in histories.items()}


def run_values(run, history: list[tuple[int, float]]) -> dict[str, float]:
    """The value of every report column for one run (NaN where the run has no such metric).

    Args:
        run: an MLflow Run.
        history: its val_loss history as (step, value), from `read_histories`.
    """
    metrics = run.data.metrics
    values: dict[str, float] = {}
    for column, source, _ in COLUMNS:
        if source == "epochs":
            values[column] = float(len({s for s, _ in history})) if history else float("nan")
        elif source == "wall_time_s":
            end = run.info.end_time or run.info.start_time
            values[column] = (end - run.info.start_time) / 1000.0
        elif source == "best:val_loss":
            values[column] = min(v for _, v in history) if history else float("nan")
        else:
            values[column] = float(metrics.get(source, float("nan")))
    return values


def loss_scale(params: dict[str, str]) -> tuple:
    """What sets the scale of a run's loss values: every loss.* param but from_logits (same value either way)."""
    return tuple(sorted((k, v) for k, v in params.items() if k.startswith("loss.") and k != "loss.from_logits"))


def read_reliability(client: MlflowClient, run_ids: list[str], workers: int = 4) -> dict[str, dict]:
    """{run id: reliability.json content} for the runs that logged it (the others are skipped)."""

    def one(run_id: str) -> dict | None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run_id, RELIABILITY_ARTIFACT, tmp)
            except (MlflowException, OSError):
                return None
            return json.loads(Path(path).read_text())

    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # one bar per run, even for a missing file
    saved = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found = dict(zip(run_ids, pool.map(one, run_ids), strict=True))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {k: v for k, v in found.items() if v is not None}


def pool_reliability(diagrams: list[dict]) -> dict | None:
    """One diagram from several runs' (same bins): per-bin accuracy and confidence weighted by the counts."""
    if not diagrams:
        return None
    count = np.sum([np.asarray(d["count"], dtype="float64") for d in diagrams], axis=0)

    def weighted(key: str) -> list[float | None]:
        num = np.sum([np.nan_to_num(np.array(d[key], dtype="float64")) * np.asarray(d["count"]) for d in diagrams],
                     axis=0)
        return [float(n / c) if c > 0 else None for n, c in zip(num, count, strict=True)]

    return {"edges": diagrams[0]["edges"], "count": count.astype(int).tolist(),
            "accuracy": weighted("accuracy"), "confidence": weighted("confidence"),
            "ece": float(np.mean([d["ece"] for d in diagrams]))}


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


# ---------------------------------------------------------------------------------------------- formatting
def _digits(column: str) -> int:
    return 0 if column in ("epochs", "samples_per_s") else 2 if column == "wall_time_s" else 4


def _cell(row: dict, column: str, bold: bool) -> str:
    value, std = row[column], row[f"{column}_std"]
    if not np.isfinite(value):
        return "-"
    digits = _digits(column)
    text = f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if row["n"] > 1 else "")
    return f"**{text}**" if bold else text


def _p(p: float) -> str:
    return "-" if not math.isfinite(p) else "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _delta(c: Comparison | None) -> str:
    if c is None or not math.isfinite(c.diff.mean):
        return ""
    text = f"{c.diff.mean:+.4f}"
    return text + (f" [{c.diff.ci_low:+.4f}, {c.diff.ci_high:+.4f}]" if c.diff.tested else "")


def _test(c: Comparison | None) -> str:
    if c is None:
        return ""
    if c.diff.test == "paired":
        return f"paired, {c.diff.n} seeds"
    if c.diff.test == "welch":
        return f"Welch, {c.diff.n} vs {c.diff.n_baseline}"
    return f"untested, {c.diff.n} vs {c.diff.n_baseline}"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(c) + " |" for c in lines)]


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
        cells = [name, str(row["n"]), _cell(row, metric, (v, metric) in bold), _delta(c),
                 _p(c.p_holm) if c else "", _test(c), c.verdict if c else ""]
        if test_metric:
            t = by_key.get((v, test_metric))
            cells += [_cell(row, test_metric, (v, test_metric) in bold), _delta(t), _p(t.p_holm) if t else "",
                      t.verdict if t else ""]
        body.append(cells)
    lines += _table(header, body)

    for section, heading in (("validation", "Validation"), ("test", "Test"), ("cost", "Cost")):
        columns = [c for c, _, s in COLUMNS if s == section]
        lines += ["", f"#### {heading}", ""]
        lines += _table(["variant", "n", *columns], [
            [r["variant"], str(r["n"]), *[_cell(r, c, (r["variant"], c) in bold) for c in columns]] for r in rows
        ])

    n_others = len(rows) - 1
    lines += ["", "How to read it:",
              "- Mean ± sample std over the runs (seeds) of a variant; `-`: the runs did not log that metric.",
              f"- Δ = variant - baseline with its 95% confidence interval. Test: paired t-test on the seeds both "
              f"ran (equal `trainer.seed`; at least 2), else Welch's t-test (interval with Welch-Satterthwaite "
              f"degrees of freedom). p-values are Holm-corrected over the {n_others} variant(s) of each metric; "
              f"verdicts at alpha {ALPHA} in the metric's direction.",
              f"- **Bold**: significantly best, i.e. significantly better than the baseline (Holm-adjusted "
              f"p < {ALPHA}); the baseline is bold when every other variant is significantly worse. Bold values are "
              "not ranked against each other. Ranked: " + ", ".join(ranked) + ".",
              "- epochs, wall_time_s, samples_per_s (last epoch) are costs: shown, not tested."]
    if losses_note:
        lines.append(f"- {losses_note}")
    untested = [c.variant for c in comparisons if c.verdict == "untested" and c.metric == metric]
    if untested:
        lines.append(f"- **Differences are untested** for {', '.join(untested)}: a t-test needs at least 2 runs "
                     f"per variant (2 common seeds to pair). Add seeds: {ADD_SEEDS}.")
    if len(rows) == 1:
        lines.append("- One variant: nothing to compare it with; sweep over more than one value of an option.")
    return "\n".join(lines)


def write_csvs(rows: list[dict], comparisons: list[Comparison], baseline: str, out: Path) -> list[Path]:
    """report.csv (one row per variant: mean and std of every column) and comparisons.csv (one row per
    variant and ranked metric: difference, interval, p-values, test, verdict)."""
    fields = ["variant", "n", "baseline"] + [f for c in COLUMN_NAMES for f in (c, f"{c}_std")]
    with (out / "report.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows([{**{k: r[k] for k in fields if k in r}, "baseline": r["variant"] == baseline}
                          for r in rows])
    with (out / "comparisons.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "baseline", "metric", "diff", "ci_low", "ci_high", "p", "p_holm", "test",
                         "n", "n_baseline", "verdict"])
        for c in comparisons:
            d = c.diff
            writer.writerow([c.variant, baseline, c.metric, d.mean, d.ci_low, d.ci_high, d.p, c.p_holm, d.test,
                             d.n, d.n_baseline, c.verdict])
    return [out / "report.csv", out / "comparisons.csv"]


# ---------------------------------------------------------------------------------------------- charts
def plot_charts(rows: list[dict], seeded: dict, comparisons: list[Comparison], histories: dict,
                reliability: dict[str, dict], *, baseline: str, metric: str, out: Path) -> list[Path]:
    """`<metric>_by_variant.png` (mean and 95% interval per variant), `val_loss_curves.png` (every run), and
    `reliability.png` (pooled over each variant's seeds) when runs logged their reliability diagrams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    verdicts = {c.variant: c.verdict for c in comparisons if c.metric == metric}
    colours = {"better": "tab:green", "worse": "tab:red"}
    bar = out / f"{metric}_by_variant.png"
    height = min(40.0, max(3.0, 0.18 * len(rows) + 1.5))
    fig, ax = plt.subplots(figsize=(7, height))
    groups: dict[tuple[str, bool], list[tuple[int, float, float, float]]] = {}  # one draw call per style
    for i, row in enumerate(rows):
        v = row["variant"]
        mean, low, high = mean_interval([values[metric] for _, values in seeded[v]])
        colour = "black" if v == baseline else colours.get(verdicts.get(v, ""), "tab:blue")
        groups.setdefault((colour, math.isfinite(low)), []).append((i, mean, low, high))
    for (colour, interval), points in groups.items():
        ys, means = [p[0] for p in points], [p[1] for p in points]
        if interval:
            xerr = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            ax.errorbar(means, ys, xerr=xerr, fmt="o", ms=4, color=colour, capsize=3)
        else:
            ax.plot(means, ys, "o", ms=4, color=colour, mfc="none")
    base_mean = next(r[metric] for r in rows if r["variant"] == baseline)
    if math.isfinite(base_mean):
        ax.axvline(base_mean, color="black", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), [f"{r['variant']}{' (baseline)' if r['variant'] == baseline else ''}"
                                     for r in rows], fontsize=6 if len(rows) > 30 else 7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(f"{metric}: mean and 95% t interval\n(green better, red worse than the baseline; open: 1 run)",
                  fontsize=8)
    fig.tight_layout()
    fig.savefig(bar, dpi=100)
    plt.close(fig)
    files.append(bar)

    curves = out / "val_loss_curves.png"
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, row in enumerate(rows):  # one line object per variant: its runs joined by NaN breaks
        xs: list[float] = []
        ys: list[float] = []
        for run_id, _ in seeded[row["variant"]]:
            hist = histories.get(run_id, [])
            xs += [s + 1 for s, _ in hist] + [float("nan")]
            ys += [v for _, v in hist] + [float("nan")]
        ax.plot(xs, ys, color=f"C{i % 10}", lw=1, label=row["variant"] if i < 10 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_loss")
    ax.set_title("val_loss per run" + (f" (legend: first 10 of {len(rows)} variants)" if len(rows) > 10 else ""),
                 fontsize=8)
    ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(curves, dpi=100)
    plt.close(fig)
    files.append(curves)

    pooled = {}
    for row in rows:
        diagram = pool_reliability([reliability[r] for r, _ in seeded[row["variant"]] if r in reliability])
        if diagram is not None:
            pooled[row["variant"]] = diagram
    if pooled:
        path = out / "reliability.png"
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
        for i, (variant, d) in enumerate(pooled.items()):
            points = [(c, a) for c, a in zip(d["confidence"], d["accuracy"], strict=True) if c is not None]
            ax.plot([c for c, _ in points], [a for _, a in points], "o-", ms=3, color=f"C{i % 10}",
                    label=f"{variant} (ECE {d['ece']:.3f})")
        ax.set_xlabel("confidence (mean of the bin)")
        ax.set_ylabel("accuracy")
        title = "reliability, pooled over seeds"
        if len(rows) > len(pooled) and len(pooled) == MAX_RELIABILITY_VARIANTS:
            title += f" (first {MAX_RELIABILITY_VARIANTS} of {len(rows)} variants)"
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(path)
    return files


# ---------------------------------------------------------------------------------------------- the report
def find_parent(client: MlflowClient, experiment_ids: list[str], sweep: str) -> str:
    """The parent run id of sweep `sweep` (an id, or "latest")."""
    if not SWEEP_ID.match(sweep):
        raise ValueError(f"--sweep must be 'latest' or a sweep id (letters, digits, '_', '-', '.'; the tag "
                         f"{SWEEP_TAG} of a parent run, e.g. 3f9c2a1b7d4e), got {sweep!r}")
    flt = f"tags.`{ROLE_TAG}` = 'sweep'"
    if sweep != "latest":
        flt += f" and tags.`{SWEEP_TAG}` = '{sweep}'"
    found = client.search_runs(experiment_ids, flt, order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        raise SystemExit(f"xentlab-compare: no sweep {sweep!r} in experiments {experiment_ids}; run `make sweep` first")
    return found[0].info.run_id


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
    markdown = to_markdown(rows, comparisons, title=title, baseline=base, baseline_note=note, metric=metric,
                           ranked=ranked, losses_note=losses_note)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown + "\n")
    files = [out_dir / "report.md", *write_csvs(rows, comparisons, base, out_dir)]
    shown = [r["variant"] for r in rows][:MAX_RELIABILITY_VARIANTS]
    reliability = read_reliability(client, [rid for v in shown for rid, _ in seeded[v]], workers)
    files += plot_charts(rows, seeded, comparisons, histories, reliability, baseline=base, metric=metric,
                         out=out_dir)
    for f in files:
        client.log_artifact(parent_run_id, str(f), "report")
    return Report(sweep_id, parent_run_id, base, rows, comparisons, markdown, files)


def open_store(uri: str, explicit: bool) -> MlflowClient:
    """A client on an existing store: a read-only command never creates one (a missing SQLite file, a server
    that does not answer: fails within seconds, saying where it looked and how to point elsewhere)."""
    db = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
    elif uri.startswith("file:"):  # a folder store (mlruns/)
        db = Path(url2pathname(urlsplit(uri).path))
    if db is not None:
        if not db.exists():
            source = "--tracking-uri" if explicit else (
                "$MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default, outputs/mlflow.db "
                "under the current folder")
            raise SystemExit(
                f"xentlab-compare: no tracking store at {db} (from {source}). Run it from the folder that holds "
                "outputs/ (where `make sweep` ran), or pass --tracking-uri sqlite:////abs/path/mlflow.db or "
                "--tracking-uri http://HOST:5000 (or set MLFLOW_TRACKING_URI)")
    try:
        probe_server(uri)
    except TrackingUnreachable as err:
        raise SystemExit(f"xentlab-compare: {err}") from err
    return MlflowClient(uri)


def main(argv: list[str] | None = None) -> None:
    """`xentlab-compare [--experiment E] [--sweep ID|latest] [--metric val_nll] [--baseline VARIANT]`: prints
    the report and logs it to the sweep's parent run."""
    parser = argparse.ArgumentParser(prog="xentlab-compare", description=main.__doc__)
    parser.add_argument("--experiment", default="xentlab")
    parser.add_argument("--sweep", default="latest", help="a sweep id (tag xentlab.sweep_id) or 'latest'")
    parser.add_argument("--metric", default="val_nll",
                        help=f"primary metric (default val_nll: one scale for every loss): one of {COLUMN_NAMES}")
    parser.add_argument("--baseline", default=None,
                        help="the variant the others are compared with, as in the report (e.g. loss=crossentropy; "
                        "overrides in any order); default: the sweep preset's, else the first variant launched")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or outputs/mlflow.db")
    parser.add_argument("--out", default=None, help="folder for the files (default: outputs/reports/<sweep id>)")
    args = parser.parse_args(argv)
    if args.metric not in COLUMN_NAMES:
        parser.error(f"--metric must be one of {COLUMN_NAMES}, got {args.metric!r}")
    if not SWEEP_ID.match(args.sweep):
        parser.error(f"--sweep must be 'latest' or a sweep id (letters, digits, '_', '-', '.'; the tag {SWEEP_TAG} "
                     f"of a parent run, e.g. 3f9c2a1b7d4e), got {args.sweep!r}")
    uri = resolve_tracking_uri(args.tracking_uri, os.getcwd())
    client = open_store(uri, explicit=args.tracking_uri is not None)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"xentlab-compare: no experiment {args.experiment!r} in {mask_uri(uri)}")
    parent = find_parent(client, [experiment.experiment_id], args.sweep)
    sweep_id = client.get_run(parent).data.tags[SWEEP_TAG]
    out = Path(args.out or Path("outputs") / "reports" / sweep_id)
    try:
        report = write_report(uri, parent_run_id=parent, out_dir=out, metric=args.metric, baseline=args.baseline)
    except ValueError as err:
        raise SystemExit(f"xentlab-compare: {err}") from err
    print(report.markdown)
    print(f"\nwritten: {', '.join(str(f) for f in report.files)} (also logged to parent run {parent})")


if __name__ == "__main__":
    main()
