"""Comparison report of a sweep (`xentlab-compare`): one row per variant, seeds aggregated as mean +- std.

Reads the child runs of a sweep's parent run from MLflow and writes a Markdown table, a CSV and two charts,
logged as artifacts of the parent run.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from xentlab.store import ROLE_TAG, SWEEP_TAG

# (column, source, better): source is a final metric, "best:<metric>" (min over epochs), or a run attribute.
COLUMNS = [
    ("val_loss", "val_loss", "min"),
    ("best_val_loss", "best:val_loss", "min"),
    ("val_nll", "val_nll", "min"),  # cross-entropy of the predictions: one scale for every loss variant
    ("val_accuracy", "val_accuracy", "max"),
    ("val_auc", "val_auc", "max"),
    ("test_loss", "test_loss", "min"),
    ("test_nll", "test_nll", "min"),
    ("test_accuracy", "test_accuracy", "max"),
    ("test_auc", "test_auc", "max"),
    ("epochs", "epochs", None),
    ("wall_time_s", "wall_time_s", "min"),
    ("samples_per_s", "mean:samples_per_s", "max"),
]
SEED_OVERRIDE = re.compile(r"(^|,)trainer\.seed=[^,]*")


@dataclass
class Report:
    sweep_id: str
    parent_run_id: str
    rows: list[dict]
    markdown: str
    files: list[Path]


def variant_name(run_name: str) -> str:
    """The run name without its seed, so runs that differ only by trainer.seed aggregate into one row."""
    name = SEED_OVERRIDE.sub("", run_name).strip(",")
    return name or "(default)"


def run_values(client: MlflowClient, run) -> dict[str, float]:
    """The value of every report column for one run (NaN where the run has no such metric)."""
    metrics = run.data.metrics
    values: dict[str, float] = {}
    for column, source, _ in COLUMNS:
        kind, _, metric = source.partition(":")
        if source == "epochs":
            values[column] = float(len(client.get_metric_history(run.info.run_id, "val_loss")))
        elif source == "wall_time_s":
            end = run.info.end_time or run.info.start_time
            values[column] = (end - run.info.start_time) / 1000.0
        elif metric:
            history = [m.value for m in client.get_metric_history(run.info.run_id, metric)]
            reduce = np.min if kind == "best" else np.mean
            values[column] = float(reduce(history)) if history else float("nan")
        else:
            values[column] = float(metrics.get(source, float("nan")))
    return values


def aggregate(per_run: dict[str, list[dict[str, float]]]) -> list[dict]:
    """Rows of mean, std (sample std, ddof=1; 0 for one run) and n per variant."""
    rows = []
    for variant, runs in per_run.items():
        row: dict = {"variant": variant, "n": len(runs)}
        for column, _, _ in COLUMNS:
            vals = np.array([r[column] for r in runs], dtype="float64")
            vals = vals[np.isfinite(vals)]
            row[column] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{column}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def best_per_column(rows: list[dict]) -> dict[str, str]:
    best = {}
    for column, _, better in COLUMNS:
        scored = [(r[column], r["variant"]) for r in rows if better and np.isfinite(r[column])]
        if scored:
            best[column] = (min(scored) if better == "min" else max(scored))[1]
    return best


def _cell(row: dict, column: str, best: dict[str, str]) -> str:
    value, std = row[column], row[f"{column}_std"]
    if not np.isfinite(value):
        return "-"
    digits = 0 if column in ("epochs", "samples_per_s") else 2 if column == "wall_time_s" else 4
    text = f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if row["n"] > 1 else "")
    return f"**{text}**" if best.get(column) == row["variant"] else text


def to_markdown(rows: list[dict], title: str) -> str:
    best = best_per_column(rows)
    header = ["variant", "n", *[c for c, _, _ in COLUMNS]]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["variant"], str(row["n"]), *[_cell(row, c, best) for c, _, _ in COLUMNS]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± sample std over seeds; **bold** is the best value of each column."]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    fields = ["variant", "n"] + [f for c, _, _ in COLUMNS for f in (c, f"{c}_std")]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows([{k: r[k] for k in fields} for r in rows])


def plot_charts(client: MlflowClient, rows: list[dict], runs_by_variant: dict, metric: str, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bar = out / f"{metric}_by_variant.png"
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows) + 2), 4))
    names = [r["variant"] for r in rows]
    ax.bar(range(len(rows)), [r[metric] for r in rows], yerr=[r[f"{metric}_std"] for r in rows], capsize=4)
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(bar, dpi=100)
    plt.close(fig)

    curves = out / "val_loss_curves.png"
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (variant, runs) in enumerate(runs_by_variant.items()):
        for j, run in enumerate(runs):
            hist = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
            ax.plot([m.step + 1 for m in hist], [m.value for m in hist], color=f"C{i % 10}", lw=1,
                    label=variant if j == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_loss")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(curves, dpi=100)
    plt.close(fig)
    return [bar, curves]


def find_parent(client: MlflowClient, experiment_ids: list[str], sweep: str) -> str:
    """The parent run id of sweep `sweep` (an id, or "latest")."""
    flt = f"tags.`{ROLE_TAG}` = 'sweep'"
    if sweep != "latest":
        flt += f" and tags.`{SWEEP_TAG}` = '{sweep}'"
    found = client.search_runs(experiment_ids, flt, order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        raise SystemExit(f"xentlab-compare: no sweep {sweep!r} in experiments {experiment_ids}; run `make sweep` first")
    return found[0].info.run_id


def write_report(uri: str, *, parent_run_id: str, out_dir: Path, metric: str = "val_nll") -> Report:
    """Builds the report of the sweep whose parent run is `parent_run_id` and logs it to that run."""
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    sweep_id = parent.data.tags.get(SWEEP_TAG, "?")
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    finished = [r for r in children if r.info.status == "FINISHED"]
    runs_by_variant: dict[str, list] = {}
    for run in finished:
        runs_by_variant.setdefault(variant_name(run.info.run_name or run.info.run_id), []).append(run)
    per_run = {v: [run_values(client, r) for r in runs] for v, runs in runs_by_variant.items()}
    better = dict((c, b) for c, _, b in COLUMNS).get(metric, "min")
    rows = sorted(aggregate(per_run), key=lambda r: r[metric] if better != "max" else -r[metric])
    skipped = len(children) - len(finished)
    title = f"sweep {sweep_id}: {len(finished)} runs, {len(rows)} variants" + (
        f" ({skipped} runs not FINISHED, left out)" if skipped else "")
    markdown = to_markdown(rows, title)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown + "\n")
    write_csv(rows, out_dir / "report.csv")
    files = [out_dir / "report.md", out_dir / "report.csv"]
    if rows:
        files += plot_charts(client, rows, runs_by_variant, metric, out_dir)
    for f in files:
        client.log_artifact(parent_run_id, str(f), "report")
    return Report(sweep_id, parent_run_id, rows, markdown, files)


def main(argv: list[str] | None = None) -> None:
    """`xentlab-compare [--experiment E] [--sweep ID|latest] [--metric val_loss]`: prints and logs the report."""
    from xentlab.store import resolve_tracking_uri

    parser = argparse.ArgumentParser(prog="xentlab-compare", description=main.__doc__)
    parser.add_argument("--experiment", default="xentlab")
    parser.add_argument("--sweep", default="latest", help="a sweep id (tag xentlab.sweep_id) or 'latest'")
    parser.add_argument("--metric", default="val_nll",
                        help="sort column (default val_nll: one scale for every loss): one of "
                        f"{[c for c, _, _ in COLUMNS]}")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or outputs/mlflow.db")
    parser.add_argument("--out", default=None, help="folder for the files (default: outputs/reports/<sweep id>)")
    args = parser.parse_args(argv)
    if args.metric not in [c for c, _, _ in COLUMNS]:
        parser.error(f"--metric must be one of {[c for c, _, _ in COLUMNS]}, got {args.metric!r}")
    uri = resolve_tracking_uri(args.tracking_uri, os.getcwd())
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"xentlab-compare: no experiment {args.experiment!r} in {uri}")
    parent = find_parent(client, [experiment.experiment_id], args.sweep)
    sweep_id = client.get_run(parent).data.tags[SWEEP_TAG]
    out = Path(args.out or Path("outputs") / "reports" / sweep_id)
    report = write_report(uri, parent_run_id=parent, out_dir=out, metric=args.metric)
    print(report.markdown)
    print(f"\nwritten: {', '.join(str(f) for f in report.files)} (also logged to parent run {parent})")


if __name__ == "__main__":
    main()
