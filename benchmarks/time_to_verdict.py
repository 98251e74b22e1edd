"""Time to the verdict: the char LSTM against plain Keras `fit` (best and median epoch), the long_tail preset's wall
time to its verdict run one job after another and as the preset runs it (parallel jobs, asynchronous logging), and
the per-epoch overhead of logging (an epoch of one batch) synchronously and asynchronously.

Epoch times here are whole cycles, end of one epoch to the end of the next: training, validation, logging and the
checkpoint (xentlab: the timestamps of the logged `loss`; plain Keras: a callback at each epoch end).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

from benchmarks.common import REPO, compose
from benchmarks.overhead import cases, plain_model

SIZES = {  # char LSTM: overhead's size and epochs; sweep: the overrides that shrink the preset (none: the preset)
    "smoke": dict(lstm="smoke", lstm_epochs=3, sweep=["trainer.epochs=2", "data.limit=128", "+setup=crossentropy,"
                  "logit_adjusted", "trainer.seed=0,1"], one_batch_epochs=6),
    "quick": dict(lstm="quick", lstm_epochs=4, sweep=["trainer.epochs=10"], one_batch_epochs=30),
    "full": dict(lstm="full", lstm_epochs=6, sweep=[], one_batch_epochs=60),
}
# The long_tail preset as it ran before: jobs one after another, synchronous logging, every epoch validated and saved.
SEQUENTIAL = ["hydra.launcher.n_jobs=1", "tracking.async_logging=false", "trainer.validate_every=1",
              "trainer.checkpoint_every=1"]


def load() -> str:
    """The machine's load averages (1, 5, 15 min) as `uptime` prints them: what every figure was measured under."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def epoch_cycles_xentlab(overrides: list[str], folder: Path) -> tuple[list[float], int]:
    """Trains in-process through `xentlab.cli.train.run`; the seconds between consecutive logged epochs (from the
    `loss` timestamps, ms) and the training examples per epoch."""
    from mlflow.tracking import MlflowClient

    from xentlab.cli.train import run

    store = f"sqlite:///{folder / 'verdict.db'}"
    name = f"bench-{time.time_ns()}"
    run(compose([*overrides, f"tracking.uri={store}", f"tracking.run_name={name}", "tracking.log_model=false",
                 "tracking.log_plots=false", "trainer.resume=never", "trainer.verbose=silent", "strategy=cpu",
                 "tracking.system_metrics=false"]))
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("xentlab").experiment_id],
                                   filter_string=f"attributes.run_name = '{name}'")
    stamps = sorted((m.step, m.timestamp) for m in client.get_metric_history(logged.info.run_id, "loss"))
    cycles = [(b - a) / 1000.0 for (_, a), (_, b) in pairwise(stamps)]
    return cycles, int(logged.data.params["data.train_size"])


def epoch_cycles_plain(overrides: list[str], epochs: int) -> tuple[list[float], int]:
    """The same model and data in a hand-written Keras `fit` (sparse cross-entropy and accuracy only, numpy feed):
    the seconds between consecutive epoch ends, and the training examples per epoch."""
    import keras

    model, bundle, config = plain_model(overrides)
    ends: list[float] = []

    class EpochEnds(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    model.fit(bundle.x_train, bundle.y_train, batch_size=config["trainer"]["batch_size"], epochs=epochs,
              validation_data=(bundle.x_val, bundle.y_val), callbacks=[EpochEnds()], verbose=0)
    return [b - a for a, b in pairwise(ends)], len(bundle.x_train)


def char_lstm(size: str, folder: Path) -> dict:
    """(a) The char LSTM, xentlab against plain Keras, interleaved in one run: chars/s of the best and the median
    epoch (the first epoch, tracing, is not a cycle)."""
    s = SIZES[size]
    overrides, _ = cases(s["lstm"], folder)["char_lstm"]
    overrides = [o for o in overrides if not o.startswith("trainer.epochs=")] + [f"trainer.epochs={s['lstm_epochs']}"]
    ours, n = epoch_cycles_xentlab(overrides, folder)
    plain, n_plain = epoch_cycles_plain(overrides, s["lstm_epochs"])
    rate = {"xentlab": [n / c for c in ours if c > 0], "plain_keras": [n_plain / c for c in plain if c > 0]}
    best = {k: max(v) for k, v in rate.items()}
    median = {k: statistics.median(v) for k, v in rate.items()}
    return {"samples_per_s": rate, "best": best, "median": median, "load": load(), "overrides": overrides,
            "best_ratio": best["xentlab"] / best["plain_keras"],
            "median_ratio": median["xentlab"] / median["plain_keras"]}


def sweep_to_verdict(extra: list[str], folder: Path) -> dict:
    """`xentlab-train +sweep=long_tail` in a fresh process (as `make sweep SWEEP=long_tail` runs it) on a fresh
    store: wall seconds from the command to its verdict, and the verdict lines of its report."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", "+sweep=long_tail",
           "trainer.verbose=silent", f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
           f"hydra.sweep.dir={folder / 'multirun'}", *extra]
    before, start, cpu = load(), time.perf_counter(), _children_cpu_s()
    result = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=3600)
    seconds, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    if result.returncode != 0:
        raise RuntimeError(f"the long_tail sweep failed:\n{result.stderr[-3000:]}")
    return {"wall_s": seconds, "cpu_s": cpu, "load_before": before, "load_after": load(),
            "verdicts": verdicts(result.stdout)}


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of the finished child processes, their own children (the parallel jobs) included:
    what a sweep costs whatever else the machine runs."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def verdicts(report: str) -> dict[str, str]:
    """{variant: verdict} from the primary-metric table of a report's Markdown (its first table)."""
    found: dict[str, str] = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 7 and cells[0] not in ("variant", "") and not set(cells[0]) <= {"-"}:
            found.setdefault(cells[0].removesuffix(" (baseline)"), cells[6])
        elif found and not line.startswith("|"):
            break
    return found


def long_tail_sweep(size: str, folder: Path) -> dict:
    """(b) The preset as it was (jobs one after another, synchronous logging, every epoch validated and saved)
    against the preset as it is, one after the other in one run; the verdicts of both."""
    grid = SIZES[size]["sweep"]
    before = sweep_to_verdict([*SEQUENTIAL, *grid], folder / "sequential")
    after = sweep_to_verdict(grid, folder / "preset")
    return {"sequential": before, "preset": after, "speedup": before["wall_s"] / after["wall_s"],
            "cpu_ratio": after["cpu_s"] / before["cpu_s"],
            "same_verdicts": before["verdicts"] == after["verdicts"], "overrides": grid}


def one_batch_epochs(size: str, folder: Path) -> dict:
    """(b) Per-epoch overhead: the mean cycle of an epoch of one batch (the seed CNN, 128 digits, validation on),
    synchronous against asynchronous logging, alternated twice."""
    epochs = SIZES[size]["one_batch_epochs"]
    base = [f"trainer.epochs={epochs}", "data.limit=128", "trainer.batch_size=128", "model=mnist_cnn"]
    cycles: dict[str, list[float]] = {"synchronous": [], "asynchronous": []}
    for _ in range(2):
        for mode, flag in (("synchronous", "false"), ("asynchronous", "true")):
            seconds, _ = epoch_cycles_xentlab([*base, f"tracking.async_logging={flag}"], folder)
            cycles[mode].append(statistics.mean(seconds[1:] or seconds))  # the second epoch on: traced
    ms = {k: 1000 * statistics.median(v) for k, v in cycles.items()}
    return {"epoch_ms": ms, "runs_ms": {k: [1000 * x for x in v] for k, v in cycles.items()}, "load": load(),
            "ratio": ms["asynchronous"] / ms["synchronous"]}


def bench_time_to_verdict(size: str, folder: Path) -> dict:
    return {"char_lstm": char_lstm(size, folder), "one_batch_epoch": one_batch_epochs(size, folder),
            "long_tail": long_tail_sweep(size, folder), "cpus": os.cpu_count(), "repo": str(REPO.name)}


def summary(r: dict) -> list[str]:
    lstm, epoch, sweep = r["char_lstm"], r["one_batch_epoch"], r["long_tail"]
    return [
        "## Time to verdict (ratios measured side by side; load = 1/5/15-min load averages)", "",
        "| row | baseline | xentlab | ratio | load |", "|---|---|---|---|---|",
        f"| char LSTM vs plain Keras, best epoch (samples/s) | {lstm['best']['plain_keras']:.0f} | "
        f"{lstm['best']['xentlab']:.0f} | {lstm['best_ratio']:.2f}x | {lstm['load']} |",
        f"| char LSTM vs plain Keras, median epoch (samples/s) | {lstm['median']['plain_keras']:.0f} | "
        f"{lstm['median']['xentlab']:.0f} | {lstm['median_ratio']:.2f}x | {lstm['load']} |",
        f"| epoch of 1 batch, sync vs async logging (ms) | {epoch['epoch_ms']['synchronous']:.0f} | "
        f"{epoch['epoch_ms']['asynchronous']:.0f} | {epoch['ratio']:.2f}x time | {epoch['load']} |",
        f"| long_tail to verdict, sequential vs preset (s) | {sweep['sequential']['wall_s']:.0f} | "
        f"{sweep['preset']['wall_s']:.0f} | {sweep['speedup']:.2f}x faster | {sweep['preset']['load_before']} |",
        f"| long_tail, CPU of all its processes, sequential vs preset (s) | {sweep['sequential']['cpu_s']:.0f} | "
        f"{sweep['preset']['cpu_s']:.0f} | {sweep['cpu_ratio']:.2f}x CPU | {sweep['preset']['load_before']} |",
        "", f"Same verdicts with and without the changes: {'yes' if sweep['same_verdicts'] else 'NO'} "
        f"({len(sweep['preset']['verdicts'])} variants; grid overrides: {' '.join(sweep['overrides']) or 'none'}).",
    ]
