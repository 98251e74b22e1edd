"""`make smoke-gpu` (`python -m xentlab.cli.smoke_gpu`): is this GPU usable, and how much faster than the CPU?

Lists the devices TensorFlow sees, then trains through the real runner (`xentlab.cli.train.run` on composed configs,
MLflow logging included, a throw-away SQLite store) with strategy=gpu (mixed float16, XLA) and strategy=cpu:

- the seed CNN on digits (a few epochs),
- the char LSTM on a small generated text (a few steps),

and prints samples/s of each (median over the epochs after the first, which includes tracing and XLA compilation),
the GPU/CPU ratio and the test metrics. Without a GPU it stops at once with what it found and the install step;
`--cpu-only` runs the CPU half alone, to check the script itself on any machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xentlab.cli.console import command
from xentlab.errors import ExpectedError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

INSTALL_STEP = "make install GPU=1  (pip install -e '.[gpu]': TensorFlow's CUDA wheels, tensorflow[and-cuda])"
WORKLOADS = {
    "seed CNN, digits": ["trainer.epochs=4"],
    "char LSTM": ["+experiment=shakespeare_lstm", "trainer.epochs=3", "model.sample_length=1"],
}
TEXT_BYTES = 40_000  # about 390 windows of 100 bytes: 3 steps of 128 per epoch (a few steps)
METRICS = ("test_accuracy", "test_nll")


class NoGpuError(ExpectedError, RuntimeError):
    """TensorFlow sees no GPU."""


def nvidia_smi() -> str | None:
    """The GPUs `nvidia-smi -L` lists (the driver's view), or None when the tool is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def list_devices() -> list[str]:
    """Prints TensorFlow's build and devices; returns the GPU names. Raises NoGpuError (with the fix) when none."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    cuda = build.get("cuda_version") if tf.test.is_built_with_cuda() else None
    print(f"TensorFlow {tf.__version__}, built with CUDA: {cuda or 'no'}"
          + (f", cuDNN {build.get('cudnn_version')}" if cuda else ""))
    devices = tf.config.list_physical_devices()
    for device in devices:
        details = tf.config.experimental.get_device_details(device) if device.device_type == "GPU" else {}
        name = details.get("device_name", "")
        capability = details.get("compute_capability")
        extra = f"  {name}" + (f" (compute capability {capability[0]}.{capability[1]})" if capability else "")
        print(f"  {device.name}{extra if name else ''}")
    gpus = [d.name for d in devices if d.device_type == "GPU"]
    if gpus:
        return gpus
    driver = nvidia_smi()
    found = ", ".join(d.name for d in devices) or "none"
    if driver and not cuda:
        reason = (f"the NVIDIA driver sees {driver!r}, but this TensorFlow is a CPU-only build; install the CUDA "
                  f"wheels: {INSTALL_STEP}")
    elif driver:
        reason = (f"the NVIDIA driver sees {driver!r}, but TensorFlow found no usable GPU (check that the CUDA "
                  f"wheels match: {INSTALL_STEP}, and CUDA_VISIBLE_DEVICES)")
    else:
        reason = (f"no NVIDIA driver either (nvidia-smi {'failed' if shutil.which('nvidia-smi') else 'not found'}): "
                  f"run this on a machine with a GPU, after {INSTALL_STEP}")
    raise NoGpuError(f"no GPU visible to TensorFlow (devices found: {found}): {reason}")


def generated_verse(n_bytes: int) -> str:
    """`n_bytes` of random words, the same every time: text to train the char LSTM on without a download."""
    import numpy as np

    words = np.array("to be or not the king queen love death night day sweet".split())
    return " ".join(np.random.default_rng(0).choice(words, size=n_bytes // 4))[:n_bytes]


def train(overrides: list[str], strategy: str, folder: Path) -> dict[str, float]:
    """One run through xentlab.cli.train.run; its steady samples/s, wall time and test metrics from the MLflow store."""
    from mlflow.tracking import MlflowClient

    from xentlab.cli.configs import compose
    from xentlab.cli.train import run

    store = f"sqlite:///{folder / f'smoke_{time.time_ns()}.db'}"
    start = time.perf_counter()
    run(compose([*overrides, f"strategy={strategy}", f"tracking.uri={store}", "tracking.log_model=false",
                 "tracking.log_plots=false", "tracking.system_metrics=false", "trainer.resume=never",
                 "trainer.verbose=silent"]))
    seconds = time.perf_counter() - start
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("xentlab").experiment_id])
    history = [m.value for m in sorted(client.get_metric_history(logged.info.run_id, "samples_per_s"),
                                       key=lambda m: m.step)]
    steady = history[1:] or history
    return {"samples_per_s": statistics.median(steady), "seconds": seconds,
            **{k: logged.data.metrics[k] for k in METRICS if k in logged.data.metrics},
            "precision": logged.data.params.get("hardware.precision", "?")}


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xentlab.cli.smoke_gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU check and half (checks the script)")
    args = parser.parse_args(argv)
    from xentlab.cli.console import quiet_native_logs

    quiet_native_logs()
    strategies = ["cpu"] if args.cpu_only else ["gpu", "cpu"]
    try:
        list_devices()
    except NoGpuError as err:
        if not args.cpu_only:
            raise
        print(f"(--cpu-only) {err}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="xentlab-smoke-") as tmp:
        folder = Path(tmp)
        text = folder / "verse.txt"
        text.write_text(generated_verse(TEXT_BYTES))
        for workload, overrides in WORKLOADS.items():
            extra = [f"data.path={text}"] if "LSTM" in workload else []
            results = {}
            for strategy in strategies:
                print(f"training {workload} with strategy={strategy} ...", flush=True)
                results[strategy] = train([*overrides, *extra], strategy, folder)
                rows.append((workload, strategy, results[strategy]))
            if "gpu" in results:
                ratio = results["gpu"]["samples_per_s"] / results["cpu"]["samples_per_s"]
                rows.append((workload, "GPU/CPU", {"ratio": ratio}))
    print("\n| workload | strategy | precision | samples/s | wall s | test_accuracy | test_nll |")
    print("|---|---|---|---:|---:|---:|---:|")
    for workload, strategy, r in rows:
        if "ratio" in r:
            print(f"| {workload} | **GPU/CPU** | | **{r['ratio']:.1f}x** | | | |")
            continue
        print(f"| {workload} | {strategy} | {r['precision']} | {r['samples_per_s']:.0f} | {r['seconds']:.1f} | "
              f"{r.get('test_accuracy', float('nan')):.4f} | {r.get('test_nll', float('nan')):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
