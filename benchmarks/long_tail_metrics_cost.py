"""Per-epoch cost of the long-tail metrics (classwise_ece, adaptive_ece and the three shot-group accuracies) on
top of the current set (every metric of `build_metrics`): the seed CNN on digits, `fit` epochs with validation as
the trainer runs them."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

SIZES = {"smoke": dict(pairs=3, epochs_per_fit=1, limit=128), "quick": dict(pairs=3, epochs_per_fit=2, limit=None),
         "full": dict(pairs=6, epochs_per_fit=3, limit=None)}
BATCH = 128
GROUPS = {"many": [0, 1, 2, 3], "medium": [4, 5, 6], "few": [7, 8, 9]}  # the cost does not depend on who
LONG_TAIL_CALIBRATION = {"classwise_ece", "adaptive_ece"}  # in every classifier's set; the baseline leaves them out


def _paired_fits(models: dict, train, val, pairs: int, epochs_per_fit: int, samples: int) -> tuple[dict, dict]:
    """Samples/s of each model's fits, wall clock and process CPU, alternating A B B A ... after a warm-up epoch."""
    for model in models.values():
        model.fit(train, validation_data=val, epochs=1, verbose=0)  # warm-up: tracing, excluded
    wall: dict[str, list[float]] = {label: [] for label in models}
    cpu: dict[str, list[float]] = {label: [] for label in models}
    order = list(models)
    for i in range(pairs):
        for label in order if i % 2 == 0 else order[::-1]:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            models[label].fit(train, validation_data=val, epochs=epochs_per_fit, shuffle=False, verbose=0)
            wall[label].append(samples / (time.perf_counter() - start_wall))
            cpu[label].append(samples / (time.process_time() - start_cpu))
    return wall, cpu


def bench_long_tail_metrics_cost(size: str, folder: Path) -> dict:
    """ratio = median of the paired ratios of samples/s, on wall clock and on process CPU time (less sensitive to
    other processes on a shared machine); also the seconds per epoch each set-up takes."""
    import keras
    import tensorflow as tf

    from xentlab.core.losses import CrossEntropy
    from xentlab.core.metric_set import build_metrics, build_run_metrics
    from xentlab.core.models import build_model, head_spec
    from xentlab.core.targets import LabelContract
    from xentlab.data import load_data

    s = SIZES[size]
    bundle = load_data("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0, limit=s["limit"])
    labels = LabelContract(bundle.num_classes)
    train = (tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train))
             .shuffle(len(bundle.x_train), seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE))
    val = tf.data.Dataset.from_tensor_slices((bundle.x_val, bundle.y_val)).batch(BATCH).prefetch(tf.data.AUTOTUNE)

    def compiled(metrics) -> keras.Model:
        keras.utils.set_random_seed(0)
        model = build_model("mnist_cnn", input_shape=bundle.input_shape,
                            head=head_spec(loss="crossentropy", from_logits=False, num_classes=bundle.num_classes))
        model.compile(keras.optimizers.Adadelta(1.0), loss=CrossEntropy(), metrics=metrics)
        return model

    keras.backend.clear_session()
    current = [m for m in build_metrics(labels) if m.name not in LONG_TAIL_CALIBRATION]
    every = build_run_metrics(labels, shot_groups=GROUPS)
    wall, cpu = _paired_fits({"current": compiled(current), "long_tail": compiled(every)}, train, val, s["pairs"],
                             s["epochs_per_fit"], s["epochs_per_fit"] * len(bundle.x_train))
    epoch_s = {label: len(bundle.x_train) / statistics.median(v) for label, v in wall.items()}
    return {"current_samples_per_s": wall["current"], "long_tail_samples_per_s": wall["long_tail"],
            "current_samples_per_cpu_s": cpu["current"], "long_tail_samples_per_cpu_s": cpu["long_tail"],
            "ratio": statistics.median([n / c for n, c in zip(wall["long_tail"], wall["current"], strict=True)]),
            "ratio_cpu": statistics.median([n / c for n, c in zip(cpu["long_tail"], cpu["current"], strict=True)]),
            "ratio_best": max(wall["long_tail"]) / max(wall["current"]),
            "ratio_best_cpu": max(cpu["long_tail"]) / max(cpu["current"]),
            "epoch_s": epoch_s, "added_ms_per_epoch": 1000 * (epoch_s["long_tail"] - epoch_s["current"]),
            "current_metrics": [m.name for m in current],
            "added_metrics": [m.name for m in every if m.name not in {c.name for c in current}],
            "pairs": s["pairs"], "epochs_per_fit": s["epochs_per_fit"], "batch_size": BATCH,
            "train_examples": len(bundle.x_train), "val_examples": len(bundle.x_val)}


def summary(r: dict) -> list[str]:
    return ["## Metric cost of the long-tail metrics: seed CNN on digits, per epoch (train + val)", "",
            "| metrics | samples/s | s/epoch | ratio: median of paired fits, wall / CPU "
            "| ratio: best fits, wall / CPU |", "|---|---|---|---|---|",
            f"| current ({len(r['current_metrics'])}) | {statistics.median(r['current_samples_per_s']):.0f} | "
            f"{r['epoch_s']['current']:.3f} | 1 | 1 |",
            f"| current + {', '.join(r['added_metrics'])} | {statistics.median(r['long_tail_samples_per_s']):.0f} | "
            f"{r['epoch_s']['long_tail']:.3f} | {r['ratio']:.3f} / {r['ratio_cpu']:.3f} | "
            f"{r['ratio_best']:.3f} / {r['ratio_best_cpu']:.3f} |"]
