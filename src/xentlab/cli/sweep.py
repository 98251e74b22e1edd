"""Hydra callback for multirun sweeps: one parent MLflow run per sweep, the comparison report at the end.

The parent run id is handed to the jobs explicitly through a record in the sweep folder, which works for jobs in
the same process (basic launcher) and in other processes or hosts sharing the folder (joblib, submitit, Ray). Each
invocation writes its own record, `sweep-<attempt>.json`, and its jobs read that one (the attempt id reaches them
through the environment): two sweeps that share a folder (started in the same second, or given the same
`hydra.sweep.dir`) never take each other's parent. `sweep.json` holds the latest record, for jobs on other hosts.
Running the same sweep again continues its parent; which jobs are reused, resumed or run again is decided in each
job (xentlab.tracking.sweeps); the parent's status has one owner (xentlab.tracking.parent).

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
import logging
import os
import signal
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xentlab.errors import ConfigError, ExpectedError
from xentlab.tracking import naming
from xentlab.tracking.store import BASELINE_TAG, mask_text, mask_value
from xentlab.tracking.sweeps import ATTEMPT_ENV

SWEEP_FILE = "sweep.json"  # the latest record of the folder (jobs on other hosts read it)
RECORD_FILE = "sweep-{attempt}.json"  # one invocation's record
SEED_KEY = naming.SEED_KEY
TRACKING_PREFIXES = ("tracking.", "tracking/")  # store, experiment, tags: never a sweep axis
STAGE_KEYS = ("sweep.stage", "sweep.trial")  # set by a tuned sweep on its jobs (xentlab.cli.tuned)


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _is_sweep(key: str, value: Any) -> bool:
    """Whether `key=value` launches several jobs, as Hydra reads it: a comma list or a sweep function; a quoted
    value (`'a,b'`) or an escaped comma (`a\\,b`) is one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(f"{key}={value}").is_sweep_override()
    except Exception:  # noqa: BLE001 - Hydra refuses the override itself, with its own message
        return False


def varying_keys(overrides: list[str], sweeper_params: dict[str, Any] | None) -> list[str]:
    """Keys whose value differs between jobs: sweeps on the command line, plus every grid entry of
    `hydra.sweeper.params` with more than one value that the command line does not narrow.

    Raises:
        ConfigError: a tracking setting varies (a store, experiment or tag per job is not a comparison).
    """
    keys = [_key(item) for item in overrides if "=" in item and _is_sweep(*item.split("=", 1))]
    fixed = {_key(item) for item in overrides}
    for key, value in (sweeper_params or {}).items():
        # A grid entry narrowed to one value on the command line (the command line wins) no longer varies.
        if _key(key) in fixed and _key(key) not in keys:
            continue
        if _is_sweep(key, value):
            keys.append(_key(key))
    tracking = sorted({k for k in keys if k.startswith(TRACKING_PREFIXES)})
    if tracking:
        raise ConfigError(
            f"{', '.join(tracking)} varies in this sweep, but tracking settings (store, experiment, tags) are never "
            "a sweep axis: the sweep's runs and report live in one store and experiment. A value that holds a comma "
            "is one value when quoted: \"tracking.uri='http://user:pa,ss@host:5000'\"; for several stores, run one "
            "sweep per store")
    return sorted(set(keys))


def job_variant(task_overrides: list[str], varying: list[str]) -> dict[str, str]:
    """The variant a sweep job runs, from its overrides that vary: its short name (tag `xentlab.variant`, the run
    name's first part) and its overrides (tag `xentlab.variant_overrides`; what a baseline names)."""
    chosen = [o for o in task_overrides if _key(o) in varying]
    return {"variant": naming.variant_name(chosen), "variant_overrides": naming.variant_overrides(chosen)}


def sweep_params(overrides: list[str], sweeper_params: dict[str, Any] | None) -> dict[str, str]:
    """The parent run's params: `sweep.<key>` per grid entry and `sweep.override.<i>` per command-line
    override, with secrets masked (`tracking.api_token=abc` -> `tracking.api_token=***`)."""
    # MLflow param names allow no "+" or "~": `+setup` is logged as sweep.setup.
    params = {f"sweep.{_key(k)}": mask_value(_key(k), str(v)) for k, v in (sweeper_params or {}).items()}
    for i, item in enumerate(overrides):
        key, sep, value = item.partition("=")
        params[f"sweep.override.{i}"] = f"{key}{sep}{mask_value(_key(key), value)}" if sep else mask_text(item)
    return {k[:250]: v for k, v in params.items()}


# ---------------------------------------------------------------------------------------------- the sweep record
def write_record(sweep_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """This invocation's record (`sweep-<attempt>.json`) and the folder's latest (`sweep.json`), each replaced
    whole: a job never reads half a file."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2)
    attempt = record.get("attempt")
    for name in ([RECORD_FILE.format(attempt=attempt)] if attempt else []) + [SWEEP_FILE]:
        tmp = sweep_dir / f".{name}.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, sweep_dir / name)


def read_sweep_file(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The record of the invocation this process belongs to (its attempt id in the environment), else the
    folder's latest; None when the sweep runs without the SweepRun callback."""
    attempt = os.environ.get(ATTEMPT_ENV)
    for name in ([RECORD_FILE.format(attempt=attempt)] if attempt else []) + [SWEEP_FILE]:
        path = Path(sweep_dir) / name
        if path.is_file():
            return json.loads(path.read_text())
    return None


def sweep_job(sweep_dir: str | os.PathLike, task_overrides: list[str], job_num: int) -> dict[str, Any] | None:
    """For a job of a multirun sweep: its parent run, sweep id, variant (`job_variant`) and run name
    (`<variant> s<seed>`, the seed of the overrides; naming.job_run_name uses the config's); None when the sweep has
    no record (launched without the SweepRun callback). A dry-run sweep's record names no parent."""
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


# ---------------------------------------------------------------------------------------------- what is printed
def parent_source_tags() -> dict[str, str]:
    """The parent run's source tags, as its children carry them: git commit, dirty flag, library versions (from
    xentlab.tracking.source, not tracking.runs: the parent never imports TensorFlow)."""
    from xentlab.tracking.source import source_tags

    return source_tags()


def print_parent_link(client, uri: str, parent_id: str) -> None:
    """Where the sweep's answer is: the parent run's page in the MLflow UI (Model-training view; credentials of a
    server URI masked)."""
    from xentlab.tracking.store import ui_url  # not tracking.runs: xentlab-compare must not import TensorFlow

    experiment_id = client.get_run(parent_id).info.experiment_id
    hint = " (after `make ui`)" if not uri.startswith(("http://", "https://")) else ""
    print(f"sweep verdict and report: {ui_url(uri, experiment_id, parent_id)}{hint}", flush=True)


def _tally(outcomes: list[dict[str, Any]]) -> str:
    """"4 jobs: 1 trained, 2 reused, 1 failed" for the jobs of this invocation, then where reused runs came from
    when another sweep made them ("; 2 reused from sweep 3f9c2a1b7d4e")."""
    counts = {status: sum(o["status"] == status for o in outcomes) for status in ("trained", "reused", "failed")}
    text = f"{len(outcomes)} jobs: " + ", ".join(f"{n} {status}" for status, n in counts.items())
    sources: dict[str, int] = {}
    for o in outcomes:
        if o["status"] == "reused" and o.get("from_sweep"):
            sources[o["from_sweep"]] = sources.get(o["from_sweep"], 0) + 1
    return text + "".join(f"; {n} reused from sweep {sweep}" for sweep, n in sources.items())


class _MaskedRecords:
    """A log record factory that masks the messages of Hydra's loggers: the launchers print each job's overrides
    (`#0 : tracking.uri=http\\://u\\:PASSWORD@host ...`). A factory, because Hydra reconfigures logging per job."""

    def __init__(self, previous) -> None:
        self.previous = previous

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        if record.name.startswith(("hydra", "hydra_plugins")):
            record.msg, record.args = mask_text(record.getMessage()), None
        return record


def mask_launch_lines() -> None:
    """Installs `_MaskedRecords` once per process."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _MaskedRecords):
        logging.setLogRecordFactory(_MaskedRecords(factory))


def report_error(err: BaseException, what: str) -> int:
    """Prints an error of the sweep command itself as xentlab-train prints a job's: the one block for an expected
    error (exit status 2), the masked traceback of a bug (1). Returns the exit status."""
    from xentlab.cli.console import COMMAND_HINT, error_block

    if isinstance(err, ExpectedError) and os.environ.get("HYDRA_FULL_ERROR") != "1":
        sys.stderr.write(error_block(err, hint=COMMAND_HINT).replace("\nxentlab: ", f"\nxentlab: {what}: ", 1))
        code = 2
    else:
        sys.stderr.write(f"\nxentlab: {what}:\n" + mask_text("".join(traceback.format_exception(err))))
        code = 1
    sys.stderr.flush()
    return code


# ---------------------------------------------------------------------------------------------- the callback
class SweepRun(Callback):
    """Opens the parent run before any job starts and ends it with the report after the last one.

    A sweep whose key (tracking.sweeps.sweep_key) matches an existing parent continues it; `trainer.resume=never`
    starts a fresh one; a dry run (`trainer.dry_run=true`) makes none. The parent ends FINISHED (every job finished;
    report logged), FAILED (the report over the FINISHED children is logged all the same; tags
    `xentlab.failed_jobs` and `xentlab.error` say which jobs did not finish, or why the report failed), or KILLED
    (Ctrl-C or SIGTERM stopped the sweep); the command exits non-zero unless the parent ends FINISHED.

    Args:
        baseline: the variant the report compares the others with (a preset sets it, see the module docstring).
    """

    def __init__(self, baseline: str | None = None) -> None:
        self.baseline = baseline
        self.parent: Any = None  # xentlab.tracking.parent.SweepParent
        self.uri: str | None = None
        self.interrupted: str | None = None
        self.attempt = ""
        self.dry_run = False
        self._previous_handlers: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Opens the parent run and writes the sweep record; if that fails the sweep stops before any job runs
        (Hydra would only warn and launch jobs without a parent)."""
        mask_launch_lines()
        try:
            self._start(config)
        except Exception as err:  # noqa: BLE001 - reported (block or traceback) and turned into a stop
            if self.parent is not None:
                self.parent.end("FAILED", f"{type(err).__name__}: {err}")
            raise SystemExit(report_error(err, "the sweep could not start")) from None

    def _start(self, config: DictConfig) -> None:
        from mlflow.tracking import MlflowClient

        from xentlab.tracking.store import resolve_tracking_uri, setup_experiment

        overrides = list(config.hydra.overrides.task)
        params_node = config.hydra.sweeper.get("params")
        sweeper_params = OmegaConf.to_container(params_node, resolve=False) if params_node else {}
        varying = varying_keys(overrides, sweeper_params)
        self.attempt = uuid.uuid4().hex[:8]  # this invocation: its record and its jobs' outcome files carry it
        os.environ[ATTEMPT_ENV] = self.attempt
        record = {"varying": varying, "attempt": self.attempt}
        self.dry_run = bool(config.trainer.dry_run)
        if not self.dry_run:  # a dry run validates each job and logs nothing: no parent
            # Store and experiment exist before any job starts: parallel jobs on a fresh SQLite store would
            # otherwise race on MLflow's schema creation.
            self.uri = resolve_tracking_uri(config.tracking.uri, Path.cwd())
            experiment_id = setup_experiment(self.uri, config.tracking.experiment)
            self._open_parent(MlflowClient(self.uri), experiment_id, config, overrides, sweeper_params, varying)
            record |= {"parent_run_id": self.parent.run_id, "sweep_id": self.parent.sweep_id,
                       "tracking_uri": mask_text(self.uri), "experiment_id": experiment_id}
        write_record(Path(config.hydra.sweep.dir), record)
        if not self.dry_run:
            self._watch_interrupts()
            atexit.register(self._end_unfinished)

    def _open_parent(self, client, experiment_id: str, config: DictConfig, overrides: list[str],
                     sweeper_params: dict[str, Any], varying: list[str]) -> None:
        """Continues the parent of this sweep's key (tracking.sweeps) or creates one."""
        from xentlab.data.digest import DIGEST_PARAM, data_digest
        from xentlab.tracking import sweeps
        from xentlab.tracking.parent import SweepParent

        data = OmegaConf.to_container(config.data, resolve=True)
        digest = None if "data.path" in varying else data_digest(data, Path.cwd())
        key = sweeps.sweep_key(self.uri, config.tracking.experiment, overrides, sweeper_params, digest)
        params = sweep_params(overrides, sweeper_params) | ({f"sweep.{DIGEST_PARAM}": digest} if digest else {})
        # The latest command (masked), as children carry theirs: params keep the first attempt's grid.
        command = " ".join(["xentlab-train", "-m", *(params[f"sweep.override.{i}"] for i in range(len(overrides)))])
        tags = {"xentlab.sweep_dir": str(Path(config.hydra.sweep.dir).resolve()), "xentlab.command": command,
                **parent_source_tags()}
        if self.baseline:  # the preset's (or the command's) baseline, also when a rerun changes it
            tags[BASELINE_TAG] = str(self.baseline)
        self.parent = SweepParent.open(client, experiment_id, key, tags=tags, params=params,
                                       fresh=str(config.trainer.resume) == "never")
        sweep_id, run_id = self.parent.sweep_id, self.parent.run_id
        print({"created": f"sweep {sweep_id}: parent MLflow run {run_id}",
               "continued": f"sweep {sweep_id}: continuing parent MLflow run {run_id} (same sweep key {key}; FINISHED "
                            "jobs are reused; trainer.resume=never starts a fresh sweep)",
               "joined": f"sweep {sweep_id}: joining parent MLflow run {run_id}, started at the same moment",
               }[self.parent.how], flush=True)

    def _watch_interrupts(self) -> None:
        """Remembers a Ctrl-C or SIGTERM reaching this process, has the jobs in worker processes (joblib) end their
        runs KILLED, then lets the signal act as in a job (SIGTERM: `Terminated`, the one line and exit 143); a job
        run in this process installs its own SIGTERM handler (tracking.resume), which then takes over."""
        from xentlab.tracking.resume import Terminated

        def terminated(signum, frame):
            raise Terminated("SIGTERM: the sweep was stopped by the system (preemption, kill or a time limit)")

        for signum, reason in {signal.SIGINT: "KeyboardInterrupt: the sweep was stopped by the user (Ctrl-C)",
                               signal.SIGTERM: "Terminated: the sweep was stopped by the system (SIGTERM)"}.items():
            previous = signal.getsignal(signum)
            if signum == signal.SIGTERM and previous == signal.SIG_DFL:
                previous = terminated
            if not callable(previous):  # ignored (a background job's SIGINT) or left to the system: keep it so
                continue

            def handler(signum, frame, previous=previous, reason=reason):
                signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the runs' ending short
                self.interrupted = reason
                self._stop_worker_jobs(forward_after_s=0.0 if signum == signal.SIGTERM else 2.0)
                try:
                    return previous(signum, frame)
                except (KeyboardInterrupt, Terminated) as err:  # the one line (console.stopped_line) says what
                    if self.parent is not None:                 # was left; a job run here names its own run
                        err.xentlab_saved = (f"sweep {self.parent.sweep_id} (parent run {self.parent.run_id}) is "
                                             "KILLED, its running jobs' runs too, their checkpoints kept")
                    raise

            try:
                self._previous_handlers[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread: the children's KILLED status still tells (_end_unfinished)
                return

    def _stop_worker_jobs(self, forward_after_s: float, wait_s: float = 30.0) -> None:
        """Has the jobs running in joblib's workers end their runs KILLED, then stops the workers: waits until no
        child of the parent is RUNNING (at most `wait_s`), sending the workers SIGTERM (each job's own handler ends
        its run) after `forward_after_s`: at once for SIGTERM, which reaches only this process; after 2 s for a
        Ctrl-C, which a terminal also sends to the workers (a second signal would cut their runs' ending short)."""
        import time

        from xentlab.cli.workers import signal_workers, worker_pids
        from xentlab.tracking.sweeps import current_children

        pids = worker_pids()
        if not pids or self.parent is None:
            return
        client = self.parent.client
        experiment_id = client.get_run(self.parent.run_id).info.experiment_id
        start = time.monotonic()
        while time.monotonic() - start < wait_s and any(
                c.info.status == "RUNNING" for c in current_children(client, experiment_id, self.parent.run_id)):
            if pids and time.monotonic() - start >= forward_after_s:
                signal_workers(signal.SIGTERM, pids)
                pids = []
            time.sleep(0.25)
        signal_workers(signal.SIGKILL)  # their runs have ended: left alone, idle workers would outlive the command

    def _restore_interrupts(self) -> None:
        for signum, previous in self._previous_handlers.items():
            try:
                signal.signal(signum, previous)
            except ValueError:  # not the main thread
                pass
        self._previous_handlers = {}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The report over the current children, the parent's status, one line per failed job; exits 1 when a job
        failed (the report is written all the same), 2 or 1 when the report itself failed (an expected error or a
        bug, printed as xentlab-train prints them)."""
        from xentlab.tracking import sweeps

        sweep_dir = Path(config.hydra.sweep.dir)
        outcomes = sweeps.read_outcomes(sweep_dir, self.attempt)
        if self.dry_run:
            return self._end_dry_run(outcomes)
        try:
            failed = self._report(sweep_dir, outcomes)
        except Exception as err:  # noqa: BLE001 - the parent ends FAILED saying why, the command says it too
            self.parent.end("FAILED", f"{type(err).__name__}: {err}")
            raise SystemExit(report_error(err, "the sweep's report failed")) from None
        except BaseException:  # Ctrl-C or SIGTERM while the report was being written
            self.parent.end("KILLED", "stopped while writing the report; `xentlab-compare` writes it again")
            raise
        finally:
            self._restore_interrupts()
        if failed:
            self._record_failures(failed)
            raise SystemExit(1)
        self.parent.end("FINISHED")

    def _report(self, sweep_dir: Path, outcomes: list[dict[str, Any]]) -> list:
        """Writes and prints the report and the tally; returns the jobs that did not finish."""
        from xentlab.report.compare import write_report
        from xentlab.tracking import sweeps

        client, parent_id = self.parent.client, self.parent.run_id
        experiment_id = client.get_run(parent_id).info.experiment_id
        failed = sweeps.failed_jobs(sweeps.current_children(client, experiment_id, parent_id), outcomes)
        # Two sweeps in one folder each keep their own report files.
        shared = len(list(sweep_dir.glob(RECORD_FILE.format(attempt="*")))) > 1
        out = sweep_dir / (f"report-{self.parent.sweep_id}" if shared else "report")
        report = write_report(self.uri, parent_run_id=parent_id, out_dir=out)
        print(report.markdown, flush=True)
        print(f"\nsweep {report.sweep_id}: {_tally(outcomes)}", flush=True)
        print_parent_link(client, self.uri, parent_id)
        return failed

    def _record_failures(self, failed: list) -> None:
        """Ends the parent FAILED with the failure count and a summary, and prints one line per failed job."""
        summary = (f"{len(failed)} job(s) did not finish; the report covers the FINISHED ones. "
                   + "; ".join(f.line() for f in failed))
        self.parent.end("FAILED", summary, failed_jobs=len(failed))
        lines = [f"\nxentlab: {len(failed)} job(s) of this sweep did not finish; the report covers the FINISHED ones "
                 "(the parent run ends FAILED). The same command runs them again and reuses the others:"]
        lines += [f"  {f.line()}" for f in failed]
        print("\n".join(lines), file=sys.stderr, flush=True)

    def _end_dry_run(self, outcomes: list[dict[str, Any]]) -> None:
        """One line for a dry-run sweep (no parent, nothing logged); exits 1 when a job's config or data was bad."""
        bad = [o for o in outcomes if o["status"] == "failed"]
        print(f"\ndry run: {len(outcomes)} jobs, {len(outcomes) - len(bad)} valid, {len(bad)} failed; nothing "
              "trained or logged (a dry run makes no parent run)", flush=True)
        if bad:
            print("\n".join(f"  job {o['name']}: {o.get('error', 'no message')}" for o in bad), file=sys.stderr,
                  flush=True)
            raise SystemExit(1)

    def _end_unfinished(self) -> None:
        """The sweep stopped before on_multirun_end (tracking.parent.SweepParent.end_early)."""
        if self.parent is None or self.parent.ended:
            return
        from xentlab.tracking.sweeps import current_children

        client = self.parent.client
        experiment_id = client.get_run(self.parent.run_id).info.experiment_id
        self.parent.end_early(current_children(client, experiment_id, self.parent.run_id), self.interrupted)
