"""Metric cost: throughput of the seed CNN on digits with accuracy, auc, nll ("today") vs every metric of
`build_metrics`, end to end (fit with validation) and per compiled training step."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

TODAY_METRICS = ("accuracy", "auc", "nll")  # what every run computed before the calibration/imbalance metrics
SIZES = {  # paired fits, epochs per fit, rounds of train steps, steps per round, digits limit, new metrics timed
    "smoke": dict(pairs=3, epochs_per_fit=1, rounds=1, steps_per_round=2, limit=128, each_new=1),
    "quick": dict(pairs=3, epochs_per_fit=2, rounds=3, steps_per_round=10, limit=None, each_new=None),
    "full": dict(pairs=6, epochs_per_fit=3, rounds=6, steps_per_round=30, limit=None, each_new=None),
}
BATCH = 128


def _setup(limit: int | None):
    """Digits, its batched train and val pipelines, and a builder of the CNN compiled with some metrics."""
    import keras
    import tensorflow as tf

    from xentlab.core.losses import CrossEntropy
    from xentlab.core.metric_set import build_metrics
    from xentlab.core.models import build_model, head_spec
    from xentlab.core.targets import LabelContract
    from xentlab.data import load_data

    bundle = load_data("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0, limit=limit)
    labels = LabelContract(bundle.num_classes)
    train = (tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train))
             .shuffle(len(bundle.x_train), seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE))
    val = tf.data.Dataset.from_tensor_slices((bundle.x_val, bundle.y_val)).batch(BATCH).prefetch(tf.data.AUTOTUNE)

    def compiled(names) -> keras.Model:
        keras.utils.set_random_seed(0)
        model = build_model("mnist_cnn", input_shape=bundle.input_shape,
                            head=head_spec(loss="crossentropy", from_logits=False, num_classes=bundle.num_classes))
        metrics = [m for m in build_metrics(labels) if m.name in names]
        model.compile(keras.optimizers.Adadelta(1.0), loss=CrossEntropy(), metrics=metrics)
        return model

    every = [m.name for m in build_metrics(labels)]
    return bundle, train, val, compiled, every


def end_to_end(s: dict, bundle, train, val, compiled, every) -> dict:
    """`fit` epochs with validation, today and every alternating A B B A ... after a warm-up epoch each; ratio =
    median of the paired ratios, on wall clock and on process CPU time (less sensitive to other processes), and the
    ratio of the best fits."""
    import keras

    keras.backend.clear_session()
    models = {"today": compiled(TODAY_METRICS), "every": compiled(every)}
    for model in models.values():
        model.fit(train, validation_data=val, epochs=1, verbose=0)  # warm-up: tracing, excluded
    wall: dict[str, list[float]] = {"today": [], "every": []}
    cpu: dict[str, list[float]] = {"today": [], "every": []}
    samples = s["epochs_per_fit"] * len(bundle.x_train)
    for i in range(s["pairs"]):
        for label in ("today", "every") if i % 2 == 0 else ("every", "today"):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            models[label].fit(train, validation_data=val, epochs=s["epochs_per_fit"], shuffle=False, verbose=0)
            wall[label].append(samples / (time.perf_counter() - start_wall))
            cpu[label].append(samples / (time.process_time() - start_cpu))
    return {"today_samples_per_s": wall["today"], "every_samples_per_s": wall["every"],
            "today_samples_per_cpu_s": cpu["today"], "every_samples_per_cpu_s": cpu["every"],
            "ratio": statistics.median([e / t for e, t in zip(wall["every"], wall["today"], strict=True)]),
            "ratio_cpu": statistics.median([e / t for e, t in zip(cpu["every"], cpu["today"], strict=True)]),
            "ratio_best": max(wall["every"]) / max(wall["today"]),
            "ratio_best_cpu": max(cpu["every"]) / max(cpu["today"])}


def per_step(s: dict, bundle, compiled, every) -> dict:
    """The compiled train step alone (`model.train_function` on an endless batch iterator, no validation, no
    callbacks): CPU us per step for today, every, and today plus each new metric, rounds rotating the order; the
    fastest round of each (the least disturbed by other load, as timeit does); ratio = today's step / the set-up's."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    endless = (tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train)).repeat()
               .batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    new = [n for n in every if n not in TODAY_METRICS][: s["each_new"]]
    setups = {"today": TODAY_METRICS, "every": every, **{f"today+{n}": (*TODAY_METRICS, n) for n in new}}
    steps = {}
    for label, names in setups.items():
        model = compiled(names)
        model.make_train_function()
        iterator = iter(endless)
        model.train_function(iterator)  # tracing
        steps[label] = (model.train_function, iterator)
    step_us: dict[str, list[float]] = {label: [] for label in setups}
    order = list(setups)
    for r in range(s["rounds"]):
        for label in order[r % len(order):] + order[: r % len(order)]:
            function, iterator = steps[label]
            start = time.process_time()
            for _ in range(s["steps_per_round"]):
                logs = function(iterator)
            float(logs["loss"])  # wait for the last step
            step_us[label].append((time.process_time() - start) / s["steps_per_round"] * 1e6)
    fastest = {label: min(v) for label, v in step_us.items()}
    return {"step_cpu_us": fastest,
            "step_ratio": {label: fastest["today"] / us for label, us in fastest.items() if label != "today"}}


def bench_metrics_cost(size: str, folder: Path) -> dict:
    s = SIZES[size]
    bundle, train, val, compiled, every = _setup(s["limit"])
    return {**end_to_end(s, bundle, train, val, compiled, every), **per_step(s, bundle, compiled, every),
            "today_metrics": list(TODAY_METRICS), "every_metrics": every, "batch_size": BATCH,
            "train_examples": len(bundle.x_train), **{k: v for k, v in s.items() if k not in ("limit", "each_new")}}


def summary(r: dict) -> list[str]:
    lines = ["## Metric cost: seed CNN on digits, accuracy + auc + nll (today) vs every metric", "",
             "| metrics | samples/s (fit, train + val) | ratio: median of paired fits, wall / CPU | "
             "ratio: best fits, wall / CPU |", "|---|---|---|---|",
             f"| {', '.join(r['today_metrics'])} | {statistics.median(r['today_samples_per_s']):.0f} | 1 | 1 |",
             f"| every metric ({len(r['every_metrics'])}) | {statistics.median(r['every_samples_per_s']):.0f} | "
             f"{r['ratio']:.3f} / {r['ratio_cpu']:.3f} | {r['ratio_best']:.3f} / {r['ratio_best_cpu']:.3f} |", "",
             "Per training batch (compiled train step alone, CPU us; ratio = today's step / this one):", "",
             "| set-up | us/step | ratio |", "|---|---|---|"]
    return lines + [f"| {label} | {us:.0f} | {r['step_ratio'].get(label, 1.0):.3f} |"
                    for label, us in r["step_cpu_us"].items()]
