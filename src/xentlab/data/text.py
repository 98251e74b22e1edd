"""Character-level text as bytes (ord, 256 tokens): windows of `seq_len`, targets shifted by one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from xentlab.data.bundle import DataBundle, DataError

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
VOCAB = 256  # one token per byte value


def _shakespeare_file() -> Path:
    """The tiny Shakespeare corpus from the Keras cache, downloaded once (pinned sha256)."""
    import keras

    try:
        return Path(keras.utils.get_file("tinyshakespeare.txt", SHAKESPEARE_URL, file_hash=SHAKESPEARE_SHA256))
    except Exception as err:  # offline, proxy, hash mismatch
        raise DataError(
            f"data=shakespeare: no cached corpus in ~/.keras/datasets and the download failed "
            f"({type(err).__name__}: {err}). Pass data.path=/path/to/tinyshakespeare.txt"
        ) from err


def windows(tokens: np.ndarray, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs tokens[i:i+seq_len] and targets tokens[i+1:i+seq_len+1] for i = 0, stride, 2*stride, ..."""
    starts = np.arange(0, len(tokens) - seq_len, stride)
    index = starts[:, None] + np.arange(seq_len)[None, :]
    return tokens[index].astype("int32"), tokens[index + 1].astype("int64")


def load_text(
    path: str | None, val_fraction: float, test_fraction: float, seq_len: int = 100, stride: int = 100,
    name: str = "text", **_: object,
) -> DataBundle:
    """Reads a file as bytes and splits it by position (train | val | test), so no window leaks across splits.

    Any bytes are fine, valid UTF-8 or not: the model sees byte values 0..255, as the seed's `ord` does for ASCII.
    """
    if path is None:
        if name != "shakespeare":
            raise DataError("data=text needs data.path=/path/to/file.txt")
        file = _shakespeare_file()
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise DataError(f"data={name}: data.path={path} is not a file; point it at a text file")
    tokens = np.frombuffer(file.read_bytes(), dtype=np.uint8)
    n = len(tokens)
    train_end = int(n * (1.0 - val_fraction - test_fraction))
    val_end = int(n * (1.0 - test_fraction))
    parts = [tokens[:train_end], tokens[train_end:val_end], tokens[val_end:]]
    if min(len(p) for p in parts) <= seq_len:
        raise DataError(
            f"data={name}: {file} has {n} bytes, too few for windows of {seq_len} in each split; "
            f"use a longer file or a smaller data.seq_len"
        )
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (windows(p, seq_len, stride) for p in parts)
    sha = hashlib.sha256(tokens.tobytes()).hexdigest()[:12]
    return DataBundle(
        name, x_tr, y_tr, x_va, y_va, x_te, y_te, num_classes=VOCAB,
        class_names=[repr(chr(b)) for b in range(VOCAB)],
        meta={"source": str(file), "bytes": n, "sha256_12": sha},
    )


def load_shakespeare(**options: object) -> DataBundle:
    return load_text(name="shakespeare", **options)
