"""steps_per_execution and the tf.data feed (plain, prefetch, cache + prefetch) on the digits CNN (samples/s)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import steady, xentlab_samples_per_s

SIZES = {"smoke": dict(epochs=2, steps=(4,), limit=128), "quick": dict(epochs=3, steps=(1, 8, 32), limit=None),
         "full": dict(epochs=6, steps=(1, 8, 32), limit=None)}


def feed_samples_per_s(variant: str, epochs: int, limit: int | None) -> float:
    """The seed CNN fitted by hand on digits through a tf.data pipeline: plain, prefetch or cache+prefetch."""
    import keras
    import tensorflow as tf

    from xentlab.core.models import build_model, head_spec
    from xentlab.data import load_data

    bundle = load_data("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0, limit=limit)
    ds = tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train)).shuffle(2000, seed=0).batch(128)
    if variant == "cache+prefetch":
        ds = ds.cache()
    if variant != "plain":
        ds = ds.prefetch(tf.data.AUTOTUNE)
    keras.backend.clear_session()
    model = build_model("mnist_cnn", input_shape=bundle.input_shape,
                        head=head_spec(loss="crossentropy", from_logits=False, num_classes=bundle.num_classes))
    model.compile(keras.optimizers.Adadelta(1.0), loss="sparse_categorical_crossentropy")
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        rates.append(len(bundle.x_train) / (time.perf_counter() - start))
    return steady(rates)


def bench_steps_per_execution(size: str, folder: Path) -> dict:
    s = SIZES[size]
    limit = [f"data.limit={s['limit']}"] if s["limit"] else []
    out = {}
    for spe in s["steps"]:
        values = xentlab_samples_per_s([f"trainer.epochs={s['epochs']}", f"strategy.steps_per_execution={spe}",
                                        *limit], folder)
        out[f"xentlab/steps_per_execution={spe}"] = steady(values)
    for variant in ("plain", "prefetch", "cache+prefetch"):
        out[f"tf.data/{variant}"] = feed_samples_per_s(variant, s["epochs"], s["limit"])
    return out


def summary(results: dict) -> list[str]:
    lines = ["## steps_per_execution and tf.data on the digits CNN (samples/s)", "", "| set-up | samples/s |",
             "|---|---|"]
    return lines + [f"| {k} | {v:.0f} |" for k, v in results.items()]
