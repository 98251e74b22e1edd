"""Maps the `data=` option to its loader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xentlab.data.bundle import DataBundle, DataError, limit_training
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


def load_data(name: str, *, limit: int | None = None, **options: Any) -> DataBundle:
    """Loads source `name` with its options, then caps the training split at `limit`."""
    if name not in DATA_SOURCES:
        raise DataError(f"unknown data source {name!r}; known: {sorted(DATA_SOURCES)}")
    return limit_training(DATA_SOURCES[name](**options), limit)
