"""Worker: one sequence model trained on sparse labels, on one-hot labels made inside tf.data, or on a one-hot
array built up front; prints step time and peak memory.

Usage: python -m benchmarks.workers.sparse_labels MODE VOCAB WINDOWS
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.workers import peak_rss_mb

SEQ_LEN, BATCH = 100, 16


def main(mode: str, vocab: int, n: int) -> dict:
    rss_before = peak_rss_mb()
    import keras
    import numpy as np
    import tensorflow as tf

    from xentlab.core.pipeline import make_dataset
    from xentlab.core.targets import LabelContract

    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, size=(n, SEQ_LEN)).astype("int32")
    y = rng.integers(0, vocab, size=(n, SEQ_LEN)).astype("int64")
    model = keras.Sequential(
        [keras.Input((SEQ_LEN,), dtype="int32"), keras.layers.Embedding(vocab, 32), keras.layers.Dense(vocab)]
    )
    if mode == "sparse":
        ds, loss = make_dataset(x, y, batch_size=BATCH, labels=LabelContract(vocab)), "sparse"
    elif mode == "one_hot_tfdata":
        ds, loss = make_dataset(x, y, batch_size=BATCH, labels=LabelContract(vocab, encoding="one_hot")), "one_hot"
    else:  # the naive way: the whole one-hot array in memory before training
        ds = tf.data.Dataset.from_tensor_slices((x, np.eye(vocab, dtype="float32")[y])).batch(BATCH)
        loss = "one_hot"
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss == "sparse"
                  else keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, epochs=2, verbose=0)
    steps = 2 * (-(-n // BATCH))
    return {"step_ms": 1000 * (time.perf_counter() - start) / steps, "peak_rss_mb": peak_rss_mb(),
            "rss_before_data_mb": rss_before}


def parse(argv: list[str]) -> tuple:
    return argv[0], int(argv[1]), int(argv[2])


if __name__ == "__main__":
    print(json.dumps(main(*parse(sys.argv[1:]))))
