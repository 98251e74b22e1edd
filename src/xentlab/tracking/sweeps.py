"""A sweep across reruns: its key, the parent run a rerun continues, the current child of each job (reused when
FINISHED, superseded when run again), and what each job of one invocation came to.

The rule. A sweep's key hashes the store, the experiment, the grid without its seed axis, the fixed overrides
(knobs that change no result left out: verbosity, resume, run name, Hydra's own settings such as the launcher) and
the digest of the data's bytes (xentlab.data.digest); a job's key holds that digest too (param `data.digest`).
Running a sweep whose key matches an existing parent continues that parent: a job whose child run FINISHED is
reused (not run again), an unfinished one resumes from its checkpoint (tracking.resume), any other runs again as a
new child and the child it replaces is tagged `xentlab.superseded_by`. Reports read the children not superseded.
A job that FINISHED in another sweep of the experiment (same job key: same config, store and data) is reused too:
the run is tagged a member of this sweep (tracking.store.member_tag) and its report reads it as a child.
`trainer.resume=never` starts a fresh parent on purpose.

The reuse decision is made in each job, so it holds for every launcher (basic, joblib, submitit, Ray). Each job
holds a lock file beside its checkpoint while it runs, so two sweep commands on one machine (or one shared
folder) never run the same job twice: the second waits for the first and then reuses its run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from xentlab import metric_table
from xentlab.tracking.resume import NOT_IDENTITY, JobBusy, JobPlan, job_key, plan_job
from xentlab.tracking.store import (
    ERROR_TAG,
    JOB_TAG,
    STAGE_TAG,
    SUPERSEDED_TAG,
    SWEEP_JOB_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    mask_text,
    mask_uri,
    member_tag,
)

SEED_KEY = "trainer.seed"
# Overrides represented otherwise in the key (the resolved store) or that change no result; a sequential or tuned
# sweep continued with more seeds or trials is the same sweep (sweep.until_decided itself is in the key: a plain
# sweep's report is never a sequential one's).
NOT_IN_KEY = {*NOT_IDENTITY, "tracking.uri", "tracking.experiment", "sweep.seed_batch", "sweep.max_seeds",
              "sweep.tuning.trials"}
# In each job's folder, per invocation of the sweep command: what the job came to (trained, reused, failed). Two
# commands started in the same second share Hydra's sweep folder; each reads back only its own jobs' files.
OUTCOME_FILE = ".xentlab-job-{attempt}.json"
ATTEMPT_ENV = "XENTLAB_SWEEP_ATTEMPT"  # set by the sweep command, inherited by its jobs' processes
WAIT_POLL_S = 10.0  # how often a job waiting for another process's run of it looks again


# ---------------------------------------------------------------------------------------------- the sweep key
def _strip(key: str) -> str:
    return key.lstrip("+~")


def _canonical(key: str, value: str) -> str:
    """A grid entry's value in one spelling: a comma list in sorted order (`b,a` and `a,b` launch the same jobs)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    try:
        parsed = OverridesParser.create().parse_override(f"{key}={value}")
    except Exception:  # noqa: BLE001 - a value Hydra would refuse anyway: its text is its identity
        return value
    if parsed.is_sweep_override() and parsed.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
        return ",".join(sorted(parsed.sweep_string_iterator()))
    return value


def sweep_identity(overrides: list[str], sweeper_params: dict[str, Any] | None) -> dict[str, str]:
    """The grid (sweeper params, the command line winning as in Hydra) and the fixed overrides, without the seed
    axis, Hydra's own settings and knobs that change no result: {key: value in one spelling}."""
    entries = {_strip(k): str(v) for k, v in (sweeper_params or {}).items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        entries[_strip(key)] = value if sep else "~"  # `~key` deletes
    return {k: _canonical(k, v) for k, v in sorted(entries.items())
            if k != SEED_KEY and k not in NOT_IN_KEY and not k.startswith(("hydra.", "hydra/"))}


def sweep_key(store_uri: str, experiment: str, overrides: list[str], sweeper_params: dict[str, Any] | None,
              data_digest: str | None = None) -> str:
    """The sweep's identity: store, experiment, grid without its seed axis, fixed overrides and the digest of the
    data's bytes when it has a path (see the module doc)."""
    identity = {"store": mask_uri(store_uri), "experiment": experiment,
                "grid": sweep_identity(overrides, sweeper_params)}
    if data_digest:
        identity["data"] = data_digest
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- children
def _children(client: MlflowClient, experiment_id: str, parent_id: str, extra: str = "") -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'{extra}",
                                  order_by=["attributes.start_time ASC"], max_results=1000, page_token=token)
        runs += [r for r in page if SUPERSEDED_TAG not in r.data.tags]
        token = page.token
        if not token:
            return runs


def current_children(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The parent's children that no later run of their job replaced, oldest first."""
    return _children(client, experiment_id, parent_id)


def child_tags(sweep: dict[str, Any] | None) -> dict[str, str]:
    """The tag that names a child's job within its sweep (its varying overrides), whatever the run is called; a tuned
    sweep's stage and trial."""
    tags = {SWEEP_JOB_TAG: sweep["job"]} if sweep and sweep.get("job") else {}
    for tag, field in ((STAGE_TAG, "stage"), (TRIAL_TAG, "trial")):
        if sweep and sweep.get(field) is not None:
            tags[tag] = str(sweep[field])
    return tags


def finished_run(client: MlflowClient, experiment_id: str, parent_id: str, key: str, elsewhere: bool = True
                 ) -> Run | None:
    """The FINISHED run of job `key` this sweep keeps: its own current child, else (with `elsewhere`) a run of
    another sweep it already holds as a member, else the newest FINISHED child of job `key` in any sweep of the
    experiment."""
    done = "attributes.status = 'FINISHED'"
    own = _children(client, experiment_id, parent_id, f" and tags.`{JOB_TAG}` = '{key}' and {done}")
    if own or not elsewhere:
        return own[0] if own else None
    found = [r for r in client.search_runs([experiment_id], f"tags.`{JOB_TAG}` = '{key}' and {done}",
                                           order_by=["attributes.start_time DESC"])
             if SWEEP_TAG in r.data.tags and SUPERSEDED_TAG not in r.data.tags]
    members = [r for r in found if member_tag(parent_id) in r.data.tags]
    return (members or found or [None])[0]


def join_sweep(client: MlflowClient, run: Run, sweep: dict[str, Any]) -> None:
    """Makes `run` (a FINISHED child of another sweep) a member of `sweep`, as the job and variant it is there."""
    entry = {"variant": sweep.get("variant", ""), "variant_overrides": sweep.get("variant_overrides", ""),
             "job": sweep.get("job", "")}
    client.set_tag(run.info.run_id, member_tag(sweep["parent_run_id"]), json.dumps(entry))


def supersede(client: MlflowClient, experiment_id: str, sweep: dict[str, Any], key: str, run_id: str) -> list[str]:
    """Tags every other current child of the same job (same key, or same varying overrides with a changed config)
    as superseded by `run_id`; returns their ids."""
    parent = sweep["parent_run_id"]
    others = {r.info.run_id: r for r in _children(client, experiment_id, parent, f" and tags.`{JOB_TAG}` = '{key}'")}
    slot = sweep.get("job") or ""
    if slot and not any(q in slot for q in "'\"`\\"):  # a value the search filter can quote as it is
        others.update({r.info.run_id: r for r in _children(client, experiment_id, parent,
                                                           f" and tags.`{SWEEP_JOB_TAG}` = '{slot}'")})
    others.pop(run_id, None)
    for other in others:
        client.set_tag(other, SUPERSEDED_TAG, run_id)
    _leave_members(client, experiment_id, parent, key, slot)
    return list(others)


def _leave_members(client: MlflowClient, experiment_id: str, parent: str, key: str, slot: str) -> None:
    """A job run again in this sweep no longer reads the run of another sweep it had reused for that job."""
    tag = member_tag(parent)
    for run in client.search_runs([experiment_id], f"tags.`{tag}` LIKE '%'"):
        if run.data.tags.get(JOB_TAG) == key or json.loads(run.data.tags[tag]).get("job") == slot:
            client.delete_tag(run.info.run_id, tag)


# ---------------------------------------------------------------------------------------------- one job
@dataclass
class Reused:
    """A job whose FINISHED run is kept: nothing is trained or logged again. `from_sweep`: the id of the other
    sweep the run was made in (None: this sweep's own child)."""

    run: Run
    from_sweep: str | None = None

    @property
    def objective(self) -> float:
        """What the job returns to the sweeper (the metric table's objective), as a trained job would."""
        return metric_table.objective(self.run.data.metrics)


def plan_sweep_job(store, sweep: dict[str, Any], params: dict[str, str], trainer: dict, launch_dir: Path,
                   poll_s: float = WAIT_POLL_S) -> JobPlan | Reused:
    """A sweep job's start: its FINISHED run in this sweep or another (reused; tracking.sweeps.finished_run), else
    resume.plan_job; while another process runs this very job (a second sweep command), waits for it and looks
    again."""
    key = job_key(params, store_uri=store.uri, experiment=store.experiment)
    waiting = False
    while True:
        # trainer.resume=never: a fresh sweep on purpose, nothing taken from another one
        done = finished_run(store.client, store.experiment_id, sweep["parent_run_id"], key,
                            elsewhere=trainer["resume"] != "never")
        if done is not None:
            return _reuse(store.client, done, sweep)
        try:
            return plan_job(store, params, trainer, launch_dir)
        except JobBusy as busy:
            if not waiting:
                print(f"job {sweep['name']}: waiting: {str(busy).split('. ')[0]}", flush=True)
                waiting = True
            time.sleep(poll_s)


def _reuse(client: MlflowClient, run: Run, sweep: dict[str, Any]) -> Reused:
    if run.data.tags.get("mlflow.parentRunId") == sweep["parent_run_id"]:
        print(f"job {sweep['name']}: reused run {run.info.run_id} (FINISHED in an earlier attempt of this "
              f"sweep); nothing trained", flush=True)
        return Reused(run)
    other = run.data.tags[SWEEP_TAG]
    join_sweep(client, run, sweep)
    sweep["reused_from"] = other  # the job's outcome says so (write_outcome)
    print(f"job {sweep['name']}: reused run {run.info.run_id} of sweep {other} (FINISHED there: the same config "
          f"on the same data); nothing trained", flush=True)
    return Reused(run, other)


@contextmanager
def job_lock(checkpoints: Path, key: str, name: str, poll_s: float = 2.0) -> Iterator[None]:
    """Holds `<checkpoints>/.locks/<key>` (`outputs/checkpoints/` by default, see resume.checkpoint_root) while a
    sweep job runs: a second process that starts the same job waits here, then finds its run (reused or resumed)
    instead of making a twin. The lock dies with its process."""
    folder = Path(checkpoints) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / key
    waiting = False
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held for the whole job
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if not waiting:
                print(f"job {name}: waiting: another process on this machine runs it (lock {path})", flush=True)
                waiting = True
            time.sleep(poll_s)
            continue
        # The holder before us may have removed the file after we opened it: lock the file that is there.
        if path.exists() and os.fstat(handle.fileno()).st_ino == path.stat().st_ino:
            break
        handle.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


# ---------------------------------------------------------------------------------------------- outcomes
def write_outcome(job_dir: Path, sweep: dict[str, Any], *, status: str, run_ref: list[str],
                  error: BaseException | None = None) -> None:
    """Records what one job came to in its folder (read back at the end of the sweep): "trained", "reused" or
    "failed", its run, and the error (masked, first line)."""
    record = {"job": sweep.get("job") or sweep["name"], "name": sweep["name"], "status": status,
              "run": run_ref[0] if run_ref else None}
    if status == "reused" and sweep.get("reused_from"):
        record["from_sweep"] = sweep["reused_from"]
    if error is not None:
        record["error"] = mask_text(f"{type(error).__name__}: {error}").splitlines()[0][:500]
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    attempt = os.environ.get(ATTEMPT_ENV) or sweep.get("attempt", "")  # a job on another host: sweep.json's
    (Path(job_dir) / OUTCOME_FILE.format(attempt=attempt)).write_text(json.dumps(record))


def read_outcomes(sweep_dir: Path, attempt: str) -> list[dict[str, Any]]:
    """The outcome of every job of invocation `attempt` that recorded one."""
    out = []
    for path in sorted(Path(sweep_dir).glob(f"*/{OUTCOME_FILE.format(attempt=attempt)}")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            print(f"warning: unreadable job outcome {path}", file=sys.stderr, flush=True)
    return out


@dataclass(frozen=True)
class FailedJob:
    """A job of the sweep that did not finish: its name, the status of its run (or "no run") and the error."""

    name: str
    status: str
    error: str
    run_id: str | None = None

    def line(self) -> str:
        where = f"run {self.run_id}" if self.run_id else "no run was created"
        return f"job {self.name} {self.status} ({where}): {self.error}"


def failed_jobs(children: list[Run], outcomes: list[dict[str, Any]]) -> list[FailedJob]:
    """The current children that ended FAILED or KILLED, plus this invocation's jobs that failed before their run
    existed (a store that does not answer, say)."""
    failed = [FailedJob(r.data.tags.get(SWEEP_JOB_TAG) or r.info.run_name or r.info.run_id, r.info.status,
                        (r.data.tags.get(ERROR_TAG) or "no message").splitlines()[0][:500], r.info.run_id)
              for r in children if r.info.status in ("FAILED", "KILLED")]
    failed += [FailedJob(o["name"], "FAILED", o.get("error", "no message"))
               for o in outcomes if o["status"] == "failed" and not o.get("run")]
    return failed
