"""Interrupted jobs: identify a job across restarts, find its unfinished run, decide resume or fail-stale.

A job is identified by a hash of its resolved config (minus knobs that do not change results). Its run carries
that key, the host and process id that own it, and a heartbeat; its checkpoint lives in
`outputs/checkpoints/<key>/epoch-<n>/`: one verified unit per completed epoch (weights with optimizer state, RNG
state, checksums), written atomically, the newest two kept, removed only once the run is FINISHED.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from xentlab.data.digest import read_into
from xentlab.errors import ExpectedError
from xentlab.tracking.store import (
    ERROR_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    JOB_TAG,
    NODE_TAG,
    PID_TAG,
    mask_uri,
    store_errors,
)

# Knobs that do not change what a job computes: changing them must not start a different job.
NOT_IDENTITY = ("trainer.resume", "trainer.verbose", "trainer.dry_run", "trainer.stale_after_s",
                "trainer.checkpoint_dir", "tracking.run_name", "tracking.log_plots", "tracking.log_model",
                "tracking.log_diff", "tracking.system_metrics", "tracking.system_metrics_interval_s")


class Terminated(BaseException):
    """SIGTERM arrived (preemption, `kill`, a scheduler's time limit): the run ends KILLED."""


def install_sigterm_handler() -> None:
    """Turns SIGTERM into `Terminated`, so the run is closed as KILLED instead of left RUNNING."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the run's ending short
        raise Terminated("SIGTERM: stopped by the system (preemption, kill or a time limit)")

    signal.signal(signal.SIGTERM, handler)


def job_key(params: dict[str, str], *, store_uri: str = "", experiment: str = "") -> str:
    """A stable id of the job: its flattened params plus the store and experiment it logs to.

    The store is the resolved one (tracking.uri as written may be null while $MLFLOW_TRACKING_URI picks the
    store), so the same config run against two stores is two jobs, with two checkpoints.
    """
    identity = {k: v for k, v in sorted(params.items()) if k not in NOT_IDENTITY}
    identity["@store"] = [mask_uri(store_uri), experiment]
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_root(launch_dir: Path, trainer) -> Path:
    """Where jobs keep their checkpoints: trainer.checkpoint_dir (relative: from the launch folder), by default
    `outputs/checkpoints` in the launch folder."""
    folder = Path(trainer.get("checkpoint_dir") or "outputs/checkpoints")
    return folder if folder.is_absolute() else Path(launch_dir) / folder


def node_name() -> str:
    """Where this job runs: the host, and inside a Ray task the Ray node's id (raylets may share a host)."""
    ray = sys.modules.get("ray")  # only a job that Ray runs has it imported
    if ray is not None and ray.is_initialized():
        return f"{socket.gethostname()}/ray-node-{ray.get_runtime_context().get_node_id()}"
    return socket.gethostname()


def owner_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), NODE_TAG: node_name(), PID_TAG: str(os.getpid()),
            HEARTBEAT_TAG: str(int(time.time()))}


def job_tags(key: str) -> dict[str, str]:
    """The tags that tie a run to its job and to the process that owns it (host, pid, heartbeat)."""
    return {JOB_TAG: key, **owner_tags()}


class JobBusy(ExpectedError, RuntimeError):
    """A live process is running this very job."""


@dataclass
class JobPlan:
    """How a job starts: its key, its checkpoint folder, the run to continue (None: a new run) and the first epoch."""

    key: str
    checkpoint_dir: Path
    run_id: str | None
    unit: Unit | None  # the checkpoint to continue from

    @property
    def initial_epoch(self) -> int:
        return self.unit.epoch if self.unit else 0


def plan_job(store, params: dict[str, str], trainer: dict, launch_dir: Path) -> JobPlan:
    """Finds the job's unfinished runs, marks stale ones FAILED, and decides between resuming and a fresh start.

    Installs the SIGTERM handler too: from here on a `kill` ends the run KILLED, never RUNNING.
    """
    key = job_key(params, store_uri=store.uri, experiment=store.experiment)
    checkpoint_dir = checkpoint_root(launch_dir, trainer) / key
    with store_errors(store.uri):  # the first read of the runs: a store locked since it was opened is named
        decision = decide(store.client, store.experiment_id, key, checkpoint_dir, resume=trainer["resume"],
                          stale_after_s=trainer["stale_after_s"])
    if decision.busy:
        raise JobBusy(decision.busy)
    for run_id, reason in decision.stale:
        store.client.set_tag(run_id, ERROR_TAG, reason)
        store.client.set_terminated(run_id, "FAILED")
    unit, damaged = latest_unit(checkpoint_dir) if decision.resume_run_id else (None, [])
    run_id = decision.resume_run_id
    if run_id is not None and unit is None:
        # Every unit is damaged: the old run cannot be continued faithfully. It is closed FAILED saying why, the
        # folder is kept aside for inspection, and the job starts again as a new run.
        reason = f"checkpoint damaged ({'; '.join(damaged) or 'no complete unit'}); the job was started again"
        store.client.set_tag(run_id, ERROR_TAG, reason)
        store.client.set_terminated(run_id, "FAILED")
        checkpoint_dir.rename(checkpoint_dir.with_name(f"{key}.damaged-{int(time.time())}"))
        print(f"warning: run {run_id}: {reason} from epoch 1 as a new run", file=sys.stderr, flush=True)
        run_id = None
    if run_id is None and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # a fresh start must not pick up an old backup
    elif run_id is not None:
        if ERROR_TAG in store.client.get_run(run_id).data.tags:
            store.client.delete_tag(run_id, ERROR_TAG)  # it is running again
        for problem in damaged:
            print(f"warning: checkpoint {problem}; falling back to the previous unit", file=sys.stderr, flush=True)
        print(f"resuming run {run_id} after epoch {unit.epoch}", flush=True)
    install_sigterm_handler()
    return JobPlan(key, checkpoint_dir, run_id, unit)


def finish_job(plan: JobPlan) -> None:
    """After the run ended FINISHED: its checkpoint is no longer needed."""
    shutil.rmtree(plan.checkpoint_dir, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class Decision:
    resume_run_id: str | None  # continue this run from the checkpoint
    stale: list[tuple[str, str]]  # (run id, reason): runs to mark FAILED before starting
    busy: str | None  # a live process runs this very job: message for the user


def decide(
    client: MlflowClient, experiment_id: str, key: str, checkpoint_dir: Path, *, resume: str, stale_after_s: float
) -> Decision:
    """Looks at the unfinished runs of job `key` and says what to do with them."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{JOB_TAG}` = '{key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    stale: list[tuple[str, str]] = []
    resume_id = None
    now = time.time()
    for run in runs:
        tags = run.data.tags
        if run.info.status == "RUNNING":
            beat = float(tags.get(HEARTBEAT_TAG, run.info.start_time / 1000))
            same_host = tags.get(HOST_TAG) == socket.gethostname()
            dead = same_host and not _process_alive(int(tags.get(PID_TAG, "0") or 0))
            if not dead and now - beat < stale_after_s:
                return Decision(None, [], (
                    f"run {run.info.run_id} of this job is alive (process {tags.get(PID_TAG)} on "
                    f"{tags.get(HOST_TAG)}, heartbeat {now - beat:.0f} s ago). Wait for it to finish, stop it "
                    f"(`kill {tags.get(PID_TAG)}` on {tags.get(HOST_TAG)}; it ends KILLED and resumes on the next "
                    f"start), or run an independent copy of the job with an extra override such as "
                    f"+tracking.tags.copy=2"))
            why = "its process is gone" if dead else f"no heartbeat for {now - beat:.0f} s"
        else:
            why = f"it ended {run.info.status}"
        if resume == "auto" and resume_id is None and checkpoint_dir.exists():
            resume_id = run.info.run_id
            continue
        if run.info.status == "RUNNING":
            outcome = "no checkpoint to resume from" if resume == "auto" else "not resumed (trainer.resume=never)"
            stale.append((run.info.run_id, f"stale: {why} (killed or lost power); {outcome}"))
    return Decision(resume_id, stale, None)


def _seed_states(model) -> list:
    # Keras' dropout (and other random layers) draw from SeedGenerator state variables that
    # Model.save_weights leaves out; without them a resumed run draws different dropout masks.
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


UNIT = re.compile(r"^epoch-(\d{6})$")
KEEP_UNITS = 2  # the newest and the one before, so a unit damaged after it was written has a fallback


@dataclass(frozen=True)
class Unit:
    """One checkpoint: the state after `epoch` completed epochs, in `folder` (weights with optimizer state,
    RNG state, and meta.json holding the epoch and a sha256 of each file)."""

    epoch: int
    folder: Path


def _sha256(path: Path) -> str:
    return read_into(hashlib.sha256(), path).hexdigest()


def verify_unit(folder: Path) -> Unit:
    """Reads a unit's meta.json and checks every file against its recorded sha256; raises ValueError if damaged."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        epoch, files = int(meta["epoch"]), dict(meta["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder.name}: meta.json unreadable ({err})") from err
    for name, digest in files.items():
        path = folder / name
        if not path.is_file() or _sha256(path) != digest:
            raise ValueError(f"{folder.name}: {name} is missing or does not match its checksum")
    return Unit(epoch, folder)


def _units_newest_first(checkpoint_dir: Path) -> list[Path]:
    return sorted((p for p in checkpoint_dir.glob("epoch-*") if UNIT.match(p.name)), reverse=True)


def latest_unit(checkpoint_dir: Path) -> tuple[Unit | None, list[str]]:
    """The newest complete unit in `checkpoint_dir` (None if there is none) and what was found damaged."""
    damaged: list[str] = []
    for folder in _units_newest_first(checkpoint_dir):
        try:
            return verify_unit(folder), damaged
        except ValueError as err:
            damaged.append(str(err))
    return None, damaged


class CheckpointNotWritten(ExpectedError, OSError):
    """A checkpoint unit could not be written: a full disk, or a folder that cannot be written."""


def save_unit(model, checkpoint_dir: Path, epoch: int) -> Unit:
    """Writes the unit for `epoch` completed epochs atomically: into a temporary folder, each file fsynced,
    then renamed into place. A kill at any moment leaves either the previous units only, or the new one whole.

    A unit that cannot be written (no space left, no permission), or whose writing is interrupted (Ctrl-C,
    SIGTERM), leaves no temporary folder behind; the first kind raises
    CheckpointNotWritten; the space is checked first, because HDF5 (the weights file) does not recover from a
    full disk mid-write: it crashes the process when it exits.
    """
    final = checkpoint_dir / f"epoch-{epoch:06d}"
    tmp = checkpoint_dir / f".tmp-{final.name}-{os.getpid()}"
    try:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        _check_space(model, checkpoint_dir, epoch)
        tmp.mkdir()
        _write_unit(model, tmp, epoch)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(checkpoint_dir)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, CheckpointNotWritten):
            raise
        raise CheckpointNotWritten(
            f"the checkpoint of epoch {epoch} could not be written to {checkpoint_dir} "
            f"({err.strerror or err}); {RESTART_HINT}") from err
    except BaseException:  # Ctrl-C or SIGTERM mid-write: the half-written unit goes too
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in _units_newest_first(checkpoint_dir)[KEEP_UNITS:]:
        shutil.rmtree(old, ignore_errors=True)
    return Unit(epoch, final)


RESTART_HINT = ("free space on that disk or make the folder writable, then start the job again: it resumes from "
                "its last checkpoint")


def _check_space(model, checkpoint_dir: Path, epoch: int) -> None:
    """Raises CheckpointNotWritten unless the disk has room for a unit: the variables' bytes, about 4 kB of
    HDF5 bookkeeping per variable, and a margin."""
    variables = list(model.variables) + list(getattr(model.optimizer, "variables", []) or [])
    needed = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    needed = int(1.25 * (needed + 4096 * len(variables))) + (1 << 20)
    free = shutil.disk_usage(checkpoint_dir).free
    if free < needed:
        raise CheckpointNotWritten(
            f"no room for the checkpoint of epoch {epoch} in {checkpoint_dir}: it needs about {needed / 1e6:.1f} MB, "
            f"{free / 1e6:.1f} MB are free; {RESTART_HINT}")


def _write_unit(model, folder: Path, epoch: int) -> None:
    model.save_weights(str(folder / "state.weights.h5"))  # Keras 3: the model's and the optimizer's variables
    np.savez(folder / "rng.npz", *[np.asarray(v.numpy()) for v in _seed_states(model)])
    files = {name: _sha256(folder / name) for name in ("state.weights.h5", "rng.npz")}
    (folder / "meta.json").write_text(json.dumps({"epoch": epoch, "files": files}))
    for path in folder.iterdir():
        with path.open("rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore_unit(model, unit: Unit) -> None:
    """Loads a verified unit into a compiled model: weights, optimizer state and RNG state."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its variables must exist before they are loaded
    model.load_weights(str(unit.folder / "state.weights.h5"))
    with np.load(unit.folder / "rng.npz") as saved:
        keys = sorted(saved.files, key=lambda k: int(k[4:]))  # arr_0, arr_1, ... in save order
        for var, key in zip(_seed_states(model), keys, strict=True):
            var.assign(saved[key])


def epoch_checkpoint(checkpoint_dir: Path, every: int = 1, last_epoch: int | None = None, before_save=None):
    """A Keras callback that saves a unit (see save_unit) every `every` epochs and after `last_epoch`; `before_save`
    runs first (the epoch logger's settle: what the unit covers is logged before the unit exists)."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % every and epoch + 1 != last_epoch:
                return
            if before_save is not None:
                before_save()
            save_unit(self.model, checkpoint_dir, epoch + 1)

    return EpochCheckpoint()
