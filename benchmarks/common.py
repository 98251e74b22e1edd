"""What the benchmarks share: the machine record, Hydra composition, generated text, xentlab and plain Keras
throughput, and running a worker module in a fresh process."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from xentlab.cli.configs import compose  # noqa: F401 - the benchmarks compose the config xentlab-train gets
from xentlab.cli.smoke_gpu import generated_verse

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SIZE_NAMES = ("smoke", "quick", "full")  # smoke: tiny, for the test suite (the code runs; figures mean nothing)
TEXT_SOURCE: list[Path] = []  # --text FILE: a corpus for the LSTM benchmarks; default generated verse


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def text_slice(n_bytes: int, folder: Path) -> Path:
    """A prefix of the --text corpus when one is given, else generated verse of the same size."""
    path = folder / f"text_{n_bytes}.txt"
    if TEXT_SOURCE:
        path.write_bytes(TEXT_SOURCE[0].read_bytes()[:n_bytes])
    else:
        path.write_text(generated_verse(n_bytes))
    return path


def steady(values: list[float]) -> float:
    """Median after the first epoch (tracing and graph building)."""
    return statistics.median(values[1:] if len(values) > 1 else values)


def xentlab_samples_per_s(overrides: list[str], folder: Path) -> list[float]:
    """Runs xentlab in-process (MLflow logging, every metric included); per-epoch samples/s."""
    from mlflow.tracking import MlflowClient

    from xentlab.cli.train import run

    store = f"sqlite:///{folder / 'bench.db'}"  # one store for every run (making its tables costs seconds)
    name = f"bench-{time.time_ns()}"
    run(compose([*overrides, f"tracking.uri={store}", f"tracking.run_name={name}", "tracking.log_model=false",
                 "tracking.log_plots=false", "trainer.resume=never",
                 "trainer.verbose=silent", "strategy=cpu"]))
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("xentlab").experiment_id],
                                   filter_string=f"attributes.run_name = '{name}'")
    history = sorted(client.get_metric_history(logged.info.run_id, "samples_per_s"), key=lambda m: m.step)
    return [m.value for m in history]


def run_worker(module: str, *args: object, fresh: bool = True, timeout: float = 900) -> dict:
    """`python -m benchmarks.workers.<module> ARGS` in a fresh process (its own memory high-water mark and
    start-up); the JSON record it prints last. With fresh=False (the smoke size), its `main` in this process: the
    same code, without a TensorFlow start-up per set-up."""
    if not fresh:
        import importlib

        worker = importlib.import_module(f"benchmarks.workers.{module}")
        return json.loads(json.dumps(worker.main(*worker.parse(list(map(str, args))))))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    result = subprocess.run([sys.executable, "-m", f"benchmarks.workers.{module}", *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.workers.{module} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
