"""Image classification sources: scikit-learn digits (offline) and the Keras MNIST-format files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from xentlab.data.bundle import DataBundle, DataError, split_holdout

KERAS_CACHE = Path("~/.keras/datasets").expanduser()


def load_digits(val_fraction: float, test_fraction: float, split_seed: int, **_: object) -> DataBundle:
    """scikit-learn's 8x8 digits, scaled to [0, 1], as (N, 8, 8, 1); stratified train/val/test split."""
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits()
    x = (raw.images / 16.0).astype("float32")[..., None]  # pixel values are 0..16
    y = raw.target.astype("int64")
    x_rest, y_rest, x_test, y_test = split_holdout(x, y, test_fraction, split_seed)
    x_train, y_train, x_val, y_val = split_holdout(
        x_rest, y_rest, val_fraction / (1.0 - test_fraction), split_seed
    )
    return DataBundle("digits", x_train, y_train, x_val, y_val, x_test, y_test, num_classes=10)


def _read_mnist_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise DataError(f"{path} lacks arrays {sorted(missing)}; expected Keras' mnist.npz layout")
        return f["x_train"], f["y_train"], f["x_test"], f["y_test"]


def _read_idx_gz(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)


def _read_fashion(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = [name for name in FASHION_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {missing}; expected Keras' fashion-mnist .gz files")
    y_train = _read_idx_gz(folder / FASHION_FILES[0], 8)
    x_train = _read_idx_gz(folder / FASHION_FILES[1], 16).reshape(len(y_train), 28, 28)
    y_test = _read_idx_gz(folder / FASHION_FILES[2], 8)
    x_test = _read_idx_gz(folder / FASHION_FILES[3], 16).reshape(len(y_test), 28, 28)
    return x_train, y_train, x_test, y_test


def _mnist_format(
    name: str, path: str | None, default: Path, reader, keras_loader, val_fraction: float, split_seed: int
) -> DataBundle:
    """Reads `path`, else the Keras cache, else lets Keras download; offline failures name data.path."""
    if path is not None:
        location = Path(path).expanduser()
        if not location.exists():
            raise DataError(f"data={name}: data.path={path} does not exist; point it at {default.name}")
        arrays = reader(location)
    elif default.exists():
        arrays = reader(default)
    else:
        try:
            (x_tr, y_tr), (x_te, y_te) = keras_loader()
        except Exception as err:  # any download failure: offline, proxy, truncated file
            raise DataError(
                f"data={name}: no cached file at {default} and the download failed ({type(err).__name__}: "
                f"{err}). Copy the file there, or pass data.path=/path/to/{default.name}"
            ) from err
        arrays = (x_tr, y_tr, x_te, y_te)
    x_train, y_train, x_test, y_test = arrays
    x_train = (np.asarray(x_train, "float32") / 255.0)[..., None]  # uint8 pixels -> [0, 1], channels last
    x_test = (np.asarray(x_test, "float32") / 255.0)[..., None]
    x_train, y_train, x_val, y_val = split_holdout(x_train, np.asarray(y_train), val_fraction, split_seed)
    return DataBundle(
        name, x_train, y_train, x_val, y_val, x_test, np.asarray(y_test), num_classes=10,
        meta={"source": str(path or default)},
    )


def load_mnist(path: str | None, val_fraction: float, split_seed: int, **_: object) -> DataBundle:
    """MNIST from an npz file with x_train/y_train/x_test/y_test (Keras' mnist.npz layout)."""
    import keras

    return _mnist_format(
        "mnist", path, KERAS_CACHE / "mnist.npz", _read_mnist_npz, keras.datasets.mnist.load_data,
        val_fraction, split_seed,
    )


def load_fashion_mnist(path: str | None, val_fraction: float, split_seed: int, **_: object) -> DataBundle:
    """Fashion-MNIST from a folder with Keras' four idx .gz files."""
    import keras

    return _mnist_format(
        "fashion_mnist", path, KERAS_CACHE / "fashion-mnist", _read_fashion,
        keras.datasets.fashion_mnist.load_data, val_fraction, split_seed,
    )
