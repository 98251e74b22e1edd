"""Evaluation figures (confusion matrix, ROC curves, reliability diagram, learning curves) and reports, as files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xentlab.core.probabilities import CALIBRATION_BINS, confidence_bins, to_probabilities  # noqa: E402
from xentlab.core.targets import LabelContract, labelled_rows  # noqa: E402
from xentlab.report.columns import MAX_RELIABILITY_VARIANTS
from xentlab.report.query import pool_reliability
from xentlab.report.render import format_p, verdict_text
from xentlab.report.statistics import direction

MAX_CLASSES_PLOTTED = 12  # beyond this (the 256-byte vocabulary) show the most frequent classes only
CHART_FONT = 9  # points: tick labels and legends stay readable at the MLflow artifact viewer's width


def _shown_classes(y: np.ndarray, k: int) -> np.ndarray:
    if k <= MAX_CLASSES_PLOTTED:
        return np.arange(k)
    return np.argsort(-np.bincount(y, minlength=k))[:MAX_CLASSES_PLOTTED]


def per_class_report(y: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Precision, recall, F1 and support per class (scikit-learn), keyed by class name."""
    from sklearn.metrics import precision_recall_fscore_support  # here: a sweep's report never needs scikit-learn

    k = probs.shape[-1]
    precision, recall, f1, support = precision_recall_fscore_support(
        y, probs.argmax(-1), labels=np.arange(k), zero_division=0
    )
    return {
        class_names[c]: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                         "support": int(support[c])}
        for c in range(k)
    }


def plot_confusion(y: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    shown = _shown_classes(y, probs.shape[-1])
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y, probs.argmax(-1), labels=shown)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(shown)), [class_names[c] for c in shown], rotation=90, fontsize=8)
    ax.set_yticks(range(len(shown)), [class_names[c] for c in shown], fontsize=8)
    if len(shown) <= 12:
        for i in range(len(shown)):
            for j in range(len(shown)):
                ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(y: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    from sklearn.metrics import roc_curve

    k = probs.shape[-1]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    classes = [1] if k == 2 else _shown_classes(y, k)  # binary: the positive class only
    for c in classes:
        positives = y == c
        if positives.all() or not positives.any():
            continue  # ROC undefined without both positives and negatives
        fpr, tpr, _ = roc_curve(positives, probs[:, c])
        ax.plot(fpr, tpr, lw=1, label=class_names[c])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=CHART_FONT, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reliability_table(y: np.ndarray, probs: np.ndarray, num_bins: int = CALIBRATION_BINS) -> dict:
    """Top-label reliability per confidence bin, the format of `reliability.json` (read by other tools).

    Bins are those of the `ece` metric (`xentlab.core.probabilities.confidence_bins`: equal width, right-closed),
    so `ece` here is the streaming metric's value on the same positions (unweighted).

    Args:
        y: Labels (M,) of the positions kept (masked ones already dropped).
        probs: Probabilities (M, K).
        num_bins: Equal-width bins over [0, 1].

    Returns:
        {"num_bins": B, "edges": B + 1 floats, "count": B ints, "accuracy": B floats (None for an empty bin),
        "confidence": B mean confidences (None for an empty bin), "ece": sum_b (n_b / N) |acc_b - conf_b|,
        0.0 when there is no position}.
    """
    y = np.asarray(y).reshape(-1)
    probs = np.asarray(probs, dtype="float64")
    probs = probs.reshape(len(y), probs.shape[-1])
    confidence = probs.max(-1) if len(y) else np.zeros(0)
    correct = (probs.argmax(-1) == y).astype("float64") if len(y) else np.zeros(0)
    bins = confidence_bins(confidence, num_bins)
    count = np.bincount(bins, minlength=num_bins)
    hits = np.bincount(bins, weights=correct, minlength=num_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=num_bins)
    filled = count > 0
    accuracy = np.divide(hits, count, out=np.zeros(num_bins), where=filled)
    mean_conf = np.divide(conf_sum, count, out=np.zeros(num_bins), where=filled)
    ece = float(np.abs(hits - conf_sum).sum() / len(y)) if len(y) else 0.0
    return {"num_bins": num_bins, "edges": np.linspace(0.0, 1.0, num_bins + 1).tolist(),
            "count": count.astype(int).tolist(),
            "accuracy": [float(a) if f else None for a, f in zip(accuracy, filled, strict=True)],
            "confidence": [float(c) if f else None for c, f in zip(mean_conf, filled, strict=True)],
            "ece": ece}


def plot_reliability(table: dict, path: Path, title: str) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, positions per bin below.

    A multi-head table (with "heads") adds each head's accuracy as a line over the bars of all heads.
    """
    edges = np.asarray(table["edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True, height_ratios=[3, 1])
    accuracy = np.array([np.nan if a is None else a for a in table["accuracy"]])
    confidence = np.array([np.nan if c is None else c for c in table["confidence"]])
    top.bar(centers, np.nan_to_num(accuracy), width=width, edgecolor="black", lw=0.5, label="accuracy")
    top.bar(centers, np.nan_to_num(confidence - accuracy), bottom=np.nan_to_num(accuracy), width=width,
            color="tab:red", alpha=0.3, label="gap to confidence")
    for h, head in enumerate(table.get("heads", [])):
        acc_h = np.array([np.nan if a is None else a for a in head["accuracy"]])
        top.plot(centers, acc_h, marker="o", ms=3, lw=1, label=f"head {h} (ECE {head['ece']:.3f})")
    top.plot([0, 1], [0, 1], "k--", lw=0.8)
    top.set_ylabel("accuracy")
    top.set_title(f"{title}: ECE {table['ece']:.3f}")
    top.legend(fontsize=CHART_FONT, loc="upper left")
    bottom.bar(centers, table["count"], width=width, color="gray", edgecolor="black", lw=0.5)
    bottom.set_xlabel("confidence (top-label probability)")
    bottom.set_ylabel("positions")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> None:
    names = [m for m in ("loss", "accuracy", "auc") if m in history]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2))
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", label="val")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_evaluation(
    folder: Path, *, y: np.ndarray, outputs: np.ndarray, labels: LabelContract, class_names: list[str],
    history: dict[str, list[float]],
) -> list[Path]:
    """Writes learning curves, the reliability diagram, and per head (one for single-output models): confusion
    matrix, ROC, per-class report.

    Every figure reads the labelled positions of the run's label contract (`labels`). With separate heads
    (`labels.num_heads`), labels (N, heads) are separate classifications (a figure each); otherwise every
    position of the labels (a sequence, say) is one example of the same classification. `reliability.json` (see
    `reliability_table`) covers every labelled position; with heads it also holds "heads", one table per head.
    """
    folder.mkdir(parents=True, exist_ok=True)
    plot_learning_curves(history, folder / "learning_curves.png")
    written = [folder / "learning_curves.png"]
    probs = to_probabilities(outputs, labels.from_logits)
    multi_head = labels.num_heads is not None
    heads = [(f"_head{h}", y[:, h], probs[:, h]) for h in range(y.shape[1])] if multi_head else [("", y, probs)]
    report = {}
    for suffix, y_h, p_h in heads:
        y_flat, p_flat = labelled_rows(y_h, p_h, labels.ignore_class)
        report[suffix.strip("_") or "all"] = per_class_report(y_flat, p_flat, class_names)
        plot_confusion(y_flat, p_flat, class_names, folder / f"confusion_matrix{suffix}.png", f"test{suffix}")
        plot_roc(y_flat, p_flat, class_names, folder / f"roc_curves{suffix}.png", f"test ROC{suffix}")
        written += [folder / f"confusion_matrix{suffix}.png", folder / f"roc_curves{suffix}.png"]
    (folder / "per_class.json").write_text(json.dumps(report, indent=2))
    reliability = reliability_table(*labelled_rows(y, probs, labels.ignore_class))
    if multi_head:
        reliability["heads"] = [reliability_table(*labelled_rows(y_h, p_h, labels.ignore_class))
                                for _, y_h, p_h in heads]
    (folder / "reliability.json").write_text(json.dumps(reliability, indent=2))
    plot_reliability(reliability, folder / "reliability.png", "test reliability")
    return written + [folder / "per_class.json", folder / "reliability.json", folder / "reliability.png"]


# ---------------------------------------------------------------------------------------------- sweep charts
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
    return "val_bpc" if metric.endswith("bpc") or metric.endswith("perplexity") else "val_nll"


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
