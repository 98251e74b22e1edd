"""The sweep's charts, as files: each variant against the baseline, learning curves and reliability per variant,
tuning curves."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from xentlab.chart_style import CHART_FONT  # noqa: E402
from xentlab.metric_table import PRIMARY, task_of_metric  # noqa: E402
from xentlab.report.columns import MAX_RELIABILITY_VARIANTS  # noqa: E402
from xentlab.report.query import pool_reliability  # noqa: E402
from xentlab.report.render import format_p, verdict_text  # noqa: E402
from xentlab.report.statistics import direction  # noqa: E402

# One colour per verdict, in every chart and in report.html: the picture says what the test said.
VERDICT_COLOURS = {"better": "#1a9850", "worse": "#d73027", "no difference": "#7f7f7f", "untested": "#bdbdbd"}
LABEL_WIDTH = 28  # characters of a variant name in a chart before it is cut (the same cut everywhere)
MAX_CURVE_VARIANTS = 10  # curves of more variants share colours: the legend names the first ten
MAX_DELTA_VARIANTS = 50  # rows of the primary chart: a taller picture is unreadable (and slow); the tables have all


# Curves: the baseline black, the others in tab10 order without its green and red (the verdict colours).
CURVE_COLOURS = ("C0", "C1", "C4", "C5", "C6", "C8", "C9", "C7", "C2", "C3")


def variant_colours(report) -> dict[str, str]:
    """One colour per variant, the same in every chart: the baseline black, the others in row order."""
    others = [r["variant"] for r in report.rows if r["variant"] != report.baseline]
    return {report.baseline: "black", **{v: CURVE_COLOURS[i % len(CURVE_COLOURS)] for i, v in enumerate(others)}}


def short_label(name: str, width: int = LABEL_WIDTH) -> str:
    """A variant name cut to `width` characters with an ellipsis (the same cut in every chart)."""
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def curve_metric(metric: str) -> str:
    """The per-epoch metric the curves chart plots for a primary `metric`: itself when it is one (`val_nll`,
    `val_bpc`), val_loss for best_val_loss, else the validation nll (one scale for every loss)."""
    if metric.startswith("val_"):
        return metric
    if metric == "best_val_loss":
        return "val_loss"
    return PRIMARY[task_of_metric(metric)]


def delta_points(report) -> list[dict]:
    """What the primary chart draws: per variant but the baseline, in the report's row order, the test's mean
    difference to the baseline on the primary metric, its 95% interval (paired where the test paired), the test,
    the Holm-adjusted p and the verdict. Empty when the primary metric is not ranked."""
    points = []
    for row in report.rows:
        c = report.comparison(row["variant"], report.metric)
        if c is None:
            continue
        points.append({"variant": c.variant, "mean": c.diff.mean, "low": c.diff.ci_low, "high": c.diff.ci_high,
                       "test": c.diff.test, "n": c.diff.n, "p_holm": c.p_holm, "verdict": c.verdict,
                       "text": verdict_text(c)})
    return points


def _verdict_label(point: dict) -> str:
    if point["verdict"] == "untested":
        return "untested: add seeds"
    return f"{point['text']}, p={format_p(point['p_holm'])}"


def plot_delta(report, path: Path) -> list[dict]:
    """`<metric>_vs_baseline.png`: each variant's difference to the baseline with the test's 95% interval against
    a zero line, coloured by verdict, the verdict and Holm p written beside it. Returns what it drew
    (`delta_points`)."""
    every = delta_points(report)
    points = every[:MAX_DELTA_VARIANTS]  # in the report's row order: the best on the primary metric first
    better = direction(report.metric)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(points) + 1.9))
    groups: dict[tuple[str, bool], list[tuple[int, dict]]] = {}  # one draw call per style: a 200-variant sweep
    for y, point in enumerate(points):
        colour = VERDICT_COLOURS[point["verdict"]]
        groups.setdefault((colour, point["test"] == "untested"), []).append((y, point))
        ax.text(1.02, y, _verdict_label(point), transform=ax.get_yaxis_transform(), va="center",
                fontsize=CHART_FONT, color=colour)
    for (colour, untested), drawn in groups.items():
        ys, means = [y for y, _ in drawn], [p["mean"] for _, p in drawn]
        if untested:
            ax.plot(means, ys, "o", ms=7, color=colour, mfc="white", ls="none")
        else:
            xerr = [[p["mean"] - p["low"] for _, p in drawn], [p["high"] - p["mean"] for _, p in drawn]]
            ax.errorbar(means, ys, xerr=xerr, fmt="o", ms=7, color=colour, capsize=4, lw=2)
    ends = [v for p in points for v in (p["low"], p["high"], p["mean"]) if math.isfinite(v)] + [0.0]
    pad = 0.08 * ((max(ends) - min(ends)) or 1.0)  # zero and its label stay inside the axes
    ax.set_xlim(min(ends) - pad, max(ends) + pad)
    ax.axvline(0.0, color="black", lw=1)
    ax.text(0.0, -0.45, " baseline", va="top", ha="right" if max(ends) <= 0 else "left", fontsize=CHART_FONT - 1)
    ax.set_yticks(range(len(points)), [short_label(p["variant"]) for p in points], fontsize=CHART_FONT)
    ax.set_ylim(len(points) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=CHART_FONT)
    arrow = "\u2190 better" if better == "min" else "better \u2192"
    tests = sorted({p["test"] for p in points if p["test"] != "untested"})
    ax.set_xlabel(f"\u0394 {report.metric} = variant \u2212 baseline    ({arrow})", fontsize=CHART_FONT + 1)
    more = f"; first {len(points)} of {len(every)} variants" if len(every) > len(points) else ""
    ax.set_title(f"{report.metric} against {short_label(report.baseline)} (baseline): mean difference and 95% "
                 f"interval\nof the {' / '.join(tests) or 'no'} t-test; colour = verdict (Holm-adjusted, "
                 f"alpha 0.05){more}", fontsize=CHART_FONT)
    ax.grid(axis="x", lw=0.3, alpha=0.5)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return points


def plot_curves(report, seeded: dict, histories: dict, metric: str, path: Path) -> None:
    """`<metric>_curves.png`: the per-epoch `metric` of every run, one colour per variant (its seeds alike)."""
    from matplotlib.ticker import MaxNLocator

    colours = variant_colours(report)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, row in enumerate(report.rows):  # one line object per variant: its runs joined by NaN breaks
        xs: list[float] = []
        ys: list[float] = []
        for run_id, _ in seeded[row["variant"]]:
            hist = histories.get(run_id, [])
            xs += [s + 1 for s, _ in hist] + [float("nan")]
            ys += [v for _, v in hist] + [float("nan")]
        label = short_label(row["variant"]) + (" (baseline)" if row["variant"] == report.baseline else "")
        baseline = row["variant"] == report.baseline  # drawn on top: the reference stays visible under ties
        ax.plot(xs, ys, color=colours[row["variant"]], lw=1.6 if baseline else 1.1, zorder=3 if baseline else 2,
                label=label if i < MAX_CURVE_VARIANTS else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=CHART_FONT + 1)
    ax.set_ylabel(metric, fontsize=CHART_FONT + 1)
    ax.tick_params(labelsize=CHART_FONT)
    more = len(report.rows) > MAX_CURVE_VARIANTS
    ax.set_title(f"{metric} per epoch, every run (one colour per variant"
                 + (f"; legend: first {MAX_CURVE_VARIANTS} of {len(report.rows)})" if more else ")"),
                 fontsize=CHART_FONT + 1)
    ax.legend(fontsize=CHART_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(lw=0.3, alpha=0.5)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_pooled_reliability(report, seeded: dict, reliability: dict[str, dict], path: Path) -> bool:
    """`reliability.png`: each variant's reliability curve pooled over its seeds; False when no run logged one."""
    pooled = {}
    for row in report.rows:
        diagram = pool_reliability([reliability[r] for r, _ in seeded[row["variant"]] if r in reliability])
        if diagram is not None:
            pooled[row["variant"]] = diagram
    if not pooled:
        return False
    colours = variant_colours(report)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    for variant, d in pooled.items():
        points = [(c, a) for c, a in zip(d["confidence"], d["accuracy"], strict=True) if c is not None]
        ax.plot([c for c, _ in points], [a for _, a in points], "o-", ms=3, color=colours[variant],
                label=f"{short_label(variant)} (ECE {d['ece']:.3f})")
    ax.set_xlabel("confidence (mean of the bin)", fontsize=CHART_FONT + 1)
    ax.set_ylabel("accuracy", fontsize=CHART_FONT + 1)
    ax.tick_params(labelsize=CHART_FONT)
    title = "reliability, pooled over seeds"
    if len(report.rows) > len(pooled) and len(pooled) == MAX_RELIABILITY_VARIANTS:
        title += f" (first {MAX_RELIABILITY_VARIANTS} of {len(report.rows)} variants)"
    ax.set_title(title, fontsize=CHART_FONT + 1)
    ax.legend(fontsize=CHART_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_charts(report, seeded: dict, histories: dict, reliability: dict[str, dict], *, out: Path) -> list[Path]:
    """The sweep's charts: `<metric>_vs_baseline.png` (`plot_delta`, when the primary metric is ranked),
    `<curve metric>_curves.png` (`plot_curves`; `histories` holds that metric per run) and `reliability.png`
    (`plot_pooled_reliability`, when runs logged their reliability diagrams)."""
    files = []
    if delta_points(report):
        plot_delta(report, out / f"{report.metric}_vs_baseline.png")
        files.append(out / f"{report.metric}_vs_baseline.png")
    metric = curve_metric(report.metric)
    plot_curves(report, seeded, histories, metric, out / f"{metric}_curves.png")
    files.append(out / f"{metric}_curves.png")
    if plot_pooled_reliability(report, seeded, reliability, out / "reliability.png"):
        files.append(out / "reliability.png")
    return files


def plot_tuning_curves(curves: dict[str, list[float | None]], metric: str, path: Path, trials: int) -> Path:
    """Best `metric` so far against trials, one line per variant: a curve still falling at the last trial says the
    budget was not enough to tune that variant."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, curve in curves.items():
        points = [(i + 1, v) for i, v in enumerate(curve) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=short_label(name))
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"best {metric} so far")
    ax.set_title(f"tuning curves: {trials} trials per variant", fontsize=CHART_FONT + 1)
    ax.tick_params(labelsize=CHART_FONT)
    ax.legend(fontsize=CHART_FONT)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
