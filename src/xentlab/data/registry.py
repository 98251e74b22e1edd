"""Maps the `data=` option to its loader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xentlab.data.bundle import DataBundle, DataError, limit_training, mark_na
from xentlab.data.bundle import drop_na as _drop_na
from xentlab.data.images import load_digits, load_fashion_mnist, load_mnist
from xentlab.data.tabular import load_breast_cancer, load_imbalanced, load_periods
from xentlab.data.text import load_shakespeare, load_text

DATA_SOURCES: dict[str, Callable[..., DataBundle]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "breast_cancer": load_breast_cancer,
    "imbalanced": load_imbalanced,
    "periods": load_periods,
    "shakespeare": load_shakespeare,
    "text": load_text,
}


def load_data(
    name: str, *, limit: int | None = None, na_fraction: float = 0.0, drop_na: bool = False, **options: Any
) -> DataBundle:
    """Loads source `name` with its options, caps the training split at `limit`, then marks a share
    `na_fraction` of the labels n/a (-1) and, with `drop_na`, removes the examples so marked."""
    if name not in DATA_SOURCES:
        raise DataError(f"unknown data source {name!r}; known: {sorted(DATA_SOURCES)}")
    bundle = limit_training(DATA_SOURCES[name](**options), limit)
    bundle = mark_na(bundle, na_fraction, seed=options.get("split_seed", 0))
    return _drop_na(bundle) if drop_na else bundle
