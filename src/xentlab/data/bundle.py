"""The DataBundle every loader returns, and the split helpers they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from xentlab.errors import ExpectedError


class DataError(ExpectedError, ValueError):
    """Data that cannot be used as asked: missing file, bad labels, empty split."""


@dataclass
class DataBundle:
    """Train/val/test splits as numpy arrays. Labels are integer class ids, always.

    Attributes:
        name: source name (the `data=` option).
        x_train, y_train, x_val, y_val, x_test, y_test: features and integer labels per split.
        num_classes: number of classes the model must output.
        class_names: a readable name per class (for plots and per-class metrics).
        meta: source-specific facts worth logging (e.g. file path, corpus size).
        decode: for sources streamed from disk: maps a batch of x values (file paths, shape (B,)) to model
            inputs (B, *decoded_shape), as TensorFlow ops run inside tf.data. None when x holds the inputs.
        decoded_shape: the shape of one decoded input (required with decode).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    decode: Callable[[Any], Any] | None = None
    decoded_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = [str(c) for c in range(self.num_classes)]
        if self.decode is not None and self.decoded_shape is None:
            raise DataError("DataBundle(decode=...) needs decoded_shape, the shape of one decoded input")

    @property
    def streamed(self) -> bool:
        """True when x holds references (file paths) that `decode` turns into inputs inside tf.data."""
        return self.decode is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one model input (decoded, for streamed sources)."""
        return tuple(self.decoded_shape) if self.streamed else tuple(self.x_train.shape[1:])

    @property
    def input_dtype(self) -> str:
        if self.streamed:
            return "float32"
        return "int32" if np.issubdtype(self.x_train.dtype, np.integer) else "float32"

    def features(self, split: str, n: int | None = None) -> np.ndarray:
        """The first `n` (all with None) model inputs of `split` as one numpy array, decoded when streamed.

        Meant for small samples (a model signature); predict over a whole split with
        `xentlab.core.pipeline.features_dataset`, which streams.
        """
        x = getattr(self, f"x_{split}")[:n]
        return x if not self.streamed else np.asarray(self.decode(x))

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            "train": (self.x_train, self.y_train),
            "val": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }

    def sizes(self) -> dict[str, int]:
        return {name: len(x) for name, (x, _) in self.splits().items()}


def split_holdout(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits off `fraction` of (x, y), stratified by label when every class has two or more examples.

    A class with a single example stays in the part that is kept (the training side): in the holdout it would
    be a class the model never trains on.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be in (0, 1), got {fraction}; set data.val_fraction/test_fraction")
    single = _single_example_classes(y) if stratify and y.ndim == 1 else np.zeros(len(y), bool)
    if single.any() and not single.all():
        x_a, y_a, x_b, y_b = split_holdout(x[~single], y[~single], fraction, seed, stratify)
        # Shuffled in by the seed: data.limit takes the first training examples, and must not always drop them.
        order = np.random.default_rng(seed).permutation(len(y_a) + int(single.sum()))
        return (np.concatenate([x_a, x[single]])[order], np.concatenate([y_a, y[single]])[order], x_b, y_b)
    strat = None
    if stratify and y.ndim == 1:
        classes, counts = np.unique(y, return_counts=True)
        # scikit-learn can stratify only with >= 2 examples per class and a holdout of >= one per class.
        holdout = int(np.ceil(fraction * len(y)))
        strat = y if counts.min() >= 2 and len(classes) <= min(holdout, len(y) - holdout) else None
    x_a, x_b, y_a, y_b = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=strat)
    return x_a, y_a, x_b, y_b


def _single_example_classes(y: np.ndarray) -> np.ndarray:
    """A mask of the examples whose class has no other example."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()] == 1


def _examples_needed(val_fraction: float, test_fraction: float, *, val_missing: bool, test_missing: bool) -> int:
    """The fewest examples from which the missing splits can be split off with one example left to train on."""

    def left(n: int, fraction: float) -> int:  # what scikit-learn keeps after splitting off ceil(fraction * n)
        return n - int(np.ceil(fraction * n))

    for n in range(1, 10_000):
        rest = left(n, test_fraction) if test_missing else n
        if val_missing and rest >= 1:
            rest = left(rest, val_fraction / (1.0 - test_fraction) if test_missing else val_fraction)
        if rest >= 1:
            return n
    return 10_000


def limit_training(bundle: DataBundle, limit: int | None) -> DataBundle:
    """Caps the training split at `limit` examples (data.limit); val and test stay whole."""
    if limit is None:
        return bundle
    if limit < 1:
        raise DataError(f"data.limit must be a positive number of training examples or null, got {limit}")
    bundle.x_train = bundle.x_train[:limit]
    bundle.y_train = bundle.y_train[:limit]
    return bundle


NA_LABEL = -1  # the label data.na_fraction writes; mask it with labels.ignore_class=-1


def mark_na(bundle: DataBundle, fraction: float, seed: int) -> DataBundle:
    """Turns a share `fraction` of the labels of every split into NA_LABEL (the seed's "n/a" label).

    Positions are drawn per split from `seed` alone, so runs that mask them and runs that drop them
    (data.drop_na) see the same n/a labels. Sequence and multi-head labels get n/a positions, not rows.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"data.na_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return bundle
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        y = getattr(bundle, f"y_{split}")
        y = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float64)  # uint8 has no -1
        y[rng.random(y.shape) < fraction] = NA_LABEL
        setattr(bundle, f"y_{split}", y)
    bundle.meta["na_label"] = NA_LABEL
    return bundle


def drop_na(bundle: DataBundle) -> DataBundle:
    """Removes the examples labelled NA_LABEL from every split (the alternative to masking them)."""
    for split in ("train", "val", "test"):
        x, y = getattr(bundle, f"x_{split}"), getattr(bundle, f"y_{split}")
        if y.ndim != 1:
            raise DataError(
                f"data.drop_na=true needs one label per example, but {bundle.name} has labels of shape "
                f"{y.shape[1:]} per example; mask the n/a positions instead with labels.ignore_class={NA_LABEL}"
            )
        keep = y != NA_LABEL
        setattr(bundle, f"x_{split}", x[keep])
        setattr(bundle, f"y_{split}", y[keep])
    return bundle


def complete_splits(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
    x_test: np.ndarray | None = None, y_test: np.ndarray | None = None, *, val_fraction: float,
    test_fraction: float, seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits the missing val and/or test split off the training pool, stratified, drawn by `seed`.

    With both missing, test is `test_fraction` of the pool and val `val_fraction` of it (as the built-in
    sources split); with one missing, that split takes its fraction of the given training split.
    """
    both_missing = x_val is None and x_test is None
    if both_missing and val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"data.val_fraction={val_fraction} + data.test_fraction={test_fraction} leave no training data; "
            f"their sum must be below 1"
        )
    needed = _examples_needed(val_fraction, test_fraction, val_missing=x_val is None, test_missing=x_test is None)
    if (x_val is None or x_test is None) and len(y_train) < needed:
        missing = " and ".join(s for s, a in (("val", x_val), ("test", x_test)) if a is None)
        raise DataError(
            f"{len(y_train)} example(s) are too few to split the {missing} split off: with "
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} each split needs at least "
            f"one example, so at least {needed} are needed. Add examples, or give the {missing} split yourself "
            f"(a split column, split folders, or x_val/x_test arrays)"
        )
    if x_test is None:
        x_train, y_train, x_test, y_test = split_holdout(x_train, y_train, test_fraction, seed)
    if x_val is None:
        share = val_fraction / (1.0 - test_fraction) if both_missing else val_fraction
        x_train, y_train, x_val, y_val = split_holdout(x_train, y_train, share, seed)
    return x_train, y_train, x_val, y_val, x_test, y_test
