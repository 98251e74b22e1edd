"""Hydra callback for multirun sweeps: one parent MLflow run per sweep, the comparison report at the end.

The parent run id is handed to the jobs explicitly through `<sweep dir>/sweep.json`, which works for jobs in
the same process (basic launcher) and in other processes or hosts sharing the folder (joblib, submitit, Ray).
Running the same sweep again continues its parent; which jobs are reused, resumed or run again is decided in each
job (xentlab.tracking.sweeps).

A preset names the variant the report compares the others with under the callback's own key (stored on the
parent run as tag `xentlab.baseline`; `xentlab-compare --baseline` overrides it):

    hydra:
      callbacks:
        sweep_run:
          baseline: labels=sparse,loss=crossentropy   # the varying overrides of one variant, any order
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xentlab.tracking import naming
from xentlab.tracking.store import BASELINE_TAG, ERROR_TAG, ROLE_TAG, SWEEP_KEY_TAG, SWEEP_TAG, mask_value

SWEEP_FILE = "sweep.json"
SEED_KEY = naming.SEED_KEY
SWEEP_FUNCTIONS = ("range(", "choice(", "interval(", "glob(")
STAGE_KEYS = ("sweep.stage", "sweep.trial")  # set by a tuned sweep on its jobs (xentlab.cli.tuned)


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def varying_keys(overrides: list[str], sweeper_params: dict[str, Any] | None) -> list[str]:
    """Keys whose value differs between jobs: comma lists and sweep functions on the command line, plus
    every grid entry of `hydra.sweeper.params` with more than one value."""
    keys = []
    for item in overrides:
        key, _, value = item.partition("=")
        if "," in value or value.startswith(SWEEP_FUNCTIONS):
            keys.append(key.lstrip("+~"))
    fixed = {item.partition("=")[0].lstrip("+~") for item in overrides}
    for key, value in (sweeper_params or {}).items():
        # A grid entry narrowed to one value on the command line (the command line wins) no longer varies.
        if key.lstrip("+~") in fixed and key.lstrip("+~") not in keys:
            continue
        if "," in str(value) or str(value).startswith(SWEEP_FUNCTIONS):
            keys.append(key.lstrip("+~"))
    return sorted(set(keys))


def job_variant(task_overrides: list[str], varying: list[str]) -> dict[str, str]:
    """The variant a sweep job runs, from its overrides that vary: its short name (tag `xentlab.variant`, the run
    name's first part) and its overrides (tag `xentlab.variant_overrides`; what a baseline names)."""
    chosen = [o for o in task_overrides if _key(o) in varying]
    return {"variant": naming.variant_name(chosen), "variant_overrides": naming.variant_overrides(chosen)}


def _masked(key: str, value: str) -> str:
    """A param value as tracking.flatten_params writes it (xentlab.masking.mask_value)."""
    return mask_value(key, value)


def sweep_params(overrides: list[str], sweeper_params: dict[str, Any] | None) -> dict[str, str]:
    """The parent run's params: `sweep.<key>` per grid entry and `sweep.override.<i>` per command-line
    override, with secrets masked (`tracking.api_token=abc` -> `tracking.api_token=***`)."""
    # MLflow param names allow no "+" or "~": `+setup` is logged as sweep.setup.
    params = {f"sweep.{k.lstrip('+~')}": _masked(k.lstrip("+~"), str(v)) for k, v in (sweeper_params or {}).items()}
    for i, item in enumerate(overrides):
        key, sep, value = item.partition("=")
        params[f"sweep.override.{i}"] = f"{key}{sep}{_masked(key.lstrip('+~'), value)}" if sep else item
    return {k[:250]: v for k, v in params.items()}


def read_sweep_file(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def sweep_job(sweep_dir: str | os.PathLike, task_overrides: list[str], job_num: int) -> dict[str, Any] | None:
    """For a job of a multirun sweep: its parent run, sweep id, variant (`job_variant`) and run name
    (`<variant> s<seed>`, the seed of the overrides; naming.job_run_name uses the config's); None when the sweep has
    no parent run (launched without the SweepRun callback)."""
    info = read_sweep_file(sweep_dir)
    if info is None:
        return None
    variant = job_variant(task_overrides, info["varying"])
    seeds = [o.partition("=")[2] for o in task_overrides if _key(o) == SEED_KEY]
    folds = [o.partition("=")[2] for o in task_overrides if _key(o) == naming.FOLD_KEY]
    name = (naming.run_name(variant["variant"], seeds[0], folds[0] if folds else None) if seeds
            else f"{variant['variant']} job{job_num}")
    # The job within its sweep, the same in every attempt whatever the run is named: its varying overrides (and a
    # tuned sweep's stage and trial: the trials of a variant share its overrides and tuning seed).
    stage = {_key(o): o.partition("=")[2] for o in task_overrides if _key(o) in STAGE_KEYS}
    job = ",".join(sorted((o for o in task_overrides if _key(o) in [*info["varying"], *STAGE_KEYS]), key=_key))
    if stage.get("sweep.trial") is not None:
        name = f"{variant['variant'][:22]} t{stage['sweep.trial']}"
    return {**info, **variant, "name": name, "job": job or f"job{job_num}", "stage": stage.get("sweep.stage"),
            "trial": stage.get("sweep.trial")}


def parent_source_tags() -> dict[str, str]:
    """The parent run's source tags, as its children carry them: git commit, dirty flag, library versions."""
    from xentlab.tracking.runs import source_tags

    return source_tags()


def print_parent_link(client, uri: str, parent_id: str) -> None:
    """Where the sweep's answer is: the parent run's page in the MLflow UI (Model-training view; credentials of a
    server URI masked)."""
    from xentlab.tracking.store import ui_url  # not tracking.runs: xentlab-compare must not import TensorFlow

    experiment_id = client.get_run(parent_id).info.experiment_id
    hint = " (after `make ui`)" if not uri.startswith(("http://", "https://")) else ""
    print(f"sweep verdict and report: {ui_url(uri, experiment_id, parent_id)}{hint}", flush=True)


def _tally(outcomes: list[dict[str, Any]]) -> str:
    """"4 jobs: 1 trained, 2 reused, 1 failed" for the jobs of this invocation."""
    counts = {status: sum(o["status"] == status for o in outcomes) for status in ("trained", "reused", "failed")}
    return f"{len(outcomes)} jobs: " + ", ".join(f"{n} {status}" for status, n in counts.items())


class SweepRun(Callback):
    """Creates or continues the parent run before any job starts and finishes it with the report after the last one.

    A sweep whose key (tracking.sweeps.sweep_key) matches an existing parent continues it; `trainer.resume=never`
    starts a fresh one. The parent ends FINISHED (every job finished; report logged), FAILED (the report over the
    FINISHED children is logged all the same; tags `xentlab.failed_jobs` and `xentlab.error` say which jobs did not
    finish, or why the report failed), or KILLED (Ctrl-C or SIGTERM stopped the sweep).

    Args:
        baseline: the variant the report compares the others with (a preset sets it, see the module docstring).
    """

    def __init__(self, baseline: str | None = None) -> None:
        self.baseline = baseline
        self.parent_id: str | None = None
        self.uri: str | None = None
        self.interrupted: str | None = None
        self.attempt = ""
        self._previous_sigint: Any = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Creates the parent run and sweep.json; if that fails the sweep stops before any job runs (Hydra would
        only warn and launch jobs without a parent)."""
        try:
            self._start(config)
        except Exception as err:  # noqa: BLE001 - reported and turned into a stop, whatever it was
            from xentlab.tracking.store import mask_text

            if self.parent_id is not None and self.uri is not None:
                from mlflow.tracking import MlflowClient

                MlflowClient(self.uri).set_tag(self.parent_id, ERROR_TAG, mask_text(f"{type(err).__name__}: {err}"))
                MlflowClient(self.uri).set_terminated(self.parent_id, "FAILED")
            print(f"\nxentlab: the sweep could not start: {mask_text(str(err)).splitlines()[0]}", file=sys.stderr,
                  flush=True)
            raise SystemExit(2) from None

    def _start(self, config: DictConfig) -> None:
        from mlflow.tracking import MlflowClient

        from xentlab.tracking import sweeps
        from xentlab.tracking.store import resolve_tracking_uri, setup_experiment

        # Store and experiment exist before any job starts: parallel jobs on a fresh SQLite store would
        # otherwise race on MLflow's schema creation.
        self.uri = resolve_tracking_uri(config.tracking.uri, Path.cwd())
        experiment_id = setup_experiment(self.uri, config.tracking.experiment)
        overrides = list(config.hydra.overrides.task)
        params_node = config.hydra.sweeper.get("params")
        sweeper_params = OmegaConf.to_container(params_node, resolve=False) if params_node else {}
        client = MlflowClient(self.uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = self._open_parent(client, experiment_id, overrides, sweeper_params, sweep_dir,
                                     fresh=str(config.trainer.resume) == "never")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.attempt = uuid.uuid4().hex[:8]  # this invocation: its jobs' outcome files carry it
        os.environ[sweeps.ATTEMPT_ENV] = self.attempt
        (sweep_dir / SWEEP_FILE).write_text(json.dumps({
            "parent_run_id": self.parent_id, "sweep_id": sweep_id, "tracking_uri": self.uri,
            "experiment_id": experiment_id, "varying": varying_keys(overrides, sweeper_params),
            "attempt": self.attempt,
        }, indent=2))
        self._watch_interrupts()
        atexit.register(self._end_unfinished)

    def _open_parent(self, client, experiment_id: str, overrides: list[str], sweeper_params: dict[str, Any],
                     sweep_dir: Path, *, fresh: bool) -> str:
        """Continues the parent of this sweep's key (tracking.sweeps) or creates one; returns the sweep id."""
        from xentlab.tracking import sweeps

        key = sweeps.sweep_key(self.uri, client.get_experiment(experiment_id).name, overrides, sweeper_params)
        existing = sweeps.parents_of(client, experiment_id, key)
        params = sweep_params(overrides, sweeper_params)
        # The latest command (masked), as children carry theirs: params keep the first attempt's grid.
        command = " ".join(["xentlab-train", "-m", *(params[f"sweep.override.{i}"] for i in range(len(overrides)))])
        tags = {"xentlab.sweep_dir": str(sweep_dir.resolve()), "xentlab.command": command, **parent_source_tags()}
        if self.baseline:  # the preset's (or the command's) baseline, also when a rerun changes it
            tags[BASELINE_TAG] = str(self.baseline)
        if existing and not fresh:
            parent = existing[0]
            self.parent_id = parent.info.run_id
            sweeps.reopen_parent(client, parent, tags)
            for name, value in params.items():  # a param is written once: the first attempt's grid stays
                if name not in parent.data.params:
                    client.log_param(self.parent_id, name, value)
            sweep_id = parent.data.tags[SWEEP_TAG]
            print(f"sweep {sweep_id}: continuing parent MLflow run {self.parent_id} (same sweep key {key}; "
                  "FINISHED jobs are reused; trainer.resume=never starts a fresh sweep)", flush=True)
            return sweep_id
        sweep_id = uuid.uuid4().hex[:12]
        tags.update({SWEEP_TAG: sweep_id, ROLE_TAG: "sweep", SWEEP_KEY_TAG: key})
        self.parent_id = client.create_run(experiment_id, run_name=f"sweep/{sweep_id}", tags=tags).info.run_id
        winner = sweeps.settle_parent(client, experiment_id, key, self.parent_id, {r.info.run_id for r in existing})
        if winner != self.parent_id:  # the same sweep started at the same moment elsewhere: join it
            self.parent_id = winner
            sweep_id = client.get_run(winner).data.tags[SWEEP_TAG]
            print(f"sweep {sweep_id}: joining parent MLflow run {winner}, started at the same moment", flush=True)
            return sweep_id
        for name, value in params.items():
            client.log_param(self.parent_id, name, value)
        print(f"sweep {sweep_id}: parent MLflow run {self.parent_id}", flush=True)
        return sweep_id

    def _watch_interrupts(self) -> None:
        """Remembers a Ctrl-C (SIGINT) that reaches this process, then lets it act as before."""
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):  # SIGINT ignored (a background job) or left to the system: keep it so
            return

        def handler(signum, frame):
            self.interrupted = "KeyboardInterrupt: the sweep was stopped by the user (Ctrl-C)"
            return previous(signum, frame)

        try:
            signal.signal(signal.SIGINT, handler)
            self._previous_sigint = previous
        except ValueError:  # not the main thread: the children's KILLED status still tells (see _end_unfinished)
            pass

    def _restore_interrupts(self) -> None:
        if self._previous_sigint is not None:
            try:
                signal.signal(signal.SIGINT, self._previous_sigint)
            except ValueError:  # not the main thread
                pass
            self._previous_sigint = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The report over the current children, the parent's status, one line per failed job; exits 1 when a job
        failed (the report is written all the same)."""
        from mlflow.tracking import MlflowClient

        from xentlab.report.compare import write_report
        from xentlab.tracking import sweeps

        client = MlflowClient(self.uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        failed: list[sweeps.FailedJob] = []
        try:
            experiment_id = client.get_run(self.parent_id).info.experiment_id
            outcomes = sweeps.read_outcomes(sweep_dir, self.attempt)
            failed = sweeps.failed_jobs(sweeps.current_children(client, experiment_id, self.parent_id), outcomes)
            report = write_report(self.uri, parent_run_id=self.parent_id, out_dir=sweep_dir / "report")
            print(report.markdown, flush=True)
            print(f"\nsweep {report.sweep_id}: {_tally(outcomes)}", flush=True)
            print_parent_link(client, self.uri, self.parent_id)
            status = "FAILED" if failed else "FINISHED"
        except Exception as err:  # the report must not leave the parent RUNNING
            client.set_tag(self.parent_id, ERROR_TAG, f"{type(err).__name__}: {err}"[:5000])
            status = "FAILED"
        except BaseException as err:  # Ctrl-C or SIGTERM while the report was being written
            client.set_tag(self.parent_id, ERROR_TAG, f"{type(err).__name__}: stopped while writing the report; "
                           "`xentlab-compare` writes it again")
            client.set_terminated(self.parent_id, "KILLED")
            self.parent_id = None
            raise
        finally:
            self._restore_interrupts()
        if failed:
            self._record_failures(client, failed)
        client.set_terminated(self.parent_id, status)
        self.parent_id = None
        if failed:
            raise SystemExit(1)

    def _record_failures(self, client, failed: list) -> None:
        """Tags the parent with the failure count and a summary, and prints one line per failed job."""
        from xentlab.tracking.store import FAILED_JOBS_TAG

        summary = (f"{len(failed)} job(s) did not finish; the report covers the FINISHED ones. "
                   + "; ".join(f.line() for f in failed))
        client.set_tag(self.parent_id, FAILED_JOBS_TAG, str(len(failed)))
        client.set_tag(self.parent_id, ERROR_TAG, summary[:5000])
        lines = [f"\nxentlab: {len(failed)} job(s) of this sweep did not finish; the report covers the FINISHED ones "
                 "(the parent run ends FAILED). The same command runs them again and reuses the others:"]
        lines += [f"  {f.line()}" for f in failed]
        print("\n".join(lines), file=sys.stderr, flush=True)

    def _end_unfinished(self) -> None:
        """The sweep stopped before on_multirun_end: KILLED when it was interrupted (Ctrl-C here, or a job
        ended KILLED: Ctrl-C or SIGTERM in its process), else FAILED (a job failed)."""
        if self.parent_id is None:
            return
        from mlflow.tracking import MlflowClient

        from xentlab.tracking.sweeps import current_children

        client = MlflowClient(self.uri)
        parent = client.get_run(self.parent_id)
        children = current_children(client, parent.info.experiment_id, self.parent_id)
        killed = [r for r in children if r.info.status == "KILLED"]
        if ERROR_TAG in parent.data.tags and not self.interrupted and not killed:  # the sweep said why it stopped
            client.set_terminated(self.parent_id, "FAILED")
            self.parent_id = None
            return
        if self.interrupted or killed:
            reason = self.interrupted or (f"the sweep was stopped: job {killed[0].info.run_name} ended KILLED "
                                          f"({killed[0].data.tags.get(ERROR_TAG, 'Ctrl-C or SIGTERM')})")
            client.set_tag(self.parent_id, ERROR_TAG, reason[:5000])
            client.set_terminated(self.parent_id, "KILLED")
        else:
            reason = ("the sweep stopped early: a job failed (see its child run)" if children else
                      "the sweep stopped before any job ran: the launcher failed (see the console)")
            client.set_tag(self.parent_id, ERROR_TAG, reason)
            client.set_terminated(self.parent_id, "FAILED")
        self.parent_id = None
