"""The worker processes of a sweep whose jobs run side by side (Hydra's joblib launcher): started while the sweep
sets itself up, and stopped once its last job has returned.

A job's process spends about 5 s importing TensorFlow, Keras and MLflow before it trains. Left to the launcher,
the workers start only after the sweep's parent run exists, and each pays that at its first job; here they start
when Hydra builds its callbacks, import what a job imports while the parent run is set up, and take their share of
the cores (xentlab.runtime.launchers.split_tf_threads) before TensorFlow starts. After the last job the workers
are stopped at once: they hold nothing of the sweep (each job has ended its run), and left alone each would tear
TensorFlow down before the command could exit.

    hydra:
      callbacks:
        warm_workers:
          _target_: xentlab.cli.workers.WarmWorkers
          _recursive_: false          # the launcher's settings are read, never built
          launcher: ${hydra.launcher}
          mode: ${hydra.mode}
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# What a job imports (xentlab.cli.train.run and the steps it calls), heaviest first.
JOB_MODULES = (
    "tensorflow", "keras", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "sklearn.metrics", "matplotlib.pyplot",
    "xentlab.cli.train", "xentlab.config.checks", "xentlab.config.preflight", "xentlab.core.evaluation",
    "xentlab.core.figures", "xentlab.core.metric_set", "xentlab.core.models", "xentlab.core.posthoc", "xentlab.data",
    "xentlab.tracking.artifacts", "xentlab.tracking.runs", "xentlab.tracking.sweeps",
)


def warm_worker(jobs: int) -> int:
    """Runs in a worker: its TensorFlow share of the cores, then every module a job imports, then TensorFlow's
    runtime started. The objects made so far are moved out of the garbage collector's view (`gc.freeze`): they live
    as long as the process, and each full collection during training no longer walks them. Returns the pid."""
    import gc
    import os

    from xentlab.runtime.launchers import split_tf_threads

    split_tf_threads(jobs)  # before TensorFlow's runtime starts, as each job's ThreadSplit would
    for name in JOB_MODULES:
        importlib.import_module(name)
    import tensorflow as tf

    tf.constant(0.0).numpy()  # starts the runtime and its thread pools now, not in the first job
    gc.collect()
    gc.freeze()
    return os.getpid()


def joblib_settings(launcher: Any) -> dict[str, Any]:
    """`Parallel`'s arguments as Hydra's joblib launcher passes them (backend loky, numbers as numbers), so that the
    workers started here are the ones its jobs then run in (joblib reuses a pool only for identical settings)."""
    settings = OmegaConf.to_container(launcher, resolve=True) if isinstance(launcher, DictConfig) else dict(launcher)
    settings.pop("_target_", None)
    settings["backend"] = "loky"  # the launcher's own choice, whatever the config says
    for key in ("pre_dispatch", "batch_size", "max_nbytes"):  # as the launcher reads them
        try:
            settings[key] = int(settings[key]) if settings.get(key) else settings.get(key)
        except ValueError:
            pass
    return settings


class WarmUp(threading.Thread):
    """The background thread that starts the joblib launcher's workers; `pids` holds theirs once it is done."""

    def __init__(self, settings: dict[str, Any], jobs: int) -> None:
        super().__init__(name="xentlab-warm-workers", daemon=True)
        self.settings, self.jobs, self.pids = settings, jobs, []

    def run(self) -> None:
        from joblib import Parallel, delayed

        try:
            self.pids = Parallel(**self.settings)(delayed(warm_worker)(self.jobs) for _ in range(self.jobs))
        except Exception:  # noqa: BLE001 - a worker that could not warm up is started again by the launcher
            pass


def start_workers(launcher: Any) -> WarmUp:
    """Starts the joblib launcher's worker processes from a background thread, each running `warm_worker` once;
    returns the thread (the sweep goes on meanwhile; its jobs queue behind the warm-up)."""
    from xentlab.runtime.launchers import jobs_at_once

    settings = joblib_settings(launcher)
    warm_up = WarmUp(settings, jobs_at_once(settings.get("n_jobs")))
    warm_up.start()
    return warm_up


def stop_workers() -> None:
    """Stops the pool of joblib's process workers now, if there is one (the last job has returned)."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def worker_pids() -> list[int]:
    """The pids of joblib's process workers alive now (none when the jobs run in this process)."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    processes = dict(getattr(executor, "_processes", None) or {})
    return [pid for pid, process in processes.items() if process.is_alive()]


def signal_workers(sig: int, pids: list[int] | None = None) -> None:
    """Sends `sig` to joblib's process workers (`pids`, default: those alive now); one gone meanwhile is skipped.
    From a signal handler this, not `stop_workers`: shutting the pool down there would wait on its manager thread
    while the main thread, interrupted inside joblib, holds what that thread waits for."""
    import os

    for pid in worker_pids() if pids is None else pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class WarmWorkers(Callback):
    """Hydra callback of the presets that run jobs in parallel processes (joblib launcher): starts the workers when
    Hydra builds its callbacks (before the sweep's parent run is set up) and stops them after the last job.

    Args:
        launcher: `hydra.launcher` (the joblib launcher's settings).
        mode: `hydra.mode`; only a multirun starts workers.
    """

    def __init__(self, launcher: Any = None, mode: Any = None) -> None:
        if launcher is not None and "n_jobs" in launcher and str(mode).rpartition(".")[2] == "MULTIRUN":
            start_workers(launcher)  # only the joblib launcher has n_jobs: any other starts its jobs as it does

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        stop_workers()
