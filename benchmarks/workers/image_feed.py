"""Worker: an MLP trained on a folder of images, streamed from disk (data=image_folder) or decoded into one numpy
array first; prints load time, samples/s per epoch and peak memory.

Usage: python -m benchmarks.workers.image_feed MODE FOLDER EPOCHS
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.workers import peak_rss_mb

BATCH = 128


def main(mode: str, path: str, epochs: int) -> dict:
    rss_before = peak_rss_mb()
    import keras

    from xentlab.core.pipeline import make_dataset, steps_per_epoch
    from xentlab.core.targets import LabelContract
    from xentlab.data import load_data

    start = time.perf_counter()
    bundle = load_data("image_folder", path=path, image_size=[32, 32], color_mode="grayscale", val_fraction=0.05,
                       test_fraction=0.05, split_seed=0)
    x, decode = bundle.x_train, bundle.decode
    if mode == "numpy":  # the same images, decoded into one array before training
        x, decode = bundle.features("train"), None
    load_s = time.perf_counter() - start
    ds = make_dataset(x, bundle.y_train, batch_size=BATCH, labels=LabelContract(bundle.num_classes),
                      shuffle=True, epochs=(0, epochs), decode=decode)
    model = keras.Sequential([keras.Input(bundle.input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(bundle.num_classes)])
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rates: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            rates.append(len(x) / (time.perf_counter() - self.start))

    model.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch(len(x), BATCH, False), callbacks=[Timer()],
              verbose=0)
    return {"train_images": len(x), "load_s": load_s, "samples_per_s": rates, "peak_rss_mb": peak_rss_mb(),
            "rss_before_data_mb": rss_before}


def parse(argv: list[str]) -> tuple:
    return argv[0], argv[1], int(argv[2])


if __name__ == "__main__":
    print(json.dumps(main(*parse(sys.argv[1:]))))
