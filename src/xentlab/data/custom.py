"""A user's own loader (data=custom data._target_=package.module.function).

The function is called with the keyword arguments it declares, taken from data.path, data.val_fraction,
data.test_fraction, data.split_seed and the entries of data.options, and must return one of:

- a `xentlab.data.DataBundle` (to stream from disk, its x arrays hold references such as file paths and its
  `decode` and `decoded_shape` say how tf.data turns a batch of them into inputs, as data=image_folder does);
- a dict with x_train and y_train (required), x_val/y_val and x_test/y_test (optional; a missing split is split
  off the training data by data.split_seed), class_names and num_classes (optional);
- a tuple `(x, y)` (split train/val/test by data.split_seed), `((x_train, y_train), (x_test, y_test))` (Keras'
  load_data layout; val split off train) or `((x_train, y_train), (x_val, y_val), (x_test, y_test))`.

Labels are integer class ids (or strings, mapped to ids in sorted order); features any numeric array with one
row per example. The class count is num_classes, else len(class_names), else the largest id + 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from xentlab.data.arrays import bundle_from_arrays
from xentlab.data.bundle import DataBundle, DataError
from xentlab.hooks import call_with_declared, locate

RETURNS = (
    "a DataBundle, a dict with x_train and y_train (optional x_val, y_val, x_test, y_test, class_names, "
    "num_classes), or a tuple (x, y), ((x_train, y_train), (x_test, y_test)) or "
    "((x_train, y_train), (x_val, y_val), (x_test, y_test))"
)


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2


def arrays_from_return(value: Any, target: str) -> dict[str, Any]:
    """The named arrays a loader's dict or tuple return stands for; anything else is a DataError."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        if len(value) == 2 and not any(_is_pair(v) for v in value):
            return {"x_train": value[0], "y_train": value[1]}
        if len(value) in (2, 3) and all(_is_pair(v) for v in value):
            names = ("train", "test") if len(value) == 2 else ("train", "val", "test")
            return {f"{axis}_{split}": arr for split, pair in zip(names, value, strict=True)
                    for axis, arr in zip("xy", pair, strict=True)}
    shape = type(value).__name__ if not isinstance(value, tuple) else f"tuple of {len(value)}"
    raise DataError(f"data._target_={target} returned a {shape}; expected {RETURNS}")


def load_custom(
    target: str, *, path: str | None = None, val_fraction: float, test_fraction: float, split_seed: int,
    options: Mapping[str, Any] | None = None, **_: object,
) -> DataBundle:
    """Calls the user's loader `target` and turns what it returns into a DataBundle (see the module docstring)."""
    if options is not None and not isinstance(options, Mapping):
        raise DataError(f"data.options must be a mapping of argument names to values ({{n: 100}}), got {options!r}")
    fn = locate(target, key="data._target_", error=DataError)
    base = {"path": path, "val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": split_seed}
    value = call_with_declared(fn, target, base, dict(options or {}), options_key="data.options", error=DataError)
    if isinstance(value, DataBundle):
        value.meta.setdefault("loader", target)
        return value
    arrays = arrays_from_return(value, target)
    num_classes = arrays.pop("num_classes", None)
    return bundle_from_arrays(
        "custom", arrays, where=f"data._target_={target}", val_fraction=val_fraction, test_fraction=test_fraction,
        split_seed=split_seed, num_classes=None if num_classes is None else int(np.asarray(num_classes)),
        meta={"loader": target},
    )
