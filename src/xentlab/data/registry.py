"""Maps the `data=` option to its loader (`data._target_` for a user's own loader)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xentlab.data.arrays import load_npz
from xentlab.data.builtin_tables import load_breast_cancer, load_imbalanced, load_periods
from xentlab.data.bundle import DataBundle, DataError, limit_training, mark_na
from xentlab.data.bundle import drop_na as _drop_na
from xentlab.data.custom import load_custom
from xentlab.data.folds import apply_folds, check_folds
from xentlab.data.image_folder import load_image_folder
from xentlab.data.images import load_digits, load_fashion_mnist, load_mnist
from xentlab.data.long_tail import SHOT_THRESHOLDS, apply_long_tail, check_shot_thresholds
from xentlab.data.text import load_shakespeare, load_text
from xentlab.data.user_tables import load_csv, load_parquet

DATA_SOURCES: dict[str, Callable[..., DataBundle]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "breast_cancer": load_breast_cancer,
    "imbalanced": load_imbalanced,
    "periods": load_periods,
    "shakespeare": load_shakespeare,
    "text": load_text,
    "image_folder": load_image_folder,
    "csv": load_csv,
    "parquet": load_parquet,
    "npz": load_npz,
}
CUSTOM = "custom"  # data=custom: the loader is data._target_


def load_source(name: str, target: str | None = None, **options: Any) -> DataBundle:
    """The bundle of source `name` as its loader returns it; with `target` set (data=custom, or a data config of the
    user's own such as conf/data/mine.yaml), of the user's loader `target`."""
    if target:
        if name in DATA_SOURCES:
            raise DataError(
                f"data._target_={target} names a loader of your own, but data={name} is a built-in source; "
                f"use data={CUSTOM} data._target_={target}"
            )
        return load_custom(target, **options)
    if name == CUSTOM:
        raise DataError(
            f"data={CUSTOM} needs data._target_=package.module.function, a loader of your own; see "
            f"xentlab.data.custom for what it must return"
        )
    if name not in DATA_SOURCES:
        raise DataError(f"unknown data source {name!r}; known: {sorted([*DATA_SOURCES, CUSTOM])}")
    return DATA_SOURCES[name](**options)


def anchored(path: str | os.PathLike | None, root: str | os.PathLike | None) -> str | None:
    """`path` with ~ expanded and, when relative, read from `root` (the launch directory) rather than from the
    working directory, which Hydra changes with hydra.job.chdir=true. None stays None (the source's default)."""
    if path is None or root is None:
        return path
    location = Path(path).expanduser()
    return str(location if location.is_absolute() else Path(root) / location)


def load_data(
    name: str, *, limit: int | None = None, long_tail_ratio: float = 1.0, na_fraction: float = 0.0,
    drop_na: bool = False, folds: int | None = None, fold: int = 0, shot_thresholds=SHOT_THRESHOLDS,
    _target_: str | None = None, root: str | os.PathLike | None = None, **options: Any,
) -> DataBundle:
    """Loads source `name` (or the user's loader `_target_`) with its options, caps the training split at
    `limit`, subsamples it to a long tail of ratio `long_tail_ratio` (1 = off), then marks a share `na_fraction`
    of the labels n/a (-1) and, with `drop_na`, removes the examples so marked.

    With `folds` = K, fold `fold` of a stratified K-fold split of the training and validation splits comes first
    (xentlab.data.folds; the test split stays as the source made it). `shot_thresholds` are only checked here:
    the shot groups come from the label contract's counts (xentlab.data.long_tail.record_shot_groups). A relative
    `path` option is read from `root` (the run passes its launch directory, where a relative tracking.uri is
    anchored too); with root None, from the working directory.

    The long tail comes after the cap, so both promises hold: at most `limit` training examples, and exactly the
    profile of `xentlab.data.long_tail` on them (the other order would cut an unknown share of the tail classes
    away, down to none). It comes before the n/a marking, whose positions are then drawn on the final split.
    """
    check_folds(folds, fold)  # before a long load
    check_shot_thresholds(shot_thresholds)
    if "path" in options:
        options["path"] = anchored(options["path"], root)
    bundle = load_source(name, _target_, **options)
    bundle = apply_folds(bundle, folds, fold, seed=options.get("split_seed", 0))
    bundle = limit_training(bundle, limit)
    bundle = apply_long_tail(bundle, long_tail_ratio, seed=options.get("split_seed", 0))
    bundle = mark_na(bundle, na_fraction, seed=options.get("split_seed", 0))
    return _drop_na(bundle) if drop_na else bundle
