"""Class weights from training-split label counts, for any label rank (sequence and multi-head included)."""

from __future__ import annotations

import numpy as np

from xentlab.choices import WeightingScheme
from xentlab.core.targets import LabelContract, valid_mask_np
from xentlab.errors import ConfigError, LabelError

SCHEMES = WeightingScheme.names()


def label_counts(y: np.ndarray, labels: LabelContract) -> np.ndarray:
    """Counts each class over the labelled positions of `y` (any shape), shape (K,).

    Raises:
        LabelError: For a labelled position whose id is not a class in [0, K) (the data checks refuse those).
    """
    y = np.asarray(y)
    ids = y[valid_mask_np(y, labels.ignore_class)].astype("int64")
    k = labels.num_classes
    outside = ids[(ids < 0) | (ids >= k)]
    if outside.size:
        raise LabelError(
            f"labels {sorted(set(outside.tolist()))[:5]} are not classes: expected ids in [0, {k}) or the ignore "
            f"class {labels.ignore_class}; set labels.ignore_class to the id that marks n/a"
        )
    return np.bincount(ids, minlength=k)


def class_weights(
    counts: np.ndarray,
    scheme: str,
    *,
    beta: float = 0.999,
    weights: list[float] | None = None,
) -> np.ndarray | None:
    """Turns per-class counts into per-class weights; `None` for scheme "none".

    Classes absent from the training split get weight 0: no training position carries them, so the
    weight never reaches the loss, and an infinite weight would only poison the logged numbers.

    Args:
        counts: examples per class in the training split, shape (K,).
        scheme: balanced (n / (k * count_c)), inverse_sqrt (1 / sqrt(count_c), rescaled to mean 1 over
            present classes), effective_number ((1 - beta) / (1 - beta**count_c), Cui et al. 2019, rescaled
            to sum to k), or custom (`weights` as given).
        beta: effective_number's beta in [0, 1).
        weights: custom weights, one per class.
    """
    counts = np.asarray(counts, dtype="float64")
    k = len(counts)
    present = counts > 0
    if scheme == "none":
        return None
    if scheme == "custom":
        if weights is None or len(weights) != k:
            got = None if weights is None else len(weights)
            raise ConfigError(
                f"weighting=custom needs weighting.weights with one value per class ({k}), got {got}; "
                f"e.g. weighting.weights=[{','.join(['1.0'] * k)}]"
            )
        out = np.asarray(weights, dtype="float64")
        if not np.isfinite(out).all() or (out < 0).any():
            raise ConfigError(f"weighting.weights must be finite and >= 0, got {list(weights)}")
        if present.any() and out[present].sum() == 0:
            raise ConfigError(
                f"weighting.weights={list(weights)} gives weight 0 to every class present in the training split "
                f"(classes {np.flatnonzero(present).tolist()}): the loss would be 0 and nothing would train; "
                f"give at least one of them a positive weight"
            )
        return out.astype("float32")
    out = np.zeros(k)
    if scheme == "balanced":
        out[present] = counts.sum() / (k * counts[present])
    elif scheme == "inverse_sqrt":
        out[present] = 1.0 / np.sqrt(counts[present])
        out *= present.sum() / out.sum()
    elif scheme == "effective_number":
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"weighting.beta must be in [0, 1), got {beta}; 0.999 or 0.9999 are usual")
        out[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
        out *= present.sum() / out.sum()
    else:
        raise ConfigError(f"unknown weighting scheme {scheme!r}; expected one of {SCHEMES}")
    return out.astype("float32")
