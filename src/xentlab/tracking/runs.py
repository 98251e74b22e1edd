"""MLflow run lifecycle: absolute tracking URI, flattened params, per-epoch metrics, final status (what a run logs
besides metrics is in xentlab.tracking.artifacts).

A run ends FINISHED, FAILED (tag `xentlab.error` holds the message) or KILLED (Ctrl-C); never RUNNING.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras
import mlflow
from mlflow.tracking import MlflowClient

from xentlab.errors import ExpectedError
from xentlab.masking import mask_text, mask_value
from xentlab.tracking.metric_log import log_defined
from xentlab.tracking.source import source_tags
from xentlab.tracking.store import (
    ERROR_TAG,
    SWEEP_TAG,
    VARIANT_OVERRIDES_TAG,
    VARIANT_TAG,
    resolve_tracking_uri,
    setup_experiment,
    store_errors,
    ui_url,
)


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
        flat[dotted] = _stringify(value) if value is None else mask_value(dotted, _stringify(value))
    return flat


def mask_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with secret-looking values and URI credentials masked (for the logged YAML)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        out[key] = mask_config(value) if isinstance(value, dict) else mask_value(str(key), value)
    return out


@dataclass(frozen=True)
class Store:
    """The tracking store a run goes to: its absolute URI, the experiment (name and id) and a client."""

    uri: str
    experiment: str
    experiment_id: str
    client: MlflowClient

    def run_url(self, run_id: str) -> str:
        """Where to look at a run: the server's own page, or the UI `make ui` serves over a local store."""
        return ui_url(self.uri, self.experiment_id, run_id, UI_URL)


UI_URL = "http://127.0.0.1:5000"  # `make ui` (HOST, PORT in the Makefile)


def open_store(tracking: dict[str, Any], launch_dir: str | os.PathLike) -> Store:
    """Resolves the tracking URI against the launch directory and finds or creates the experiment."""
    uri = resolve_tracking_uri(tracking["uri"], launch_dir)
    experiment_id = setup_experiment(uri, tracking["experiment"])
    if tracking["system_metrics"]:
        mlflow.set_system_metrics_sampling_interval(tracking["system_metrics_interval_s"])
    return Store(uri, tracking["experiment"], experiment_id, MlflowClient(uri))


def run_tags(tracking: dict[str, Any], sweep: dict[str, Any] | None) -> dict[str, str]:
    """Parent-run link (explicit tracking.parent_run_id, else the sweep's) and the sweep id."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tags = {str(k): mask_value(str(k), str(v)) for k, v in tracking["tags"].items()}
    parent = tracking["parent_run_id"] or (sweep or {}).get("parent_run_id")
    if parent:
        tags[MLFLOW_PARENT_RUN_ID] = parent
    if sweep:
        tags[SWEEP_TAG] = sweep["sweep_id"]
        if "variant" in sweep:  # Group-by in the UI and the report collect a variant's seeds by this tag
            tags[VARIANT_TAG] = sweep["variant"]
            tags[VARIANT_OVERRIDES_TAG] = sweep["variant_overrides"]
    return tags


@contextmanager
def tracked_run(
    store: Store, *, run_name: str, params: dict[str, str], job_dir: str | os.PathLike,
    tags: dict[str, str] | None = None, run_id: str | None = None, system_metrics: bool = False,
    run_ref: list[str] | None = None,
) -> Iterator[Any]:
    """Starts (or, with run_id, reopens) a run and always ends it with the truth: FINISHED, FAILED
    (+ `xentlab.error`) or KILLED (Ctrl-C, SIGTERM).

    Yields the run's `Outbox` (xentlab.tracking.outbox): what is logged through it survives a tracking-server outage,
    kept in `<job_dir>/outbox`; the final status does too. With system_metrics, MLflow samples CPU, memory
    (and GPU when present) as `system/*` metrics while the run is open.
    """
    from xentlab.tracking.outbox import Outbox
    from xentlab.tracking.resume import Terminated

    tags = {**(tags or {}), **source_tags()}
    mlflow.set_tracking_uri(store.uri)
    with store_errors(store.uri):
        if run_id is not None:
            run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
            # The job may be resumed under another name (by a sweep whose first attempt died): the name follows.
            mlflow.set_tags({**tags, "mlflow.runName": run_name})
        else:
            run = mlflow.start_run(experiment_id=store.experiment_id, run_name=run_name, tags=tags,
                                   log_system_metrics=system_metrics)
    if run_ref is not None:
        run_ref[:] = [f"{run.info.run_name} ({run.info.run_id})"]
    outbox = Outbox(store.uri, run.info.run_id, job_dir)
    status = "FAILED"
    try:
        with store_errors(store.uri):
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                mlflow.log_params(dict(list(params.items())[start : start + 100]))
        yield outbox
        status = "FINISHED"
    except KeyboardInterrupt as err:
        status = "KILLED"
        release_interrupted_writes(err)
        outbox.set_tag(ERROR_TAG, "KeyboardInterrupt: stopped by the user (Ctrl-C)")
        raise
    except Terminated as err:
        status = "KILLED"
        release_interrupted_writes(err)
        outbox.set_tag(ERROR_TAG, f"Terminated: {err}")
        raise
    except BaseException as err:
        outbox.set_tag(ERROR_TAG, mask_text(f"{type(err).__name__}: {err}")[:5000])
        raise
    finally:
        try:
            outbox.end(status)
        finally:
            _drop_active_run(run.info.run_id)


def release_interrupted_writes(err: BaseException) -> None:
    """Closes the store connection an interrupt left holding the SQLite write lock.

    A Ctrl-C or SIGTERM that lands inside a write to a SQLite store (SQLAlchemy invalidates the connection on a
    BaseException without rolling back) leaves that connection alive in the traceback's frames, its transaction and
    lock open: the run's own last writes (the error tag, the KILLED status) then waited for this process's lock,
    30 s each, and the run took 60-80 s to stop (measured: 14 of 40 interrupts of a logging loop). Clearing the
    finished frames of the traceback and collecting closes the connection, which rolls the transaction back.
    """
    import gc

    tb = err.__traceback__
    while tb is not None:
        try:
            tb.tb_frame.clear()
        except RuntimeError:  # a frame still executing (this one's callers): nothing of the write in it
            pass
        tb = tb.tb_next
    gc.collect()


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


class NonFiniteLoss(ExpectedError, FloatingPointError):
    """Training produced a NaN or inf loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises at the first non-finite batch loss, so the run ends FAILED with where it happened.

    Keras' TerminateOnNaN only stops training, which would record a FINISHED run with NaN metrics.
    """

    def __init__(self, from_logits: bool | None = None) -> None:
        super().__init__()
        self.epoch = 0
        self.from_logits = from_logits

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            hint = ("a lower optimizer.learning_rate (or optimizer.clipnorm=1.0) usually helps" if self.from_logits
                    else "usually loss.from_logits=true (a linear head with log_softmax) or a lower "
                    "optimizer.learning_rate helps")
            raise NonFiniteLoss(f"loss became {float(loss)} at epoch {self.epoch}, batch {batch}; {hint}")


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics with step = epoch (loss, accuracy, auc, val_*, `epoch_time_s`, `samples_per_s`)
    through the run's outbox, and the model summary; a heartbeat tag tells live runs from stale ones.

    With `asynchronous` (tracking.async_logging) the epoch's metrics and the heartbeat go through MLflow's async
    logging: the store writes them while the next epoch trains. `settle()` waits for them; the checkpoint callback
    calls it before a unit is saved (a SIGKILL after the unit then cannot lose an epoch it covers), and training's
    end calls it, so an error the store answered still fails the run. Epochs the run already holds are skipped (a
    resumed run); epochs without validation (trainer.validate_every) log no `val_*`; a language model also logs
    `bpc` and `val_bpc`. Unlike MLflow's MlflowCallback, whose metaclass turns every error of a callback into a
    warning (so a busy store silently lost an epoch), errors are not swallowed here: the outbox keeps what a busy
    or unreachable store could not take, and anything else fails the run. Nothing is logged at test end (MLflow's
    callback would log validation and test evaluations under one name, `validation_loss`, that the contract does
    not have).
    """

    HEARTBEAT_EVERY_S = 30.0

    def __init__(self, samples_per_epoch: int, outbox, language_model: bool = False,
                 asynchronous: bool = False) -> None:
        super().__init__()
        self.samples_per_epoch = samples_per_epoch
        self.outbox = outbox
        self.language_model = language_model  # also log bpc / val_bpc (xentlab.core.language_metrics)
        self.asynchronous = asynchronous
        self._epoch_start = 0.0
        self._last_beat = 0.0
        self._logged_steps: set[int] = set()

    def on_train_begin(self, logs=None):
        lines: list[str] = []
        self.model.summary(print_fn=lambda line, *a, **k: lines.append(line))
        self.outbox.log_text("\n".join(lines), artifact_file="model_summary.txt")
        run_id = mlflow.active_run().info.run_id
        # A resumed run already holds the epochs before the interruption: never log a step twice. `loss` is
        # logged every epoch (`val_loss` only on those validated).
        self._logged_steps = {m.step for m in MlflowClient().get_metric_history(run_id, "loss")}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._heartbeat()

    def _heartbeat(self, force: bool = False) -> None:
        from xentlab.tracking.store import HEARTBEAT_TAG

        now = time.time()
        if force or now - self._last_beat >= self.HEARTBEAT_EVERY_S:
            self.outbox.set_tag(HEARTBEAT_TAG, str(int(now)), keep=False, synchronous=not self.asynchronous)
            self._last_beat = now

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or epoch in self._logged_steps:
            return
        seconds = time.perf_counter() - self._epoch_start
        logs["epoch_time_s"] = seconds
        logs["samples_per_s"] = self.samples_per_epoch / seconds if seconds > 0 else 0.0
        if self.language_model:
            from xentlab.core.language_metrics import language_model_metrics

            logs.update(language_model_metrics(logs))
        # An undefined metric (val_auc of one class) is left out, and said once.
        log_defined(self.outbox, logs, step=epoch, synchronous=not self.asynchronous)
        self._logged_steps.add(epoch)
        self._heartbeat(force=True)

    def settle(self) -> None:
        """Waits until every epoch logged so far is in the store (or kept in the outbox)."""
        self.outbox.settle()

    def on_train_end(self, logs=None):
        self.settle()

    def on_test_end(self, logs=None):
        return None


def print_summary(store: Store, outbox, results: dict[str, float], run_ref: list[str]) -> None:
    """One line at the end of every run: name and id, status, test metrics, and the URL to open it."""
    metrics = "  ".join(f"{k}={v:.4f}" for k, v in results.items() if k.startswith("test_"))
    run = run_ref[0] if run_ref else outbox.run_id
    try:  # the name may have changed since the start (model=auto names the run after the model it picked)
        run = f"{store.client.get_run(outbox.run_id).info.run_name} ({outbox.run_id})"
    except Exception:  # noqa: BLE001 - a server that went away: the name from the start will do
        pass
    if outbox.pending:
        print(f"warning: the tracking store did not come back in time; {outbox.pending} records of run "
              f"{outbox.run_id} are kept in {outbox.folder}: send them with `xentlab-sync {outbox.folder.parent}`",
              file=sys.stderr, flush=True)
    hint = " (after `make ui`)" if not store.uri.startswith(("http://", "https://")) else ""
    print(f"run {run} FINISHED  {metrics}\n  open it: {store.run_url(outbox.run_id)}{hint}", flush=True)


def logged_history(run_id: str) -> dict[str, list[float]]:
    """The per-epoch metrics a run holds (the Keras history of every epoch, resumed runs included), one value per
    epoch for every key: NaN where an epoch has none (`val_*` of the epochs trainer.validate_every skipped)."""
    client = MlflowClient()
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith(("test_", "system/"))]
    points = {key: {m.step: m.value for m in client.get_metric_history(run_id, key)} for key in keys}
    steps = sorted({step for by_step in points.values() for step in by_step})
    return {key: [by_step.get(step, math.nan) for step in steps] for key, by_step in points.items()}
