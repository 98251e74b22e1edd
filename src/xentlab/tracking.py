"""MLflow run lifecycle: absolute tracking URI, flattened params, per-epoch metrics, artifacts, final status.

A run ends FINISHED, FAILED (tag `xentlab.error` holds the message) or KILLED (Ctrl-C); never RUNNING.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import mlflow
from mlflow.keras import MlflowCallback
from mlflow.tracking import MlflowClient

from xentlab.store import ERROR_TAG, MASK, SECRET_NAME, mask_uri


def _stringify(value: Any) -> str:
    # One spelling for every value, every time: resume must never trip MLflow's "param changed" check.
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return "null" if value is None else str(value)


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flattens a nested config to dotted keys with stringified values; secret-looking values are masked."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{dotted}."))
            continue
        text = _stringify(value)
        if SECRET_NAME.search(str(key)) and value is not None:
            text = MASK
        flat[dotted] = mask_uri(text) if isinstance(value, str) else text
    return flat


def mask_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with secret-looking values and URI credentials masked (for the logged YAML)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out[key] = mask_config(value)
        elif SECRET_NAME.search(str(key)) and value is not None:
            out[key] = MASK
        elif isinstance(value, str):
            out[key] = mask_uri(value)
        else:
            out[key] = value
    return out


@contextmanager
def tracked_run(
    *, experiment_id: str, run_name: str, params: dict[str, str], job_dir: str | os.PathLike,
    tags: dict[str, str] | None = None, run_id: str | None = None, system_metrics: bool = False,
) -> Iterator[Any]:
    """Starts (or, with run_id, reopens) a run and always ends it with the truth: FINISHED, FAILED
    (+ `xentlab.error`) or KILLED (Ctrl-C, SIGTERM).

    Yields the run's `Outbox` (xentlab.outbox): what is logged through it survives a tracking-server outage,
    kept in `<job_dir>/outbox`; the final status does too. With system_metrics, MLflow samples CPU, memory
    (and GPU when present) as `system/*` metrics while the run is open.
    """
    from xentlab.outbox import Outbox
    from xentlab.resume import Terminated

    if run_id is not None:
        run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        mlflow.set_tags(tags or {})
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or {},
                               log_system_metrics=system_metrics)
    outbox = Outbox(mlflow.get_tracking_uri(), run.info.run_id, job_dir)
    status = "FAILED"
    try:
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            chunk = dict(list(params.items())[start : start + 100])
            mlflow.log_params(chunk)
        yield outbox
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        outbox.set_tag(ERROR_TAG, "KeyboardInterrupt: stopped by the user (Ctrl-C)")
        raise
    except Terminated as err:
        status = "KILLED"
        outbox.set_tag(ERROR_TAG, f"Terminated: {err}")
        raise
    except BaseException as err:
        outbox.set_tag(ERROR_TAG, f"{type(err).__name__}: {err}"[:5000])
        raise
    finally:
        try:
            outbox.end(status)
        finally:
            _drop_active_run(run.info.run_id)


def _drop_active_run(run_id: str) -> None:
    """Ends MLflow's notion of the active run without another server call (the outbox set the status)."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    if stack and stack[-1].info.run_id == run_id:
        stack.pop()
        fluent.MLFLOW_RUN_ID.unset()
        fluent._last_active_run_id.set(run_id)
    monitor = fluent.run_id_to_system_metrics_monitor.pop(run_id, None)
    if monitor is not None:
        monitor.finish()


class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN or inf loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises at the first non-finite batch loss, so the run ends FAILED with where it happened.

    Keras' TerminateOnNaN only stops training, which would record a FINISHED run with NaN metrics.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(
                f"loss became {float(loss)} at epoch {self.epoch}, batch {batch}; usually "
                f"loss.from_logits=true (a linear head with log_softmax) or a lower optimizer.learning_rate helps"
            )


class EpochLogger(MlflowCallback):
    """MLflow's Keras callback, made resume-safe and without its two side channels.

    Kept from the parent: metrics at every epoch end with step = epoch (loss, accuracy, auc, val_*), and its
    exception-safe wrapper (a tracking hiccup is reported, not fatal to training).
    Changed: `epoch_time_s` and `samples_per_s` join the epoch's metrics; logging is synchronous and skips
    epochs the run already holds (a resumed run); a heartbeat tag tells live runs from stale ones; the model
    summary is logged without the parent's `optimizer_*` params (the flattened config holds them);
    `on_test_end` logs nothing, because the parent would log validation and test evaluations under one
    name (`validation_loss`) that the contract does not have.
    """

    HEARTBEAT_EVERY_S = 30.0

    def __init__(self, samples_per_epoch: int, outbox) -> None:
        super().__init__(log_every_epoch=True)
        self.samples_per_epoch = samples_per_epoch
        self.outbox = outbox
        self._epoch_start = 0.0
        self._last_beat = 0.0
        self._logged_steps: set[int] = set()

    def on_train_begin(self, logs=None):
        lines: list[str] = []
        self.model.summary(print_fn=lambda line, *a, **k: lines.append(line))
        mlflow.log_text("\n".join(lines), artifact_file="model_summary.txt")
        run_id = mlflow.active_run().info.run_id
        # A resumed run already holds the epochs before the interruption: never log a step twice.
        self._logged_steps = {m.step for m in MlflowClient().get_metric_history(run_id, "val_loss")}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._heartbeat()

    def _heartbeat(self, force: bool = False) -> None:
        from xentlab.store import HEARTBEAT_TAG

        now = time.time()
        if force or now - self._last_beat >= self.HEARTBEAT_EVERY_S:
            self.outbox.set_tag(HEARTBEAT_TAG, str(int(now)), keep=False)
            self._last_beat = now

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or epoch in self._logged_steps:
            return
        seconds = time.perf_counter() - self._epoch_start
        logs["epoch_time_s"] = seconds
        logs["samples_per_s"] = self.samples_per_epoch / seconds if seconds > 0 else 0.0
        # Synchronous (or kept in the outbox), so a SIGKILL right after an epoch cannot lose metrics the
        # checkpoint already covers.
        self.outbox.log_metrics(logs, step=epoch)
        self._logged_steps.add(epoch)
        self._heartbeat(force=True)

    def on_test_end(self, logs=None):
        return None
