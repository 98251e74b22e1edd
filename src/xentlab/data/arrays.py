"""Arrays a user brings: an .npz file (data=npz), and the conversion of named arrays into a DataBundle that
user loaders (data=custom) share."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xentlab.data.bundle import DataBundle, DataError, complete_splits

SPLITS = ("train", "val", "test")
ARRAY_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
EXPECTED = (
    "x_train and y_train (required); x_val/y_val and x_test/y_test (optional, each split off the training data by "
    "data.split_seed when missing); class_names (optional, one name per class)"
)


def string_label_ids(labels: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """Maps string labels of several splits to ids in sorted order of the names (shared across the splits)."""
    names = sorted({str(v) for y in labels for v in np.asarray(y).ravel()})
    index = {name: i for i, name in enumerate(names)}
    ids = [np.vectorize(lambda v: index[str(v)], otypes=[np.int64])(np.asarray(y)) for y in labels]
    return ids, names


def _is_text(y: np.ndarray) -> bool:
    return y.dtype.kind in "USO"


def bundle_from_arrays(
    name: str, arrays: Mapping[str, Any], *, where: str, val_fraction: float, test_fraction: float,
    split_seed: int, scale: float = 1.0, num_classes: int | None = None, meta: dict | None = None,
) -> DataBundle:
    """A DataBundle from named arrays (see EXPECTED); `where` names their origin in error messages.

    Labels are integer class ids (kept as they are) or strings (ids in sorted order of the names, which become
    the class names). The class count is `num_classes`, else the number of class_names, else the largest id + 1.
    With `scale` != 1, features are multiplied by it as float32.
    """
    missing = [key for key in ("x_train", "y_train") if key not in arrays or arrays[key] is None]
    if missing:
        raise DataError(f"{where} lacks {missing}; expected {EXPECTED}")
    unknown = sorted(set(arrays) - {*ARRAY_KEYS, "class_names"})
    if unknown:  # a misspelt x_valid must not pass unnoticed while val is split off train
        raise DataError(f"{where} has {unknown}, which are not used; expected {EXPECTED}")
    for split in ("val", "test"):
        has_x, has_y = arrays.get(f"x_{split}") is not None, arrays.get(f"y_{split}") is not None
        if has_x != has_y:
            raise DataError(f"{where} has {'x' if has_x else 'y'}_{split} without {'y' if has_x else 'x'}_{split}; "
                            f"give both or neither")
    given = {key: None if arrays.get(key) is None else np.asarray(arrays[key]) for key in ARRAY_KEYS}
    if given["x_train"].dtype == object:
        raise DataError(f"{where}: x_train has dtype object; expected a numeric array of one shape per example")
    present = [split for split in SPLITS if given[f"y_{split}"] is not None]
    for split in present:
        x, y = given[f"x_{split}"], given[f"y_{split}"]
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise DataError(
                f"{where}: x_{split} holds {len(x) if x.ndim else 'no'} examples (shape {x.shape}) but y_{split} "
                f"{len(y) if y.ndim else 'no'} labels (shape {y.shape}); expected one label per example, the "
                f"examples along the first axis of both"
            )
    class_names = arrays.get("class_names")
    class_names = None if class_names is None else [str(c) for c in np.asarray(class_names).ravel()]
    if any(_is_text(given[f"y_{split}"]) for split in present):
        ids, names = string_label_ids([given[f"y_{split}"] for split in present])
        given.update({f"y_{split}": y for split, y in zip(present, ids, strict=True)})
        if class_names is not None and class_names != names:
            raise DataError(f"{where}: class_names {class_names} differ from the string labels' sorted names {names}")
        class_names = names
    if scale != 1.0:
        given.update({f"x_{s}": given[f"x_{s}"].astype("float32") * np.float32(scale) for s in present})
    splits = complete_splits(*(given[key] for key in ARRAY_KEYS), val_fraction=val_fraction,
                             test_fraction=test_fraction, seed=split_seed)
    if num_classes is None:
        if class_names is not None:
            num_classes = len(class_names)
        else:
            labels = np.concatenate([np.asarray(y, dtype=np.float64).ravel() for y in splits[1::2]])
            labels = labels[np.isfinite(labels) & (labels >= 0)]
            if labels.size == 0:
                raise DataError(f"{where} has no labels >= 0; expected integer class ids 0, 1, ...")
            num_classes = int(labels.max()) + 1
    if class_names is not None and len(class_names) != num_classes:
        raise DataError(f"{where}: {len(class_names)} class_names for {num_classes} classes; give one name per class")
    return DataBundle(name, *splits, num_classes=num_classes, class_names=class_names or [], meta=meta or {})


def load_npz(
    path: str | None, val_fraction: float, test_fraction: float, split_seed: int, scale: float = 1.0, **_: object
) -> DataBundle:
    """Arrays from an .npz file (numpy.savez): x_train, y_train, optional val/test splits and class_names.

    Features may have any shape per example; the model takes that shape as its input shape.
    """
    if path is None:
        raise DataError(f"data=npz needs data.path=FILE.npz holding {EXPECTED}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data=npz: data.path={path} is not a file; point it at an .npz made by numpy.savez")
    try:
        with np.load(file, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DataError(
            f"data=npz: cannot read {file} as an .npz of plain arrays ({type(err).__name__}: {err}); save numeric "
            f"or string arrays with numpy.savez (object arrays need pickle, which is not loaded)"
        ) from err
    return bundle_from_arrays(
        "npz", arrays, where=f"data=npz: {file}", val_fraction=val_fraction, test_fraction=test_fraction,
        split_seed=split_seed, scale=scale, meta={"source": str(file)},
    )
