"""A long-tailed training split from any source with one label per example (data.long_tail_ratio).

The exponential profile of Cao et al. 2019 (LDAM), as in their CIFAR-LT code: class c keeps
n_c = floor(n_max * R^(-c / (K - 1))) training examples, n_max the largest class count of the training split,
so class 0 keeps n_max and class K - 1 keeps n_max / R. Validation and test splits stay whole: a model trained
on the tail is judged on the source's own (usually balanced) distribution.
"""

from __future__ import annotations

import math

import numpy as np

from xentlab.data.bundle import DataBundle, DataError


def long_tail_profile(n_max: int, num_classes: int, ratio: float) -> np.ndarray:
    """Target examples per class: floor(n_max * ratio ** (-c / (K - 1))) for c = 0..K-1, and at least 1.

    floor as in Cao et al.'s code; the floor at 1 keeps every class in the training split even when
    n_max / ratio < 1 (its realised ratio is then n_max, not `ratio`).
    """
    c = np.arange(num_classes, dtype=np.float64)
    # the tiny epsilon keeps exact results (n_max / ratio = 10.0) from flooring to 9 through rounding
    targets = np.floor(n_max * np.power(float(ratio), -c / (num_classes - 1)) + 1e-9).astype(np.int64)
    return np.maximum(targets, 1)


def apply_long_tail(bundle: DataBundle, ratio: float, seed: int) -> DataBundle:
    """Subsamples the training split of `bundle` to the exponential long-tail profile; val and test unchanged.

    Class c keeps min(target_c, available_c) examples, drawn without replacement by a generator seeded with
    `seed` (data.split_seed), so every variant of a comparison trains on the same subset; the kept examples
    stay in their original order. A class present in the training split keeps at least one example (a class
    with fewer examples than its target keeps all it has); a class absent from it stays absent. Labels
    that are not class ids in [0, K) are kept untouched, for the data checks to report.
    `bundle.meta` gets the realised `class_counts` (training split, per class) and the `long_tail_ratio`.

    Args:
        bundle: A loaded source; its training labels must be one integer class id per example.
        ratio: R = n_max / n_min of the profile, >= 1; 1 leaves the bundle as it is.
        seed: Seed of the draw.

    Returns:
        The same bundle, its training split subsampled.

    Raises:
        DataError: For R < 1 (or not finite), fewer than 2 classes, or labels that are not one per example
            (text, sequence or multi-head sources).
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 1:
        raise DataError(
            f"data.long_tail_ratio must be a number >= 1 (n_max / n_min of the training split; 1 = off), got "
            f"{ratio!r}; e.g. data.long_tail_ratio=100"
        )
    if ratio == 1:
        return bundle
    y = np.asarray(bundle.y_train)
    if y.ndim != 1:
        raise DataError(
            f"data.long_tail_ratio needs one class label per training example, but data={bundle.name} has labels "
            f"of shape {y.shape[1:]} per example (text, sequence or multi-head labels); set data.long_tail_ratio=1"
        )
    k = bundle.num_classes
    if k < 2:
        raise DataError(f"data.long_tail_ratio needs at least 2 classes, data={bundle.name} has {k}")
    in_range = (y >= 0) & (y < k) & (y == np.round(y))  # the rest passes through to the data checks
    available = np.bincount(y[in_range].astype(np.int64), minlength=k)[:k]
    targets = np.minimum(long_tail_profile(int(available.max()), k, ratio), available)
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(~in_range)]
    for c in range(k):
        keep.append(rng.choice(np.flatnonzero(y == c), size=int(targets[c]), replace=False))
    order = np.sort(np.concatenate(keep))
    bundle.x_train, bundle.y_train = bundle.x_train[order], bundle.y_train[order]
    bundle.meta["class_counts"] = [int(n) for n in targets]
    bundle.meta["long_tail_ratio"] = float(ratio)
    return bundle


SHOT_THRESHOLDS = (20, 100)  # Liu et al. 2019 / Kang et al. 2020: few < 20 training images, many > 100
# A split counts as imbalanced when its largest class has more than this many times the examples of its smallest
# (present) one. Sampling alone stays well below it: 300 digits drawn at random give about 30 per class, max/min
# about 1.5-2; the `imbalanced` source is 3.6 and the long tails of the literature 10-100.
IMBALANCE_RATIO = 3.0


def check_shot_thresholds(thresholds) -> tuple[int, int]:
    """(low, high) of data.shot_thresholds.

    Raises:
        DataError: For thresholds that are not two integers 0 <= low <= high.
    """
    values = list(thresholds) if isinstance(thresholds, (list, tuple)) else None
    if (values is None or len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in values)
            or not 0 <= values[0] <= values[1]):
        raise DataError(f"data.shot_thresholds must be two integers [low, high] with 0 <= low <= high (few-shot "
                        f"classes have < low training examples, many-shot > high), got {thresholds!r}; e.g. "
                        f"data.shot_thresholds=[20,100]")
    return values[0], values[1]


def imbalance_ratio(counts) -> float:
    """max / min of the training counts over the classes present (1.0 with none present)."""
    n = np.asarray(counts, dtype=np.int64)
    present = n[n > 0]
    return float(present.max() / present.min()) if present.size else 1.0


def _groups(n: np.ndarray, low: int, high: int) -> dict[str, list[int]]:
    ids, present = np.arange(len(n)), n > 0
    return {"many": ids[present & (n > high)].tolist(), "medium": ids[present & (n >= low) & (n <= high)].tolist(),
            "few": ids[present & (n < low)].tolist()}


def is_imbalanced(counts, thresholds=SHOT_THRESHOLDS) -> bool:
    """Whether a training split is imbalanced enough for long-tail evaluation (shot groups, post-hoc adjustment):
    its present classes fall in more than one non-empty shot group, or max/min of their counts is above
    `IMBALANCE_RATIO`."""
    low, high = check_shot_thresholds(thresholds)
    groups = _groups(np.asarray(counts, dtype=np.int64), low, high)
    return sum(bool(ids) for ids in groups.values()) > 1 or imbalance_ratio(counts) > IMBALANCE_RATIO


def shot_groups(counts, thresholds=SHOT_THRESHOLDS) -> dict[str, list[int]] | None:
    """The long-tail literature's class groups by training count: many (> high), few (< low), medium (between).

    Classes with no training example are in no group. None when fewer than two groups have a class: one group's
    accuracy says nothing that balanced accuracy does not (a balanced split, or a small sample of one).

    Args:
        counts: Training examples per class, shape (K,), labelled positions only (the label contract's counts).
        thresholds: [low, high] (data.shot_thresholds), integers with 0 <= low <= high.

    Returns:
        {"many": [class ids], "medium": [...], "few": [...]} (one group may be empty), or None.

    Raises:
        DataError: For thresholds that are not two integers 0 <= low <= high.
    """
    low, high = check_shot_thresholds(thresholds)
    groups = _groups(np.asarray(counts, dtype=np.int64), low, high)
    return groups if sum(bool(ids) for ids in groups.values()) > 1 else None


def record_shot_groups(bundle: DataBundle, class_counts, thresholds=SHOT_THRESHOLDS) -> DataBundle:
    """Stores the training split's shot groups in `bundle.meta["shot_groups"]` (with the thresholds and the
    counts they came from in `meta["shot_counts"]`) when it has one class label per example and more than one group.

    `class_counts` are the label contract's (`xentlab.core.weighting.label_counts`: a position labelled
    `labels.ignore_class` is nobody's count, also when that id lies inside [0, K)).
    """
    groups = shot_groups(class_counts, thresholds)
    if np.ndim(bundle.y_train) == 1 and groups is not None:
        bundle.meta["shot_groups"] = groups
        bundle.meta["shot_counts"] = {"thresholds": list(thresholds), "class_counts": np.asarray(class_counts).tolist()}
    return bundle
