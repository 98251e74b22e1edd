"""Maps the `data=` option to its loader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xentlab.data.bundle import DataBundle, DataError, limit_training, mark_na
from xentlab.data.bundle import drop_na as _drop_na
from xentlab.data.images import load_digits, load_fashion_mnist, load_mnist
from xentlab.data.long_tail import apply_long_tail
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
    name: str, *, limit: int | None = None, long_tail_ratio: float = 1.0, na_fraction: float = 0.0,
    drop_na: bool = False, **options: Any
) -> DataBundle:
    """Loads source `name` with its options, caps the training split at `limit`, subsamples it to a long tail
    of ratio `long_tail_ratio` (1 = off), then marks a share `na_fraction` of the labels n/a (-1) and, with
    `drop_na`, removes the examples so marked.

    The long tail comes after the cap, so both promises hold: at most `limit` training examples, and exactly the
    profile of `xentlab.data.long_tail` on them (the other order would cut an unknown share of the tail classes
    away, down to none). It comes before the n/a marking, whose positions are then drawn on the final split.
    """
    if name not in DATA_SOURCES:
        raise DataError(f"unknown data source {name!r}; known: {sorted(DATA_SOURCES)}")
    bundle = limit_training(DATA_SOURCES[name](**options), limit)
    bundle = apply_long_tail(bundle, long_tail_ratio, seed=options.get("split_seed", 0))
    bundle = mark_na(bundle, na_fraction, seed=options.get("split_seed", 0))
    return _drop_na(bundle) if drop_na else bundle
