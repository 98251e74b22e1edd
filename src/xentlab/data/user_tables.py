"""Tables a user brings (data=csv, data=parquet): numeric feature columns and one label column."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from xentlab.data.arrays import string_label_ids
from xentlab.data.bundle import DataBundle, DataError, complete_splits

SPLIT_VALUES = ("train", "val", "test")
MAX_CLASS_ID = 2**31  # labels are int32 inside the input pipeline; one output unit per class id up to the largest


def _rows(mask: pd.Series) -> str:
    rows = np.flatnonzero(mask.to_numpy()).tolist()
    return f"{len(rows)} rows (0-based data rows {rows[:5]}{', ...' if len(rows) > 5 else ''})"


def read_table(path: str | None, kind: str, delimiter: str = ",") -> tuple[Path, pd.DataFrame]:
    """Reads a CSV or Parquet file into a DataFrame; a missing or unreadable file is a DataError naming it."""
    if path is None:
        raise DataError(f"data={kind} needs data.path=FILE and data.label=COLUMN")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data={kind}: data.path={path} is not a file")
    try:
        if kind == "csv":
            # The header as written: pandas renames a repeated name (y, y -> y, y.1), which would hide it.
            header = [str(c) for c in pd.read_csv(file, sep=delimiter, header=None, nrows=1).iloc[0].dropna()]
            frame = pd.read_csv(file, sep=delimiter)
        else:
            frame = pd.read_parquet(file)
            header = [str(c) for c in frame.columns]
    except Exception as err:  # the readers raise many types (ParserError, ArrowInvalid, UnicodeDecodeError, ...)
        raise DataError(f"data={kind}: cannot read {file} ({type(err).__name__}: {err})") from err
    check_header(header, file, delimiter if kind == "csv" else None)
    return file, frame


def check_header(columns: list[str], file: Path, delimiter: str | None) -> None:
    """Refuses repeated column names (a second copy of the label would become a feature), and a CSV read as one
    column whose name holds another likely delimiter."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(
            f"{file} has columns named more than once: {repeated} (a second copy of a column, e.g. the label, would "
            f"silently become a feature); rename or drop the copies"
        )
    if delimiter is not None and len(columns) == 1:
        found = [d for d in (";", "\t", "|", ",") if d != delimiter and d in columns[0]]
        if found:
            shown = repr(found[0]).replace("'", "")
            raise DataError(
                f"{file} reads as one column {columns[0]!r} with data.delimiter={delimiter!r}; its header holds "
                f"{found[0]!r}: set data.delimiter='{shown}'"
            )


def label_ids(column: pd.Series, name: str) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels as they are (whole floats become ints, booleans 0/1); strings become ids in sorted order.

    Returns the ids and, for string labels, the class names.
    """
    if column.isna().any():
        raise DataError(f"label column {name!r} has missing values in {_rows(column.isna())}; fill or drop them")
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy().astype(np.int64), None
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy()
        out_of_range = ~np.isfinite(values) | (np.abs(values) >= MAX_CLASS_ID)
        if out_of_range.any():
            rows = np.flatnonzero(out_of_range)
            shown = ", ".join(f"{float(values[r])!r} in row {r}" for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
            raise DataError(
                f"label column {name!r} holds values that are not class ids: {shown} (0-based data rows); expected "
                f"integer class ids 0, 1, ... (below {MAX_CLASS_ID}) or class names"
            )
        fractional = values != np.round(values)
        if fractional.any():
            raise DataError(
                f"label column {name!r} holds non-whole numbers (e.g. {values[fractional][:3].tolist()}); expected "
                f"integer class ids or class names"
            )
        return values.astype(np.int64), None
    (ids,), names = string_label_ids([column.astype(str).to_numpy()])
    return ids, names


def feature_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The numeric feature columns as float32; non-numeric columns and missing values are errors naming them."""
    if not columns:
        raise DataError("no feature columns: the table has only the label (and split) column")
    text = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        examples = {c: frame[c].dropna().astype(str).head(2).tolist() for c in text[:5]}
        raise DataError(
            f"feature columns {text} are not numeric (e.g. {examples}); encode them as numbers, or pick numeric "
            f"columns with data.features=[...]"
        )
    holes = {c: int(n) for c, n in frame[list(columns)].isna().sum().items() if n}
    if holes:
        raise DataError(f"feature columns have missing values (count per column: {holes}); impute or drop them")
    return frame[list(columns)].to_numpy(dtype=np.float32)


def feature_columns(file, columns: list[str], features: Sequence[str] | None, reserved: set[str]) -> list[str]:
    """The feature columns: `features` (checked against the file's `columns`), else every column not `reserved`."""
    if features is None:
        return [c for c in columns if c not in reserved]
    features = [str(c) for c in features]
    unknown = [c for c in features if c not in columns]
    if unknown:
        raise DataError(f"data.features names columns {unknown} that {file} lacks; its columns are {columns}")
    clash = sorted(reserved & set(features))
    if clash:
        raise DataError(f"data.features includes {clash}, the label or split column; leave it out")
    return features


def rows_by_split(column, split_column: str, x: np.ndarray, y: np.ndarray) -> list[np.ndarray | None]:
    """x and y of the rows each split names in `column` (train, val, test), None for a split without rows."""
    split = column.astype("string").str.strip()
    bad = sorted(set(split.dropna()) - set(SPLIT_VALUES))
    if split.isna().any() or bad:
        found = bad or ["<missing>"]
        raise DataError(
            f"data.split_column={split_column} must hold train, val or test in every row; found {found[:5]}"
        )
    if not (split == "train").any():
        raise DataError(f"data.split_column={split_column} marks no row as train; the training split is required")
    parts: list[np.ndarray | None] = []
    for name in SPLIT_VALUES:
        rows = (split == name).to_numpy()
        parts += [x[rows], y[rows]] if rows.any() else [None, None]
    return parts


def load_table(
    path: str | None, label: str | None, val_fraction: float, test_fraction: float, split_seed: int,
    features: Sequence[str] | None = None, split_column: str | None = None, standardize: bool = True,
    delimiter: str = ",", kind: str = "csv", **_: object,
) -> DataBundle:
    """One example per row: feature columns (`features`, else every column but the label and split columns)
    and the `label` column (integer ids or class names).

    With `split_column` (values train, val, test) the rows say their split, and a split without rows is split
    off the training rows by `split_seed`; otherwise rows are split train/val/test (stratified) by `split_seed`.
    With `standardize`, features are centred and scaled by the training split's mean and standard deviation.
    """
    file, frame = read_table(path, kind, delimiter)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if label is None:
        raise DataError(f"data={kind} needs data.label=COLUMN; the columns of {file} are {columns}")
    for option, column in (("data.label", label), ("data.split_column", split_column)):
        if column is not None and column not in columns:
            raise DataError(f"{option}={column} is not a column of {file}; its columns are {columns}")
    if len(frame) == 0:
        raise DataError(f"data={kind}: {file} has no rows")
    features = feature_columns(file, columns, features, reserved={label, split_column} - {None})
    x = feature_matrix(frame, features)
    y, class_names = label_ids(frame[label], label)
    if split_column is None:
        parts: list[np.ndarray | None] = [x, y]
    else:
        parts = rows_by_split(frame[split_column], split_column, x, y)
    x_train, y_train, x_val, y_val, x_test, y_test = complete_splits(
        *parts, val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed)
    if standardize:
        # Statistics from the training split only, so nothing of val/test leaks into the inputs.
        mean, std = x_train.mean(0), x_train.std(0) + 1e-8
        x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))
    # Classes are the ids 0..max. Which id marks n/a is not the loader's to say: the label contract decides it
    # after the load (labels.ignore_class, xentlab.core.targets), and the data checks refuse any other id.
    num_classes = len(class_names) if class_names is not None else int(y.max()) + 1
    if num_classes < 2:
        raise DataError(f"label column {label!r} holds fewer than 2 classes; classification needs at least 2")
    return DataBundle(
        kind, x_train, y_train, x_val, y_val, x_test, y_test, num_classes=num_classes,
        class_names=class_names or [],
        meta={"source": str(file), "label": label, "features": list(features), "split_column": split_column},
    )


def load_csv(**options: object) -> DataBundle:
    return load_table(kind="csv", **options)


def load_parquet(**options: object) -> DataBundle:
    return load_table(kind="parquet", **options)
