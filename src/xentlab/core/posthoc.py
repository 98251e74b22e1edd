"""Post-hoc logit adjustment (Menon et al. 2021), in numpy: a trained model's predictions for balanced error,
without retraining.

A model trained by plain cross-entropy on a long-tailed split estimates p(y | x), which carries the training prior
pi_y. Adjusted scores log p(y | x) - tau * log pi_y (tau = 1: divide out the prior) favour the rare classes as a
balanced test distribution needs; on CIFAR-10-LT Menon et al. find this recovers most of the logit-adjusted loss's
gain. The scores stay a distribution after a softmax, so NLL and ECE are read from softmax(adjusted).

Outputs are what the model returns (logits or probabilities, one sigmoid unit included) with one integer label
per example; positions labelled `ignore_class` are left out (`xentlab.core.calibration` reads them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import log_softmax

from xentlab.core.calibration import (
    NUM_BINS,
    _adaptive_ece,
    _brier,
    _classwise_ece,
    _ece,
    _logits_and_labels,
    _mean_nll,
)
from xentlab.data.long_tail import IMBALANCE_RATIO, SHOT_THRESHOLDS, imbalance_ratio, is_imbalanced
from xentlab.metric_table import posthoc_names

# Tried on validation balanced accuracy with calibration.posthoc_tune=true (Menon et al. sweep tau in [0, 2]).
TAU_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
POSTHOC_METRICS = posthoc_names()  # the metric table's rows scored again after the adjustment


def skip_reason(y_train, class_counts, class_names: Sequence[str]) -> str | None:
    """Why the adjustment cannot apply to this training split (a sentence), or None when it can."""
    y = np.asarray(y_train)
    if y.ndim != 1:
        return (f"post-hoc logit adjustment skipped: it needs one class label per example (a prior over classes), "
                f"but the labels have shape {y.shape[1:]} per example (text, sequence or multi-head)")
    absent = [class_names[c] for c, n in enumerate(class_counts) if n <= 0]
    if absent:
        return (f"post-hoc logit adjustment skipped: classes {absent[:5]} have no training example, so their prior "
                f"is 0 and log 0 has no adjustment")
    return None


def balanced_reason(class_counts, thresholds=SHOT_THRESHOLDS) -> str | None:
    """Why the adjustment is not worth reporting for this training split (it is balanced: see
    `xentlab.data.long_tail.is_imbalanced`), or None when it is imbalanced. On a balanced split log pi is nearly
    constant and the adjusted metrics repeat the plain ones under other names."""
    if is_imbalanced(class_counts, thresholds):
        return None
    return (f"post-hoc logit adjustment not computed: the training split is balanced (largest / smallest class "
            f"count {imbalance_ratio(class_counts):.2f} <= {IMBALANCE_RATIO:g}, one shot group)")


def log_prior(class_counts) -> np.ndarray:
    """log pi_c = log(n_c / n) of the training split; every count must be > 0."""
    n = np.asarray(class_counts, dtype=np.float64)
    if n.ndim != 1 or np.any(n <= 0):
        raise ValueError(f"class_counts must be positive training counts, one per class; received {n.tolist()}")
    return np.log(n / n.sum())


def adjust(logits: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """Log-probabilities of the adjusted prediction: log_softmax(log p - tau * log pi), shape (M, K)."""
    return log_softmax(log_softmax(logits, axis=-1) - tau * prior[None, :], axis=-1)


def scores(log_p: np.ndarray, labels: np.ndarray, shot_groups: Mapping[str, Sequence[int]] | None = None
           ) -> dict[str, float]:
    """accuracy, balanced_accuracy, macro_f1, worst_class_recall (with the rules of the streaming metrics, see
    `xentlab.core.metrics.SparseConfusion`), nll, 15-bin ece, classwise_ece, adaptive_ece and brier of
    log-probabilities (M, K); plus `<group>_shot_accuracy` for each group with a class in the labels."""
    k = log_p.shape[1]
    predicted = log_p.argmax(-1)
    matrix = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k).astype(np.float64)
    tp, labelled, guessed = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    present = labelled > 0
    recall = np.divide(tp, labelled, out=np.zeros(k), where=present)
    either = labelled + guessed > 0
    out = {
        "accuracy": float(tp.sum() / len(labels)),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(np.mean(2 * tp[either] / (labelled + guessed)[either])),
        "worst_class_recall": float(recall[present].min()),
        "nll": _mean_nll(log_p, labels, 1.0),
        "ece": _ece(log_p, labels, 1.0, NUM_BINS),
        "classwise_ece": _classwise_ece(log_p, labels, 1.0, NUM_BINS),
        "adaptive_ece": _adaptive_ece(log_p, labels, 1.0, NUM_BINS),
        "brier": _brier(log_p, labels, 1.0),
    }
    for group, classes in (shot_groups or {}).items():
        kept = [c for c in classes if present[c]]
        if kept:
            out[f"{group}_shot_accuracy"] = float(recall[kept].mean())
    return out


def tune_tau(logits: np.ndarray, labels: np.ndarray, prior: np.ndarray, default: float,
             grid: Sequence[float] = TAU_GRID) -> tuple[float, float]:
    """(tau, its balanced accuracy): the grid's tau with the best balanced accuracy on these (validation) outputs;
    ties go to the tau closest to `default`, so an uninformative validation split keeps the configured tau."""
    best = max(grid, key=lambda t: (scores(adjust(logits, prior, t), labels)["balanced_accuracy"], -abs(t - default)))
    return float(best), scores(adjust(logits, prior, best), labels)["balanced_accuracy"]


def posthoc_evaluation(test_outputs, y_test, class_counts, *, from_logits: bool, tau: float,
                       ignore_class: int | None = None, val_outputs=None, y_val=None,
                       shot_groups: Mapping[str, Sequence[int]] | None = None) -> dict[str, float]:
    """The test metrics of the adjusted predictions, as `test_<metric>_posthoc`, and the tau used (`posthoc_tau`).

    Args:
        test_outputs: Model outputs on the test split (..., K), K = len(class_counts) (or 1 for a sigmoid unit).
        y_test: Integer labels of the test split.
        class_counts: Training examples per class, all > 0 (see `skip_reason`).
        from_logits: Whether outputs are logits.
        tau: The adjustment's scale (calibration.posthoc_tau).
        ignore_class: The "n/a" label, left out.
        val_outputs, y_val: With both, tau is tuned on them over `TAU_GRID` (calibration.posthoc_tune), and
            `val_balanced_accuracy_posthoc` is returned too.
        shot_groups: The training split's shot groups: adds `test_<group>_shot_accuracy_posthoc`.
    """
    prior = log_prior(class_counts)
    out: dict[str, float] = {}
    if val_outputs is not None and y_val is not None:
        logits, labels = _logits_and_labels(val_outputs, y_val, from_logits=from_logits, ignore_class=ignore_class)
        tau, out["val_balanced_accuracy_posthoc"] = tune_tau(logits, labels, prior, tau)
    logits, labels = _logits_and_labels(test_outputs, y_test, from_logits=from_logits, ignore_class=ignore_class)
    if logits.shape[1] != len(prior):
        raise ValueError(f"outputs have {logits.shape[1]} classes but class_counts has {len(prior)}")
    found = scores(adjust(logits, prior, tau), labels, shot_groups)
    return {"posthoc_tau": float(tau), **out,
            **{f"test_{name}_posthoc": v for name, v in found.items() if name in POSTHOC_METRICS}}
