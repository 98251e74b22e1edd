"""Maps the `data=` option to its loader."""

from __future__ import annotations

from typing import Any, Callable

from xentlab.data.bundle import DataBundle, DataError, limit_training
from xentlab.data.images import load_digits, load_fashion_mnist, load_mnist

DATA_SOURCES: dict[str, Callable[..., DataBundle]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
}


def load_data(name: str, *, limit: int | None = None, **options: Any) -> DataBundle:
    """Loads source `name` with its options, then caps the training split at `limit`."""
    if name not in DATA_SOURCES:
        raise DataError(f"unknown data source {name!r}; known: {sorted(DATA_SOURCES)}")
    return limit_training(DATA_SOURCES[name](**options), limit)
