"""Tabular and synthetic sources: breast cancer (binary), the seed's imbalanced 4-class counts, periods."""

from __future__ import annotations

import numpy as np

from xentlab.data.bundle import DataBundle, split_holdout


def _three_way(x, y, val_fraction: float, test_fraction: float, seed: int):
    x_rest, y_rest, x_test, y_test = split_holdout(x, y, test_fraction, seed)
    x_train, y_train, x_val, y_val = split_holdout(x_rest, y_rest, val_fraction / (1.0 - test_fraction), seed)
    return x_train, y_train, x_val, y_val, x_test, y_test


def _standardise(x_train, *others):
    # Statistics from the training split only, so nothing of val/test leaks into the inputs.
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    return [((a - mean) / std).astype("float32") for a in (x_train, *others)]


def load_breast_cancer(val_fraction: float, test_fraction: float, split_seed: int, **_: object) -> DataBundle:
    """scikit-learn's breast-cancer data: 569 examples, 30 features, 2 classes (standardised)."""
    from sklearn.datasets import load_breast_cancer as sk_cancer

    raw = sk_cancer()
    x_train, y_train, x_val, y_val, x_test, y_test = _three_way(
        raw.data, raw.target.astype("int64"), val_fraction, test_fraction, split_seed
    )
    x_train, x_val, x_test = _standardise(x_train, x_val, x_test)
    return DataBundle(
        "breast_cancer", x_train, y_train, x_val, y_val, x_test, y_test, num_classes=2,
        class_names=[str(n) for n in raw.target_names],
    )


def load_imbalanced(
    val_fraction: float, test_fraction: float, split_seed: int, class_counts: list[int],
    num_features: int = 16, separation: float = 0.4, **_: object,
) -> DataBundle:
    """Gaussian classes with the seed's counts (198 / 436 / 710 / 272 by default), overlapping enough that the
    majority class wins ties, so class weighting visibly moves minority-class recall."""
    rng = np.random.default_rng(split_seed)
    k = len(class_counts)
    centres = rng.normal(0.0, separation, size=(k, num_features))
    y = np.concatenate([np.full(n, c) for c, n in enumerate(class_counts)]).astype("int64")
    x = (centres[y] + rng.normal(size=(len(y), num_features))).astype("float32")
    x_train, y_train, x_val, y_val, x_test, y_test = _three_way(x, y, val_fraction, test_fraction, split_seed)
    return DataBundle(
        "imbalanced", x_train, y_train, x_val, y_val, x_test, y_test, num_classes=k,
        class_names=[chr(ord("A") + c) for c in range(k)], meta={"class_counts": list(class_counts)},
    )


def load_periods(
    val_fraction: float, test_fraction: float, split_seed: int, num_examples: int = 2000,
    num_periods: int = 3, num_categories: int = 6, tokens_per_period: int = 20, vocab_size: int = 300,
    noise: float = 0.1, **_: object,
) -> DataBundle:
    """The seed's document classified into 6 categories at each of 3 time periods: labels (N, 3) in 0..5.

    A document is `num_periods` segments of tokens; the category of period p depends on the tokens of
    segment p only: 40% of them come from that category's own 10-token vocabulary, the rest are common
    words. A share `noise` of labels is redrawn at random, so the task is learnable but not trivial.
    """
    rng = np.random.default_rng(split_seed)
    signal_vocab = 10  # indicative tokens per category
    common = np.arange(num_categories * signal_vocab, vocab_size)
    y = rng.integers(0, num_categories, size=(num_examples, num_periods))
    x = rng.choice(common, size=(num_examples, num_periods, tokens_per_period))
    indicative = rng.random((num_examples, num_periods, tokens_per_period)) < 0.4
    own = y[..., None] * signal_vocab + rng.integers(0, signal_vocab, size=x.shape)
    x = np.where(indicative, own, x).reshape(num_examples, num_periods * tokens_per_period).astype("int32")
    flip = rng.random(y.shape) < noise
    y = np.where(flip, rng.integers(0, num_categories, size=y.shape), y).astype("int64")
    x_train, y_train, x_val, y_val, x_test, y_test = _three_way(x, y, val_fraction, test_fraction, split_seed)
    return DataBundle(
        "periods", x_train, y_train, x_val, y_val, x_test, y_test, num_classes=num_categories,
        meta={"num_periods": num_periods, "vocab_size": vocab_size},
    )
