"""Evaluation figures (confusion matrix, ROC curves, learning curves) and the per-class report, as files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_curve  # noqa: E402

MAX_CLASSES_PLOTTED = 12  # beyond this (the 256-byte vocabulary) show the most frequent classes only


def class_probabilities(outputs: np.ndarray, from_logits: bool) -> np.ndarray:
    """(..., K) probabilities from model outputs; one sigmoid unit becomes two columns [1-p, p]."""
    out = np.asarray(outputs, dtype="float64")
    if out.shape[-1] == 1:
        p = 1.0 / (1.0 + np.exp(-out)) if from_logits else out
        return np.concatenate([1.0 - p, p], axis=-1)
    if from_logits:
        out = np.exp(out - out.max(-1, keepdims=True))
        out /= out.sum(-1, keepdims=True)
    return out


def flatten_valid(y: np.ndarray, probs: np.ndarray, ignore_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Every labelled position as one row: y (M,), probs (M, K), masked positions dropped."""
    y = np.asarray(y).reshape(-1)
    probs = probs.reshape(len(y), -1)
    keep = np.ones_like(y, dtype=bool) if ignore_class is None else y != ignore_class
    return y[keep], probs[keep]


def _shown_classes(y: np.ndarray, k: int) -> np.ndarray:
    if k <= MAX_CLASSES_PLOTTED:
        return np.arange(k)
    return np.argsort(-np.bincount(y, minlength=k))[:MAX_CLASSES_PLOTTED]


def per_class_report(y: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Precision, recall, F1 and support per class (scikit-learn), keyed by class name."""
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
    cm = confusion_matrix(y, probs.argmax(-1), labels=shown)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(shown)), [class_names[c] for c in shown], rotation=90, fontsize=7)
    ax.set_yticks(range(len(shown)), [class_names[c] for c in shown], fontsize=7)
    if len(shown) <= 12:
        for i in range(len(shown)):
            for j in range(len(shown)):
                ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(y: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
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
    ax.legend(fontsize=7, loc="lower right")
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
    folder: Path, *, y: np.ndarray, outputs: np.ndarray, from_logits: bool, class_names: list[str],
    ignore_class: int | None, history: dict[str, list[float]], multi_head: bool = False,
) -> list[Path]:
    """Writes learning curves, and per head (one for single-output models): confusion matrix, ROC, report.

    multi_head: labels (N, heads) are separate classifications (a figure each); otherwise every position
    of the labels (a sequence, say) is one example of the same classification.
    """
    folder.mkdir(parents=True, exist_ok=True)
    plot_learning_curves(history, folder / "learning_curves.png")
    written = [folder / "learning_curves.png"]
    probs = class_probabilities(outputs, from_logits)
    heads = [(f"_head{h}", y[:, h], probs[:, h]) for h in range(y.shape[1])] if multi_head else [("", y, probs)]
    report = {}
    for suffix, y_h, p_h in heads:
        y_flat, p_flat = flatten_valid(y_h, p_h, ignore_class)
        report[suffix.strip("_") or "all"] = per_class_report(y_flat, p_flat, class_names)
        plot_confusion(y_flat, p_flat, class_names, folder / f"confusion_matrix{suffix}.png", f"test{suffix}")
        plot_roc(y_flat, p_flat, class_names, folder / f"roc_curves{suffix}.png", f"test ROC{suffix}")
        written += [folder / f"confusion_matrix{suffix}.png", folder / f"roc_curves{suffix}.png"]
    (folder / "per_class.json").write_text(json.dumps(report, indent=2))
    return written + [folder / "per_class.json"]
