"""Interrupted jobs: identify a job across restarts, find its unfinished run, decide resume or fail-stale.

A job is identified by a hash of its resolved config (minus knobs that do not change results). Its run carries
that key, the host and process id that own it, and a heartbeat; its checkpoint lives in
`outputs/checkpoints/<key>/` (Keras' BackupAndRestore, one backup per completed epoch).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from xentlab.store import HEARTBEAT_TAG, HOST_TAG, JOB_TAG, PID_TAG

# Knobs that do not change what a job computes: changing them must not start a different job.
NOT_IDENTITY = ("trainer.resume", "trainer.verbose", "trainer.dry_run", "trainer.stale_after_s",
                "tracking.run_name", "tracking.log_plots", "tracking.log_model", "tracking.system_metrics",
                "tracking.system_metrics_interval_s")


class Terminated(BaseException):
    """SIGTERM arrived (preemption, `kill`, a scheduler's time limit): the run ends KILLED."""


def install_sigterm_handler() -> None:
    """Turns SIGTERM into `Terminated`, so the run is closed as KILLED instead of left RUNNING."""

    def handler(signum, frame):
        raise Terminated("SIGTERM: stopped by the system (preemption, kill or a time limit)")

    signal.signal(signal.SIGTERM, handler)


def job_key(params: dict[str, str]) -> str:
    """A stable id of the job from its flattened params."""
    identity = {k: v for k, v in sorted(params.items()) if k not in NOT_IDENTITY}
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def owner_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: str(int(time.time()))}


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
                    f"{tags.get(HOST_TAG)}, heartbeat {now - beat:.0f} s ago); wait for it, or start a separate "
                    f"job with trainer.resume=never"))
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


def resumable_backup(backup_dir: str):
    """Keras' BackupAndRestore (per epoch, double-buffered) that also saves and restores the RNG state, so
    a resumed deterministic run continues with the numbers an uninterrupted one would draw."""
    import keras
    import numpy as np

    class ResumableBackup(keras.callbacks.BackupAndRestore):
        def _rng_path(self, epoch: int) -> Path:
            return Path(self.backup_dir) / f"rng_epoch{epoch}.npz"

        def _save_model(self):
            super()._save_model()
            path = self._rng_path(self._current_epoch)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, *[np.asarray(v.numpy()) for v in _seed_states(self.model)])
            os.replace(tmp, path)  # atomic: a kill leaves the old file or the new one, never half of one
            for old in Path(self.backup_dir).glob("rng_epoch*.npz"):
                if old != path and old != self._rng_path(self._current_epoch - 1):
                    old.unlink(missing_ok=True)

        def _load_model(self):
            super()._load_model()
            meta = Path(self._training_metadata_path)
            if not meta.exists():
                return
            path = self._rng_path(json.loads(meta.read_text())["epoch"])
            if path.exists():
                with np.load(path) as saved:
                    keys = sorted(saved.files, key=lambda k: int(k[4:]))  # arr_0, arr_1, ... in save order
                    for var, key in zip(_seed_states(self.model), keys, strict=True):
                        var.assign(saved[key])

    return ResumableBackup(backup_dir, save_freq="epoch", double_checkpoint=True)
