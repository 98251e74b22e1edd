"""A run's evaluation figures (learning curves, confusion matrix, ROC curves, reliability diagram) and per-class
report, as files: what the run logs after training."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xentlab.chart_style import CHART_FONT  # noqa: E402
from xentlab.core.probabilities import CALIBRATION_BINS, confidence_bins, to_probabilities  # noqa: E402
from xentlab.core.targets import LabelContract, labelled_rows  # noqa: E402

MAX_CLASSES_PLOTTED = 12  # beyond this (the 256-byte vocabulary) show the most frequent classes only
GLYPH_WARNING = r"Glyph \d+ .* missing from font"  # matplotlib's warning, once per character drawn without a glyph
_charmaps: dict[str, frozenset[int]] = {}  # font file -> the characters it draws, read once per process


def _charmap(path: str) -> frozenset[int]:
    if path not in _charmaps:
        from matplotlib.ft2font import FT2Font

        try:
            _charmaps[path] = frozenset(FT2Font(path).get_charmap())
        except (OSError, RuntimeError):  # a font file matplotlib cannot read draws nothing
            _charmaps[path] = frozenset()
    return _charmaps[path]


def fonts_for(texts: Iterable[str]) -> tuple[list[str], str]:
    """The font families that draw `texts`: [] when the default font has every glyph, else the default followed by
    the installed font with most of the glyphs it lacks (matplotlib falls back along the list); and the characters
    that no installed font draws ("" when there are none)."""
    from matplotlib import font_manager

    default = font_manager.findfont(font_manager.FontProperties())
    needed = {ord(c) for text in texts for c in text if not c.isspace()} - _charmap(default)
    if not needed:
        return [], ""
    best, covered = None, set()
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith("Last Resort"):  # draws every character as the same box
            continue
        cover = needed & _charmap(entry.fname)
        if len(cover) > len(covered):
            best, covered = entry, cover
            if cover == needed:
                break
    missing = "".join(sorted(chr(c) for c in needed - covered))
    return ([font_manager.FontProperties(fname=default).get_name(), best.name] if best else []), missing


@contextmanager
def fonts_drawing(texts: Iterable[str]) -> Iterator[None]:
    """Figures drawn inside use a font that has the glyphs of `texts` (class names in any script) when one is
    installed. Characters that no installed font draws show as boxes, said once on stderr instead of a matplotlib
    warning per character and figure."""
    families, missing = fonts_for(texts)
    with plt.rc_context({"font.family": families} if families else {}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=GLYPH_WARNING)
        yield
    if missing:
        print(f"note: no installed font draws {missing[:20]!r} (in the class names): the figures show boxes for "
              f"them; install a font that has them (for Chinese, Japanese or Korean: Noto Sans CJK, Debian's "
              f"fonts-noto-cjk)", file=sys.stderr, flush=True)


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
        if f"val_{name}" in history:  # NaN at epochs that did not validate (trainer.validate_every)
            val = np.asarray(history[f"val_{name}"], dtype=float)
            ax.plot(epochs[np.isfinite(val)], val[np.isfinite(val)], marker="o", label="val")
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
    with fonts_drawing(class_names):
        return _write_evaluation(folder, y=y, outputs=outputs, labels=labels, class_names=class_names,
                                 history=history)


def _write_evaluation(folder: Path, *, y: np.ndarray, outputs: np.ndarray, labels: LabelContract,
                      class_names: list[str], history: dict[str, list[float]]) -> list[Path]:
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
