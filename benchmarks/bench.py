"""Benchmarks (`make bench`, `python -m benchmarks.bench [--quick]`): JSON per benchmark, summary in outputs/bench/.

Every ratio compares two set-ups measured in the same run on the same machine; timings are medians over repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TEXT_SOURCE: Path | None = None  # --text FILE: a corpus for the LSTM benchmarks; default generated verse


# ---------------------------------------------------------------------------------------------- helpers
def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from xentlab.cli.train import CONF_DIR
    from xentlab.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def text_slice(n_bytes: int, folder: Path) -> Path:
    """A prefix of the --text corpus when one is given, else generated verse of the same size."""
    path = folder / f"text_{n_bytes}.txt"
    if TEXT_SOURCE is not None:
        path.write_bytes(TEXT_SOURCE.read_bytes()[:n_bytes])
    else:
        import numpy as np

        words = np.array("to be or not the king queen love death night day sweet".split())
        text = " ".join(np.random.default_rng(0).choice(words, size=n_bytes // 4))
        path.write_text(text[:n_bytes])
    return path


def xentlab_samples_per_s(overrides: list[str], folder: Path) -> list[float]:
    """Runs xentlab in-process (MLflow logging, accuracy, AUC and nll included); per-epoch samples/s."""
    from mlflow.tracking import MlflowClient

    from xentlab.cli.train import run

    store = f"sqlite:///{folder / f'bench_{time.time_ns()}.db'}"
    run(compose([*overrides, f"tracking.uri={store}", "tracking.log_model=false", "tracking.log_plots=false",
                 "trainer.resume=never", "trainer.verbose=silent", "strategy=cpu"]))
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("xentlab").experiment_id])
    history = sorted(client.get_metric_history(logged.info.run_id, "samples_per_s"), key=lambda m: m.step)
    return [m.value for m in history]


def plain_samples_per_s(config_overrides: list[str], epochs: int, feed: str = "numpy") -> list[float]:
    """The same model, data and batch with a hand-written Keras model.fit: on numpy arrays (feed="numpy", as
    in the seed tutorial) or on a shuffled, batched, prefetched tf.data pipeline (feed="tf.data")."""
    import keras
    import tensorflow as tf
    from omegaconf import OmegaConf

    from xentlab.core.models import build_model
    from xentlab.data import load_data

    config = OmegaConf.to_container(compose(config_overrides), resolve=True)
    data = {k: v for k, v in config["data"].items() if k != "name"}
    bundle = load_data(config["data"]["name"], **data)
    arch = {k: v for k, v in config["model"].items() if k not in ("name", "head") and not k.startswith("sample_")}
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model(config["model"]["name"], input_shape=bundle.input_shape, num_classes=bundle.num_classes,
                        vocab_size=bundle.num_classes, **arch)
    optimizers = {"adadelta": keras.optimizers.Adadelta, "rmsprop": keras.optimizers.RMSprop}
    optimizer = optimizers[config["optimizer"]["name"]]
    model.compile(optimizer(config["optimizer"]["learning_rate"]), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
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


def steady(values: list[float]) -> float:
    """Median after the first epoch (tracing and graph building)."""
    return statistics.median(values[1:] if len(values) > 1 else values)


# ---------------------------------------------------------------------------------------------- benchmarks
def bench_overhead(quick: bool, folder: Path) -> dict:
    reps = 1 if quick else 3
    cnn_epochs = 3 if quick else 6
    lstm_bytes = 20_000 if quick else 64_000
    text = text_slice(lstm_bytes, folder)
    cases = {
        "seed_cnn_digits": [f"trainer.epochs={cnn_epochs}"],
        "char_lstm": ["+experiment=shakespeare_lstm", f"data.path={text}", "trainer.epochs=3",
                      "model.sample_length=1", *(["model.lstm_units=64", "model.embedding_dim=64"] if quick else [])],
    }
    out = {}
    for name, overrides in cases.items():
        epochs = int([o for o in overrides if o.startswith("trainer.epochs=")][0].split("=")[1])
        ours, plain, plain_tfdata = [], [], []
        for _ in range(reps):  # interleaved, so drifts in machine load hit all sides alike
            ours.append(steady(xentlab_samples_per_s(overrides, folder)))
            plain.append(steady(plain_samples_per_s(overrides, epochs)))
            plain_tfdata.append(steady(plain_samples_per_s(overrides, epochs, feed="tf.data")))
        out[name] = {"xentlab_samples_per_s": ours, "plain_keras_samples_per_s": plain,
                     "plain_keras_tfdata_samples_per_s": plain_tfdata,
                     "ratio": statistics.median(ours) / statistics.median(plain),
                     "ratio_vs_tfdata": statistics.median(ours) / statistics.median(plain_tfdata),
                     "overrides": overrides}
    return out


PEAK_RSS = r"""
import os, sys, time, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

def peak_rss_mb():  # this process's high-water mark (ru_maxrss would include the forking parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

WORKER_SPARSE = PEAK_RSS + r"""
import numpy as np, keras, tensorflow as tf
from xentlab.core.pipeline import make_dataset
from xentlab.core.targets import LabelContract
mode, vocab, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 100
rss_before = peak_rss_mb()
rng = np.random.default_rng(0)
x = rng.integers(0, vocab, size=(n, t)).astype("int32")
y = rng.integers(0, vocab, size=(n, t)).astype("int64")
model = keras.Sequential(
    [keras.Input((t,), dtype="int32"), keras.layers.Embedding(vocab, 32), keras.layers.Dense(vocab)]
)
if mode == "sparse":
    ds, loss = make_dataset(x, y, batch_size=16, labels=LabelContract(vocab)), "sparse"
elif mode == "one_hot_tfdata":
    ds, loss = make_dataset(x, y, batch_size=16, labels=LabelContract(vocab, encoding="one_hot")), "one_hot"
else:  # the naive way: the whole one-hot array in memory before training
    ds, loss = tf.data.Dataset.from_tensor_slices((x, np.eye(vocab, dtype="float32")[y])).batch(16), "one_hot"
model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss == "sparse"
              else keras.losses.CategoricalCrossentropy(from_logits=True))
model.fit(ds, epochs=1, verbose=0)
start = time.perf_counter(); model.fit(ds, epochs=2, verbose=0)
steps = 2 * (-(-n // 16))
print(json.dumps({"step_ms": 1000 * (time.perf_counter() - start) / steps,
                  "peak_rss_mb": peak_rss_mb(), "rss_before_data_mb": rss_before}))
"""


def bench_sparse_vs_onehot(quick: bool, folder: Path) -> dict:
    n = 32 if quick else 128
    out = {}
    for vocab in (256, 32768):
        for mode in ("sparse", "one_hot_tfdata", "one_hot_numpy"):
            result = subprocess.run([sys.executable, "-c", WORKER_SPARSE, mode, str(vocab), str(n)],
                                    capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                raise RuntimeError(result.stderr[-2000:])
            out[f"{mode}/V={vocab}"] = {"mode": mode, "vocab": vocab, "windows": n, "seq_len": 100,
                                        **json.loads(result.stdout.strip().splitlines()[-1])}
    return out


def bench_steps_per_execution(quick: bool, folder: Path) -> dict:
    import keras
    import tensorflow as tf

    from xentlab.data import load_data

    epochs = 3 if quick else 6
    out = {}
    for spe in (1, 8, 32):
        values = xentlab_samples_per_s([f"trainer.epochs={epochs}", f"strategy.steps_per_execution={spe}"], folder)
        out[f"xentlab/steps_per_execution={spe}"] = steady(values)
    bundle = load_data("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    from xentlab.core.models import build_model

    for variant in ("plain", "prefetch", "cache+prefetch"):
        ds = tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train)).shuffle(2000, seed=0).batch(128)
        if variant == "cache+prefetch":
            ds = ds.cache()
        if variant != "plain":
            ds = ds.prefetch(tf.data.AUTOTUNE)
        keras.backend.clear_session()
        model = build_model("mnist_cnn", input_shape=bundle.input_shape, num_classes=10)
        model.compile(keras.optimizers.Adadelta(1.0), loss="sparse_categorical_crossentropy")
        rates = []
        for _ in range(epochs):
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            rates.append(len(bundle.x_train) / (time.perf_counter() - start))
        out[f"tf.data/{variant}"] = steady(rates)
    return out


WORKER_IMAGES = PEAK_RSS + r"""
import numpy as np, keras
from xentlab.data import load_data
from xentlab.core.pipeline import make_dataset, steps_per_epoch
from xentlab.core.targets import LabelContract
mode, path, epochs, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), 128
rss_before = peak_rss_mb()
start = time.perf_counter()
bundle = load_data("image_folder", path=path, image_size=[32, 32], color_mode="grayscale", val_fraction=0.05,
                   test_fraction=0.05, split_seed=0)
x, decode = bundle.x_train, bundle.decode
if mode == "numpy":  # the same images, decoded into one array before training
    x, decode = bundle.features("train"), None
load_s = time.perf_counter() - start
ds = make_dataset(x, bundle.y_train, batch_size=batch, labels=LabelContract(bundle.num_classes),
                  shuffle=True, epochs=(0, epochs), decode=decode)
model = keras.Sequential([keras.Input(bundle.input_shape), keras.layers.Flatten(),
                          keras.layers.Dense(64, activation="relu"), keras.layers.Dense(bundle.num_classes)])
model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rates = []

class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        rates.append(len(x) / (time.perf_counter() - self.start))

model.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch(len(x), batch, False), callbacks=[Timer()], verbose=0)
print(json.dumps({"train_images": len(x), "load_s": load_s, "samples_per_s": rates,
                  "peak_rss_mb": peak_rss_mb(), "rss_before_data_mb": rss_before}))
"""


def write_image_folder(folder: Path, n: int, classes: int = 10, size: int = 32) -> Path:
    """`n` grayscale PNGs of size x size in `classes` class folders (noise plus a bright row per class)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = i % classes
        pixels = rng.integers(0, 80, size=(size, size), dtype=np.uint8)
        pixels[2 + 2 * label] = 255
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"c{label}" / f"{i}.png")
    return folder


def bench_image_folder(quick: bool, folder: Path) -> dict:
    """Peak memory and samples/s of data=image_folder streamed from disk vs the same images loaded into numpy."""
    sizes = (200, 2_000) if quick else (2_000, 20_000)
    epochs = 2 if quick else 3
    out = {}
    for n in sizes:
        start = time.perf_counter()
        images = write_image_folder(folder / f"images_{n}", n)
        written_s = time.perf_counter() - start
        for mode in ("streamed", "numpy"):
            result = subprocess.run([sys.executable, "-c", WORKER_IMAGES, mode, str(images), str(epochs)],
                                    capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                raise RuntimeError(result.stderr[-2000:])
            record = json.loads(result.stdout.strip().splitlines()[-1])
            out[f"{mode}/n={n}"] = {"mode": mode, "images": n, "image": "32x32 grayscale PNG", "write_s": written_s,
                                    "steady_samples_per_s": steady(record["samples_per_s"]), **record}
    return out
TODAY_METRICS = ("accuracy", "auc", "nll")  # what every run computed before the calibration/imbalance metrics


def bench_metrics_cost(quick: bool, folder: Path) -> dict:
    """Throughput of the seed CNN on digits with accuracy, auc, nll ("today") vs every metric of `build_metrics`.

    Two measurements, same data, model, optimizer and batches of 128 for every set-up:
    - end to end: `fit` epochs with validation (as the trainer), today and every alternating A B B A ... after a
      warm-up epoch each (tracing, excluded); ratio = median of the paired ratios, on wall clock and on process
      CPU time (less sensitive to other processes on a shared machine), and the ratio of the best fits;
    - per training batch: the compiled train step alone (`model.train_function` on an endless batch iterator,
      no validation, no callbacks), CPU us per step for today, every, and today plus each new metric, rounds
      rotating the order; the fastest round of each (the least disturbed by other load, as timeit does);
      ratio = today's step time / the set-up's.
    """
    import keras
    import tensorflow as tf

    from xentlab.core.losses import CrossEntropy
    from xentlab.core.metrics import build_metrics
    from xentlab.core.models import build_model
    from xentlab.core.targets import LabelContract
    from xentlab.data import load_data

    pairs, epochs_per_fit, rounds, steps_per_round, batch = (3, 2, 3, 10, 128) if quick else (6, 3, 6, 30, 128)
    bundle = load_data("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    labels = LabelContract(bundle.num_classes)
    every_names = [m.name for m in build_metrics(labels)]
    train = (tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train))
             .shuffle(len(bundle.x_train), seed=0).batch(batch).prefetch(tf.data.AUTOTUNE))
    val = tf.data.Dataset.from_tensor_slices((bundle.x_val, bundle.y_val)).batch(batch).prefetch(tf.data.AUTOTUNE)

    def compiled(names) -> keras.Model:
        keras.utils.set_random_seed(0)
        model = build_model("mnist_cnn", input_shape=bundle.input_shape, num_classes=bundle.num_classes)
        metrics = [m for m in build_metrics(labels) if m.name in names]
        model.compile(keras.optimizers.Adadelta(1.0), loss=CrossEntropy(), metrics=metrics)
        return model

    # End to end.
    keras.backend.clear_session()
    models = {"today": compiled(TODAY_METRICS), "every": compiled(every_names)}
    for model in models.values():
        model.fit(train, validation_data=val, epochs=1, verbose=0)  # warm-up: tracing, excluded
    wall: dict[str, list[float]] = {"today": [], "every": []}
    cpu: dict[str, list[float]] = {"today": [], "every": []}
    samples = epochs_per_fit * len(bundle.x_train)
    for i in range(pairs):
        for label in ("today", "every") if i % 2 == 0 else ("every", "today"):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            models[label].fit(train, validation_data=val, epochs=epochs_per_fit, shuffle=False, verbose=0)
            wall[label].append(samples / (time.perf_counter() - start_wall))
            cpu[label].append(samples / (time.process_time() - start_cpu))

    # Per training batch.
    keras.backend.clear_session()
    endless = (tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train)).repeat()
               .batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    new = [n for n in every_names if n not in TODAY_METRICS]
    setups = {"today": TODAY_METRICS, "every": every_names, **{f"today+{n}": (*TODAY_METRICS, n) for n in new}}
    steps = {}
    for label, names in setups.items():
        model = compiled(names)
        model.make_train_function()
        iterator = iter(endless)
        model.train_function(iterator)  # tracing
        steps[label] = (model.train_function, iterator)
    step_us: dict[str, list[float]] = {label: [] for label in setups}
    order = list(setups)
    for r in range(rounds):
        for label in order[r % len(order):] + order[: r % len(order)]:
            function, iterator = steps[label]
            start = time.process_time()
            for _ in range(steps_per_round):
                logs = function(iterator)
            float(logs["loss"])  # wait for the last step
            step_us[label].append((time.process_time() - start) / steps_per_round * 1e6)
    per_step = {label: min(v) for label, v in step_us.items()}
    return {"today_samples_per_s": wall["today"], "every_samples_per_s": wall["every"],
            "today_samples_per_cpu_s": cpu["today"], "every_samples_per_cpu_s": cpu["every"],
            "ratio": statistics.median([e / t for e, t in zip(wall["every"], wall["today"], strict=True)]),
            "ratio_cpu": statistics.median([e / t for e, t in zip(cpu["every"], cpu["today"], strict=True)]),
            "ratio_best": max(wall["every"]) / max(wall["today"]),
            "ratio_best_cpu": max(cpu["every"]) / max(cpu["today"]),
            "step_cpu_us": per_step,
            "step_ratio": {label: per_step["today"] / us for label, us in per_step.items() if label != "today"},
            "today_metrics": list(TODAY_METRICS), "every_metrics": every_names,
            "pairs": pairs, "epochs_per_fit": epochs_per_fit, "rounds": rounds, "steps_per_round": steps_per_round,
            "batch_size": batch, "train_examples": len(bundle.x_train)}


def bench_long_tail_metrics_cost(quick: bool, folder: Path) -> dict:
    """Per-epoch cost of the long-tail metrics (classwise_ece, adaptive_ece and the three shot-group accuracies)
    on top of the current set (every metric of `build_metrics`): the seed CNN on digits, `fit` epochs with
    validation as the trainer runs them, the two set-ups alternating A B B A ... after a warm-up epoch each;
    ratio = median of the paired ratios of samples/s, on wall clock and on process CPU time (less sensitive to
    other processes on a shared machine); also the seconds per epoch each set-up takes."""
    import keras
    import tensorflow as tf

    from xentlab.core.losses import CrossEntropy
    from xentlab.core.metric_set import build_run_metrics
    from xentlab.core.metrics import build_metrics
    from xentlab.core.models import build_model
    from xentlab.core.targets import LabelContract
    from xentlab.data import load_data

    pairs, epochs_per_fit, batch = (3, 2, 128) if quick else (6, 3, 128)
    bundle = load_data("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    labels = LabelContract(bundle.num_classes)
    groups = {"many": [0, 1, 2, 3], "medium": [4, 5, 6], "few": [7, 8, 9]}  # the cost does not depend on who
    train = (tf.data.Dataset.from_tensor_slices((bundle.x_train, bundle.y_train))
             .shuffle(len(bundle.x_train), seed=0).batch(batch).prefetch(tf.data.AUTOTUNE))
    val = tf.data.Dataset.from_tensor_slices((bundle.x_val, bundle.y_val)).batch(batch).prefetch(tf.data.AUTOTUNE)

    def compiled(metrics) -> keras.Model:
        keras.utils.set_random_seed(0)
        model = build_model("mnist_cnn", input_shape=bundle.input_shape, num_classes=bundle.num_classes)
        model.compile(keras.optimizers.Adadelta(1.0), loss=CrossEntropy(), metrics=metrics)
        return model

    keras.backend.clear_session()
    current = build_metrics(labels)
    every = build_run_metrics(labels, shot_groups=groups)
    models = {"current": compiled(current), "long_tail": compiled(every)}
    for model in models.values():
        model.fit(train, validation_data=val, epochs=1, verbose=0)  # warm-up: tracing, excluded
    wall: dict[str, list[float]] = {"current": [], "long_tail": []}
    cpu: dict[str, list[float]] = {"current": [], "long_tail": []}
    samples = epochs_per_fit * len(bundle.x_train)
    for i in range(pairs):
        for label in ("current", "long_tail") if i % 2 == 0 else ("long_tail", "current"):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            models[label].fit(train, validation_data=val, epochs=epochs_per_fit, shuffle=False, verbose=0)
            wall[label].append(samples / (time.perf_counter() - start_wall))
            cpu[label].append(samples / (time.process_time() - start_cpu))
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
            "pairs": pairs, "epochs_per_fit": epochs_per_fit, "batch_size": batch,
            "train_examples": len(bundle.x_train), "val_examples": len(bundle.x_val)}


def matmul_peak_flops(size: int = 2048, reps: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def bench_lstm_mfu(quick: bool, folder: Path, overhead: dict | None) -> dict:
    units = 64 if quick else 512
    vocab, seq_len = 256, 100
    if overhead and "char_lstm" in overhead:
        samples_per_s = statistics.median(overhead["char_lstm"]["xentlab_samples_per_s"])
    else:
        text = text_slice(20_000, folder)
        samples_per_s = steady(xentlab_samples_per_s(
            ["+experiment=shakespeare_lstm", f"data.path={text}", "trainer.epochs=2", "model.sample_length=1",
             f"model.lstm_units={units}", f"model.embedding_dim={units}"], folder))
    chars_per_s = samples_per_s * seq_len
    # Forward FLOPs per character: each LSTM layer 2*4*(d_in + h)*h, the output layer 2*h*V; a training step
    # is about 3x the forward pass (backward ~2x). Embedding lookups are not FLOPs.
    forward = 2 * (2 * 4 * (units + units) * units) + 2 * units * vocab
    flops_per_char = 3 * forward
    peak = matmul_peak_flops()
    return {"chars_per_s": chars_per_s, "flops_per_char": flops_per_char, "matmul_peak_flops": peak,
            "mfu": chars_per_s * flops_per_char / peak,
            "formula": "3 * (layers * 2*4*(d_in+h)*h + 2*h*V) per char; peak = best 2048^3 float32 matmul"}


WORKER_STARTUP = r"""
import time, json
t0 = time.perf_counter()
import tensorflow, keras
t1 = time.perf_counter()
import mlflow, hydra
t2 = time.perf_counter()
from xentlab.data import load_data
bundle = load_data("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0)
t3 = time.perf_counter()
from xentlab.core.models import build_model
from xentlab.core.losses import CrossEntropy
from xentlab.core.metrics import build_metrics
from xentlab.core.targets import LabelContract
model = build_model("mnist_cnn", input_shape=bundle.input_shape, num_classes=10)
model.compile(keras.optimizers.Adadelta(1.0), loss=CrossEntropy(), metrics=build_metrics(LabelContract(10)))
t4 = time.perf_counter()
model.train_on_batch(bundle.x_train[:128], bundle.y_train[:128])
t5 = time.perf_counter()
print(json.dumps({"import_tensorflow_keras_s": t1 - t0, "import_mlflow_hydra_s": t2 - t1, "data_s": t3 - t2,
                  "model_build_compile_s": t4 - t3, "first_step_s": t5 - t4, "total_s": t5 - t0}))
"""


def bench_startup(quick: bool, folder: Path) -> dict:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WORKER_STARTUP], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    phases = json.loads(result.stdout.strip().splitlines()[-1])
    phases["process_wall_s"] = time.perf_counter() - start
    return phases


def synthetic_sweep(uri: str, runs: list[dict], *, experiment: str = "xentlab", epochs: int = 5,
                    baseline: str | None = None, reliability: dict[str, dict] | None = None) -> str:
    """A sweep written straight into the store at `uri`, laid out as SweepRun and train.py lay it out; returns
    the parent run id.

    Args:
        runs: one dict per child run: `variant` (its overrides, e.g. "loss=focal"), `seed`, `metrics` (final
            values), optional `params`, `name` (default `<variant>,trainer.seed=<seed>`, as older sweeps named
            runs) and `tags` (e.g. xentlab.variant, as sweeps tag them now). Each gets `epochs` steps of
            val_loss/val_nll/samples_per_s history ending at its final value.
        baseline: the preset's baseline, stored as the parent's tag.
        reliability: {variant: reliability.json content} logged as each of its runs' artifact.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from xentlab.tracking.store import BASELINE_TAG, ROLE_TAG, SWEEP_TAG, setup_experiment

    experiment_id = setup_experiment(uri, experiment)
    client = MlflowClient(uri)
    sweep_id = f"synthetic{time.time_ns() % 10**9}"
    tags = {SWEEP_TAG: sweep_id, ROLE_TAG: "sweep"} | ({BASELINE_TAG: baseline} if baseline else {})
    parent = client.create_run(experiment_id, run_name=f"sweep/{sweep_id}", tags=tags).info.run_id
    start = int(time.time() * 1000)
    for i, spec in enumerate(runs):
        name = spec.get("name", f"{spec['variant']},trainer.seed={spec['seed']}")
        run = client.create_run(experiment_id, run_name=name, start_time=start + i,
                                tags={"mlflow.parentRunId": parent, SWEEP_TAG: sweep_id, **spec.get("tags", {})})
        params = {"trainer.seed": str(spec["seed"]), "loss.name": "crossentropy", **spec.get("params", {})}
        final = spec["metrics"]
        per_epoch = ("val_loss", "val_nll", "samples_per_s")  # as train.py logs them: the last epoch is final
        metrics = [Metric(k, float(v), start + i, 0) for k, v in final.items() if k not in per_epoch]
        for epoch in range(epochs):  # decaying towards the final value
            scale = 1.0 + 0.5 * (epochs - 1 - epoch) / max(epochs, 1)
            for key in ("val_loss", "val_nll"):
                if key in final:
                    metrics.append(Metric(key, float(final[key]) * scale, start + i, epoch))
            metrics.append(Metric("samples_per_s", float(final.get("samples_per_s", 1000.0 + epoch)), start + i,
                                  epoch))
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("xentlab.synthetic", "true")])
        if reliability and spec["variant"] in reliability:
            client.log_dict(run.info.run_id, reliability[spec["variant"]], "evaluation/reliability.json")
        client.set_terminated(run.info.run_id, "FINISHED", end_time=start + i + 1000)
    client.set_terminated(parent, "FINISHED")
    return parent


def _start_server(db: Path, artifacts: Path) -> tuple[subprocess.Popen, str]:
    """A local `mlflow server` over `db`, once it answers /health (the caller stops it)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
         f"sqlite:///{db}", "--artifacts-destination", str(artifacts), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    _stop_server(proc)
    raise RuntimeError("mlflow server did not start within 120 s")


def _stop_server(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _timed_compare(uri: str, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of the `xentlab-compare` command, interpreter start and imports
    included; the CPU figure barely moves when other work shares the machine."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "xentlab.cli.compare", "--tracking-uri", uri, "--out", str(out)],
                            capture_output=True, text=True, timeout=1800, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


RELIABILITY_BINS = 15


def _reliability_file() -> dict:
    """A reliability.json as the evaluation figures write it (15 bins)."""
    import numpy as np

    return {"num_bins": RELIABILITY_BINS, "edges": np.linspace(0, 1, RELIABILITY_BINS + 1).tolist(),
            "count": [10] * RELIABILITY_BINS, "accuracy": np.linspace(0.05, 0.95, RELIABILITY_BINS).tolist(),
            "confidence": np.linspace(0.05, 0.97, RELIABILITY_BINS).tolist(), "ece": 0.02}


def report_scale_case(folder: Path, name: str, n_runs: int, seeds: int, *, reliability_files: bool,
                      epochs: int = 5) -> dict:
    """One sweep shape of `bench_compare_scale`: `n_runs` children (`n_runs / seeds` variants), reported from
    SQLite and through a local `mlflow server` over the same database, as a command and again in this process."""
    import numpy as np

    rng = np.random.default_rng(0)
    runs = [{"variant": f"loss=v{i // seeds:03d}", "seed": i % seeds,
             "metrics": {"val_loss": 0.6 + rng.normal(0, 0.02), "val_nll": 0.5 + rng.normal(0, 0.02),
                         "val_accuracy": 0.9 + rng.normal(0, 0.01), "test_nll": 0.5 + rng.normal(0, 0.02),
                         "test_accuracy": 0.9 + rng.normal(0, 0.01)}} for i in range(n_runs)]
    variants = sorted({r["variant"] for r in runs})
    files = {v: _reliability_file() for v in variants} if reliability_files else None
    db = folder / f"compare_scale_{name}.db"
    start = time.perf_counter()
    parent = synthetic_sweep(f"sqlite:///{db}", runs, epochs=epochs, reliability=files)
    build_s = time.perf_counter() - start
    from xentlab.report.compare import write_report

    def in_process(uri: str, out: Path) -> float:  # the report alone: imports done, the store warm
        start = time.perf_counter()
        write_report(uri, parent_run_id=parent, out_dir=out)
        return time.perf_counter() - start

    sqlite_s, sqlite_cpu_s = _timed_compare(f"sqlite:///{db}", folder / f"report_sqlite_{name}")
    sqlite_report_s = in_process(f"sqlite:///{db}", folder / f"report_sqlite_again_{name}")
    proc, url = _start_server(db, folder / f"server_artifacts_{name}")
    try:
        server_s, server_cpu_s = _timed_compare(url, folder / f"report_server_{name}")
        server_report_s = in_process(url, folder / f"report_server_again_{name}")
    finally:
        _stop_server(proc)
    return {"child_runs": n_runs, "variants": len(variants), "seeds": seeds, "reliability_files": reliability_files,
            "build_store_s": build_s, "sqlite_s": sqlite_s, "sqlite_cpu_s": sqlite_cpu_s, "server_s": server_s,
            "server_cpu_s": server_cpu_s, "sqlite_report_s": sqlite_report_s, "server_report_s": server_report_s,
            "load_average": os.getloadavg()[0]}


def bench_compare_scale(quick: bool, folder: Path) -> dict:
    """`xentlab-compare` on sweeps of 1,000 child runs (100 with --quick), 5 epochs of history each, in two shapes:
    many variants (200 x 5 seeds, no reliability file) and many seeds (10 x 100, each run with the
    `evaluation/reliability.json` runs logged before the `xentlab.reliability` tag existed)."""
    n_runs = 100 if quick else 1000
    cases = {"many_variants": report_scale_case(folder, "many_variants", n_runs, 5, reliability_files=False),
             "many_seeds": report_scale_case(folder, "many_seeds", n_runs, n_runs // 10, reliability_files=True)}
    return {"child_runs": n_runs, "epochs_of_history": 5, "cases": cases,
            "sqlite_s": max(c["sqlite_s"] for c in cases.values()),
            "server_s": max(c["server_s"] for c in cases.values()), "target_sqlite_s": 10.0, "target_server_s": 20.0,
            "measures": "sqlite_s, server_s: wall seconds of `xentlab-compare --tracking-uri URI` (process start, "
                        "imports and a cold server included; the slower shape); *_cpu_s: its user + system CPU "
                        "seconds; *_report_s: write_report again in this process"}


# ---------------------------------------------------------------------------------------------- summary
def compare_scale_summary(r: dict) -> list[str]:
    """The report row: per sweep shape and store, the command's wall and CPU seconds against the targets."""
    lines = [f"## xentlab-compare on {r['child_runs']} child runs ({r['epochs_of_history']} epochs of history each; "
             f"targets: SQLite {r['target_sqlite_s']:.0f} s, server {r['target_server_s']:.0f} s)", "",
             "| shape | store | `xentlab-compare` s | CPU s | report alone s |", "|---|---|---|---|---|"]
    for name, c in r["cases"].items():
        shape = (f"{name}: {c['variants']} variants x {c['seeds']} seeds"
                 + (", reliability files" if c["reliability_files"] else ""))
        lines += [f"| {shape} | SQLite | {c['sqlite_s']:.1f} | {c['sqlite_cpu_s']:.1f} | {c['sqlite_report_s']:.1f} |",
                  f"| {shape} | local mlflow server | {c['server_s']:.1f} | {c['server_cpu_s']:.1f} | "
                  f"{c['server_report_s']:.1f} |"]
    return lines + ["", "Wall seconds include process start and imports; CPU seconds (user + system) barely move "
                        "when other work shares the machine.", ""]


def summary(results: dict) -> str:
    lines = ["# xentlab benchmarks", "", f"Machine: {machine()}", ""]
    if "overhead" in results:
        lines += ["## Overhead: xentlab vs plain Keras model.fit (samples/s, median of steady epochs)", "",
                  "| model | xentlab | plain Keras, numpy | ratio | plain Keras, tf.data | ratio |",
                  "|---|---|---|---|---|---|"]
        for name, r in results["overhead"].items():
            lines.append(f"| {name} | {statistics.median(r['xentlab_samples_per_s']):.0f} | "
                         f"{statistics.median(r['plain_keras_samples_per_s']):.0f} | {r['ratio']:.3f} | "
                         f"{statistics.median(r['plain_keras_tfdata_samples_per_s']):.0f} | "
                         f"{r['ratio_vs_tfdata']:.3f} |")
        lines.append("")
    if "sparse_vs_onehot" in results:
        lines += ["## Sparse vs one-hot labels on sequence outputs (T=100)", "",
                  "| labels | V | step ms | peak RSS MB | RSS before the data MB |", "|---|---|---|---|---|"]
        for r in results["sparse_vs_onehot"].values():
            lines.append(f"| {r['mode']} | {r['vocab']} | {r['step_ms']:.1f} | {r['peak_rss_mb']:.0f} | "
                         f"{r['rss_before_data_mb']:.0f} |")
        lines.append("")
    if "steps_per_execution" in results:
        lines += ["## steps_per_execution and tf.data on the digits CNN (samples/s)", "", "| set-up | samples/s |",
                  "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in results["steps_per_execution"].items()]
        lines.append("")
    if "image_folder" in results:
        lines += ["## data=image_folder: streamed from disk vs loaded into numpy (32x32 grayscale PNG, MLP)", "",
                  "| feed | images | load s | samples/s (steady) | peak RSS MB | RSS before the data MB |",
                  "|---|---|---|---|---|---|"]
        for r in results["image_folder"].values():
            lines.append(f"| {r['mode']} | {r['images']} | {r['load_s']:.1f} | {r['steady_samples_per_s']:.0f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['rss_before_data_mb']:.0f} |")
        lines.append("")
    if "metrics_cost" in results:
        r = results["metrics_cost"]
        lines += ["## Metric cost: seed CNN on digits, accuracy + auc + nll (today) vs every metric", "",
                  "| metrics | samples/s (fit, train + val) | ratio: median of paired fits, wall / CPU | "
                  "ratio: best fits, wall / CPU |", "|---|---|---|---|",
                  f"| {', '.join(r['today_metrics'])} | {statistics.median(r['today_samples_per_s']):.0f} | 1 | 1 |",
                  f"| every metric ({len(r['every_metrics'])}) | {statistics.median(r['every_samples_per_s']):.0f} | "
                  f"{r['ratio']:.3f} / {r['ratio_cpu']:.3f} | {r['ratio_best']:.3f} / {r['ratio_best_cpu']:.3f} |", "",
                  "Per training batch (compiled train step alone, CPU us; ratio = today's step / this one):", "",
                  "| set-up | us/step | ratio |", "|---|---|---|"]
        lines += [f"| {label} | {us:.0f} | {r['step_ratio'].get(label, 1.0):.3f} |"
                  for label, us in r["step_cpu_us"].items()]
        lines.append("")
    if "long_tail_metrics_cost" in results:
        r = results["long_tail_metrics_cost"]
        lines += ["## Metric cost of the long-tail metrics: seed CNN on digits, per epoch (train + val)", "",
                  "| metrics | samples/s | s/epoch | ratio: median of paired fits, wall / CPU | ratio: best fits, "
                  "wall / CPU |", "|---|---|---|---|---|",
                  f"| current ({len(r['current_metrics'])}) | {statistics.median(r['current_samples_per_s']):.0f} | "
                  f"{r['epoch_s']['current']:.3f} | 1 | 1 |",
                  f"| current + {', '.join(r['added_metrics'])} | "
                  f"{statistics.median(r['long_tail_samples_per_s']):.0f} | {r['epoch_s']['long_tail']:.3f} | "
                  f"{r['ratio']:.3f} / {r['ratio_cpu']:.3f} | {r['ratio_best']:.3f} / {r['ratio_best_cpu']:.3f} |", ""]
    if "lstm_mfu" in results:
        r = results["lstm_mfu"]
        lines += ["## Char LSTM throughput", "",
                  f"chars/s {r['chars_per_s']:.0f}; FLOPs/char {r['flops_per_char']:.3g}; "
                  f"matmul peak {r['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; MFU {100 * r['mfu']:.1f}%", ""]
    if "compare_scale" in results:
        lines += compare_scale_summary(results["compare_scale"])
    if "startup" in results:
        lines += ["## Command to first training step (s)", "", "| phase | s |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in results["startup"].items()]
        lines.append("")
    return "\n".join(lines)


BENCHMARKS = ("overhead", "sparse_vs_onehot", "steps_per_execution", "metrics_cost", "long_tail_metrics_cost",
              "lstm_mfu", "startup", "image_folder", "compare_scale")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="xentlab-bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run for CI (< 2 min)")
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--text", default=None, help="a text file for the LSTM benchmarks (e.g. tiny Shakespeare); "
                        "default: generated verse, so the benchmarks need nothing outside the repository")
    args = parser.parse_args(argv)
    if args.text:
        global TEXT_SOURCE
        TEXT_SOURCE = Path(args.text)
        if not TEXT_SOURCE.is_file():
            parser.error(f"--text {args.text}: no such file")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.only:
            start = time.perf_counter()
            if name == "lstm_mfu":
                results[name] = bench_lstm_mfu(args.quick, folder, results.get("overhead"))
            else:
                results[name] = globals()[f"bench_{name}"](args.quick, folder)
            record = {"benchmark": name, "quick": args.quick, "machine": machine(),
                      "seconds": time.perf_counter() - start, "results": results[name]}
            (out / f"{name}.json").write_text(json.dumps(record, indent=2))
            print(f"{name}: {record['seconds']:.0f} s", flush=True)
    text = summary(results)
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
