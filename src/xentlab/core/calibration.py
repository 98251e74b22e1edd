"""Post-hoc temperature scaling (Guo et al. 2017) and the calibration metrics it is judged by, in numpy and scipy.

One scalar T > 0 divides every logit; it is fitted by NLL on validation outputs and leaves the argmax, so the
accuracy, unchanged. `calibrate` fits T on validation outputs and reports the test metrics at that T.

Outputs are what the model returns, shape (..., K): logits or probabilities (``from_logits``), one sigmoid unit
(K = 1) included. Labels are integer class ids of shape outputs.shape[:-1] (sequences and multi-head outputs
too); every labelled position counts once, positions labelled ``ignore_class`` are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from xentlab.core.probabilities import (
    FINE_BINS,
    check_from_logits,
    class_outputs,
    confidence_bins,
    equal_mass_groups,
    fine_confidence_bins,
)
from xentlab.core.targets import LabelContract, valid_mask_np
from xentlab.errors import ConfigError, LabelError
from xentlab.metric_table import calibrated_names

EPS = 1e-7  # Keras' clip: a probability head's p is read as at least 1e-7, as the `nll` metric reads it
NUM_BINS = 15  # ECE bins of equal width over the top-label confidence (Guo et al. 2017)
# Bounds of the search over log T: T in [e^-3, e^3] = [0.05, 20]. Over-confident networks need T of about 1 to 5,
# under-confident ones (label smoothing, focal loss) T below 1, so both sides have room; the bounds keep the
# search off the degenerate ends: on a validation set the model separates perfectly the NLL falls without end
# as T -> 0, and T -> inf is the uniform prediction. Searching log T treats sharpening and softening alike.
LOG_T_BOUNDS = (-3.0, 3.0)


def _logits_and_labels(outputs: Any, y: Any, *, from_logits: bool, ignore_class: int | None):
    """Every labelled position as one row: logits (M, K') in float64 and labels (M,); K' = 2 for one unit.

    Probabilities become logits log p (their softmax is p again, up to the 1e-7 floor); one sigmoid unit is two
    classes as `class_outputs` reads it (logits [0, z], probabilities [1 - p, p]), so a sigmoid head and a 2-unit
    softmax head are scored the same way.
    """
    check_from_logits(from_logits)
    out = np.asarray(outputs, dtype=np.float64)
    labels = np.asarray(y)
    if out.ndim < 1 or out.shape[-1] < 1:
        raise LabelError(f"outputs must have a class axis, shape (..., K); received outputs.shape={out.shape}.")
    if labels.ndim == out.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.shape != out.shape[:-1]:
        raise LabelError(
            f"y must hold integer class ids of shape outputs.shape[:-1]; received y.shape={labels.shape}, "
            f"outputs.shape={out.shape}. Pass the integer labels, not their one-hot view."
        )
    flat = class_outputs(out.reshape(-1, out.shape[-1]), from_logits)  # one sigmoid unit: two classes
    logits = flat if from_logits else np.log(np.clip(flat / flat.sum(-1, keepdims=True), EPS, 1.0))
    labels = labels.reshape(-1)
    keep = valid_mask_np(labels, ignore_class)
    logits, labels = logits[keep], labels[keep]
    if not np.all(np.isfinite(logits)):
        raise LabelError("outputs contain NaN or inf at labelled positions; temperature scaling needs finite outputs.")
    n_classes = logits.shape[1]
    if labels.size and (np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= n_classes):
        bad = sorted({float(v) for v in labels[(labels < 0) | (labels >= n_classes) | (labels != np.round(labels))]})
        raise LabelError(
            f"y must hold class ids in [0, {n_classes}) at labelled positions; found {bad[:5]}. Mark n/a labels "
            f"with ignore_class."
        )
    if not labels.size:
        raise LabelError("no labelled position to score: every label is ignore_class, or the outputs are empty.")
    return logits, labels.astype(np.int64)


def _mean_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    log_p = log_softmax(logits / temperature, axis=-1)
    return float(-np.take_along_axis(log_p, labels[:, None], axis=1).mean())


def _probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    return np.exp(log_softmax(logits / temperature, axis=-1))


def _check_temperature(temperature: Any) -> float:
    t = float(temperature)
    if not np.isfinite(t) or t <= 0:
        raise ConfigError(f"temperature must be a finite number > 0; received temperature={temperature!r}.")
    return t


def _ece(logits: np.ndarray, labels: np.ndarray, temperature: float, num_bins: int) -> float:
    p = _probabilities(logits, temperature)
    confidence = p.max(-1)
    correct = (p.argmax(-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    gap = np.bincount(bins, weights=correct - confidence, minlength=num_bins)
    return float(np.abs(gap).sum() / len(labels))


def _classwise_ece(logits: np.ndarray, labels: np.ndarray, temperature: float, num_bins: int) -> float:
    p = _probabilities(logits, temperature)
    k = p.shape[1]
    cells = (confidence_bins(p, num_bins) + np.arange(k)[None, :] * num_bins).reshape(-1)
    gap = np.bincount(cells, weights=(np.eye(k)[labels] - p).reshape(-1), minlength=k * num_bins)
    return float(np.abs(gap).sum() / (k * len(labels)))


def _adaptive_ece(logits: np.ndarray, labels: np.ndarray, temperature: float, num_bins: int) -> float:
    p = _probabilities(logits, temperature)
    confidence = p.max(-1)
    fine = fine_confidence_bins(confidence)
    counts = np.bincount(fine, minlength=FINE_BINS)
    gap = np.bincount(fine, weights=(p.argmax(-1) == labels) - confidence, minlength=FINE_BINS)
    per_bin = np.bincount(equal_mass_groups(counts, num_bins), weights=gap, minlength=num_bins)
    return float(np.abs(per_bin).sum() / len(labels))


def _brier(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = _probabilities(logits, temperature)
    p[np.arange(len(labels)), labels] -= 1.0
    return float((p**2).sum(-1).mean())


def nll(outputs, y, *, from_logits: bool, temperature: float = 1.0, ignore_class: int | None = None) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T), over labelled positions."""
    logits, labels = _logits_and_labels(outputs, y, from_logits=from_logits, ignore_class=ignore_class)
    return _mean_nll(logits, labels, _check_temperature(temperature))


def ece(outputs, y, *, from_logits: bool, temperature: float = 1.0, ignore_class: int | None = None,
        num_bins: int = NUM_BINS) -> float:
    """Top-label expected calibration error: sum_b (n_b / n) |accuracy_b - confidence_b|.

    The confidence is the largest probability, the prediction its class (the first on ties); bin b holds the
    confidences in (b / num_bins, (b + 1) / num_bins], the first bin also 0.
    """
    logits, labels = _logits_and_labels(outputs, y, from_logits=from_logits, ignore_class=ignore_class)
    return _ece(logits, labels, _check_temperature(temperature), num_bins)


def classwise_ece(outputs, y, *, from_logits: bool, temperature: float = 1.0, ignore_class: int | None = None,
                  num_bins: int = NUM_BINS) -> float:
    """Class-wise ECE (Kull et al. 2019): (1 / K) sum_c sum_b |sum_{i in B_cb} (y_ic - p_ic)| / n, B_cb the
    positions whose probability of class c is in bin b (the bins of `ece`); the `classwise_ece` metric's rule."""
    logits, labels = _logits_and_labels(outputs, y, from_logits=from_logits, ignore_class=ignore_class)
    return _classwise_ece(logits, labels, _check_temperature(temperature), num_bins)


def adaptive_ece(outputs, y, *, from_logits: bool, temperature: float = 1.0, ignore_class: int | None = None,
                 num_bins: int = NUM_BINS) -> float:
    """Top-label ECE over `num_bins` bins of equal mass, cut from the fine confidence histogram as the
    `adaptive_ece` metric cuts them (`xentlab.core.calibration_metrics.SparseAdaptiveECE` says how close that is
    to sorting every confidence)."""
    logits, labels = _logits_and_labels(outputs, y, from_logits=from_logits, ignore_class=ignore_class)
    return _adaptive_ece(logits, labels, _check_temperature(temperature), num_bins)


def brier(outputs, y, *, from_logits: bool, temperature: float = 1.0, ignore_class: int | None = None) -> float:
    """Mean over labelled positions of sum_c (p_c - y_c)^2, y the one-hot label (one sigmoid unit: 2 classes)."""
    logits, labels = _logits_and_labels(outputs, y, from_logits=from_logits, ignore_class=ignore_class)
    return _brier(logits, labels, _check_temperature(temperature))


def fit_temperature(outputs, y, *, from_logits: bool, ignore_class: int | None = None) -> float:
    """The T > 0 that minimises the mean NLL of softmax(logits / T) on the given (validation) outputs.

    A bounded Brent search over log T in `LOG_T_BOUNDS`. The NLL is convex in 1 / T, hence unimodal in log T,
    so the search finds the minimum within the bounds; when it lies outside them, the nearer bound is returned
    (T close to e^-3 or e^3 says so).

    Raises:
        ValueError: For outputs and labels that do not fit (see the module docstring) or no labelled position.
    """
    logits, labels = _logits_and_labels(outputs, y, from_logits=from_logits, ignore_class=ignore_class)
    result = minimize_scalar(lambda log_t: _mean_nll(logits, labels, float(np.exp(log_t))),
                             bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def calibrate(val_outputs, y_val, test_outputs, y_test, labels: LabelContract) -> dict[str, float]:
    """Fits T on the validation outputs and scores the test outputs at T, under the run's label contract (whether
    outputs are logits, which positions are labelled).

    Returns:
        ``{"calibration.temperature": T, "test_nll_calibrated": ..., "test_ece_calibrated": ...,
        "test_brier_calibrated": ..., "test_classwise_ece_calibrated": ..., "test_adaptive_ece_calibrated": ...}``.
    """
    options = {"from_logits": labels.from_logits, "ignore_class": labels.ignore_class}
    t = fit_temperature(val_outputs, y_val, **options)
    logits, ids = _logits_and_labels(test_outputs, y_test, **options)
    return {"calibration.temperature": t,
            **{f"test_{name}_calibrated": CALIBRATED[name](logits, ids, t) for name in calibrated_names()}}


# How each metric the table scores again after temperature scaling is computed: (logits, labels, T) -> value.
CALIBRATED = {
    "nll": _mean_nll,
    "ece": lambda logits, labels, t: _ece(logits, labels, t, NUM_BINS),
    "brier": _brier,
    "classwise_ece": lambda logits, labels, t: _classwise_ece(logits, labels, t, NUM_BINS),
    "adaptive_ece": lambda logits, labels, t: _adaptive_ece(logits, labels, t, NUM_BINS),
}
