"""Overhead: xentlab's samples/s against a hand-written Keras `model.fit` of the same model, data and batch,
fed from numpy arrays (as the seed tutorial) and from a tf.data pipeline."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchmarks.common import compose, steady, text_slice, xentlab_samples_per_s

SIZES = {  # repetitions, epochs, LSTM text bytes, width (None: the preset's 512), window and layers, digits limit
    "smoke": dict(reps=1, cnn_epochs=2, lstm_epochs=2, lstm_bytes=2_000, lstm_units=8, seq_len=20, lstm_layers=1,
                  limit=128),
    "quick": dict(reps=1, cnn_epochs=3, lstm_epochs=3, lstm_bytes=20_000, lstm_units=64, seq_len=100, lstm_layers=2,
                  limit=None),
    "full": dict(reps=3, cnn_epochs=6, lstm_epochs=3, lstm_bytes=64_000, lstm_units=None, seq_len=100, lstm_layers=2,
                 limit=None),
}


def plain_model(overrides: list[str]):
    """The model xentlab trains for `overrides` (model=auto resolved as the run resolves it), compiled by hand with
    Keras' own sparse cross-entropy and accuracy; with its data bundle and resolved config."""
    import keras
    from omegaconf import OmegaConf

    from xentlab.config.preflight import data_shapes, resolve_model
    from xentlab.core.models import build_model, head_spec
    from xentlab.data import load_data

    config = OmegaConf.to_container(compose(overrides), resolve=True, enum_to_str=True)
    bundle = load_data(**config["data"])
    name, arch, _ = resolve_model(config["model"], data_shapes(bundle))
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model(name, input_shape=bundle.input_shape, vocab_size=bundle.num_classes, **arch,
                        head=head_spec(loss="crossentropy", from_logits=False, num_classes=bundle.num_classes))
    optimizer = getattr(keras.optimizers, {"adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam",
                                           "sgd": "SGD"}[config["optimizer"]["name"]])
    model.compile(optimizer(config["optimizer"]["learning_rate"]), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model, bundle, config


def plain_samples_per_s(overrides: list[str], epochs: int, feed: str = "numpy") -> list[float]:
    """`plain_model` fitted on numpy arrays (feed="numpy") or on a shuffled, batched, prefetched tf.data pipeline
    (feed="tf.data")."""
    import keras
    import tensorflow as tf

    model, bundle, config = plain_model(overrides)
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(len(bundle.x_train) / (time.perf_counter() - self.start))

    batch = config["trainer"]["batch_size"]
    if feed == "numpy":
        model.fit(bundle.x_train, bundle.y_train, batch_size=batch, epochs=epochs,
                  validation_data=(bundle.x_val, bundle.y_val), callbacks=[Timer()], verbose=0)
        return times
    train = (tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train))
             .shuffle(len(bundle.x_train), seed=0).batch(batch).prefetch(tf.data.AUTOTUNE))
    val = tf.data.Dataset.from_tensor_slices((bundle.x_val, bundle.y_val)).batch(batch).prefetch(tf.data.AUTOTUNE)
    model.fit(train, validation_data=val, epochs=epochs, callbacks=[Timer()], verbose=0)
    return times


def cases(size: str, folder: Path) -> dict[str, tuple[list[str], int]]:
    """The two workloads: the seed CNN on digits (model=auto) and the char LSTM on text; overrides and epochs."""
    s = SIZES[size]
    limit = [f"data.limit={s['limit']}"] if s["limit"] else []
    width = [f"model.lstm_units={s['lstm_units']}", f"model.embedding_dim={s['lstm_units']}"] if s["lstm_units"] else []
    text = text_slice(s["lstm_bytes"], folder)
    return {
        "seed_cnn_digits": ([f"trainer.epochs={s['cnn_epochs']}", *limit], s["cnn_epochs"]),
        "char_lstm": (["+experiment=shakespeare_lstm", f"data.path={text}", f"trainer.epochs={s['lstm_epochs']}",
                       f"data.seq_len={s['seq_len']}", f"data.stride={s['seq_len']}", "model.sample_length=1",
                       f"model.num_layers={s['lstm_layers']}", *width], s["lstm_epochs"]),
    }


def bench_overhead(size: str, folder: Path) -> dict:
    out = {}
    for name, (overrides, epochs) in cases(size, folder).items():
        ours, plain, plain_tfdata = [], [], []
        for _ in range(SIZES[size]["reps"]):  # interleaved, so drifts in machine load hit all sides alike
            ours.append(steady(xentlab_samples_per_s(overrides, folder)))
            plain.append(steady(plain_samples_per_s(overrides, epochs)))
            plain_tfdata.append(steady(plain_samples_per_s(overrides, epochs, feed="tf.data")))
        out[name] = {"xentlab_samples_per_s": ours, "plain_keras_samples_per_s": plain,
                     "plain_keras_tfdata_samples_per_s": plain_tfdata,
                     "ratio": statistics.median(ours) / statistics.median(plain),
                     "ratio_vs_tfdata": statistics.median(ours) / statistics.median(plain_tfdata),
                     "overrides": overrides}
        if name == "char_lstm":  # what lstm_mfu needs to count the FLOPs of this run
            out[name] |= {"seq_len": SIZES[size]["seq_len"], "layers": SIZES[size]["lstm_layers"]}
    return out


def summary(results: dict) -> list[str]:
    lines = ["## Overhead: xentlab vs plain Keras model.fit (samples/s, median of steady epochs)", "",
             "| model | xentlab | plain Keras, numpy | ratio | plain Keras, tf.data | ratio |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {statistics.median(r['xentlab_samples_per_s']):.0f} | "
                     f"{statistics.median(r['plain_keras_samples_per_s']):.0f} | {r['ratio']:.3f} | "
                     f"{statistics.median(r['plain_keras_tfdata_samples_per_s']):.0f} | {r['ratio_vs_tfdata']:.3f} |")
    return lines
