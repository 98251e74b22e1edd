"""Hydra callback for multirun sweeps: one parent MLflow run per sweep, the comparison report at the end.

The parent run id is handed to the jobs explicitly through `<sweep dir>/sweep.json`, which works for jobs in
the same process (basic launcher) and in other processes or hosts sharing the folder (joblib, submitit).
"""

from __future__ import annotations

import atexit
import json
import os
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xentlab.store import ROLE_TAG, SWEEP_TAG

SWEEP_FILE = "sweep.json"


def varying_keys(overrides: list[str], sweeper_params: dict[str, Any] | None) -> list[str]:
    """Keys whose value differs between jobs: comma lists and sweep functions on the command line, plus
    every grid entry of `hydra.sweeper.params` with more than one value."""
    keys = []
    for item in overrides:
        key, _, value = item.partition("=")
        if "," in value or value.startswith(("range(", "choice(", "interval(", "glob(")):
            keys.append(key.lstrip("+~"))
    for key, value in (sweeper_params or {}).items():
        if "," in str(value) or str(value).startswith(("range(", "choice(", "interval(", "glob(")):
            keys.append(key.lstrip("+~"))
    return sorted(set(keys))


def read_sweep_file(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def sweep_job(sweep_dir: str | os.PathLike, task_overrides: list[str], job_num: int) -> dict[str, Any] | None:
    """For a job of a multirun sweep: its parent run, sweep id and run name (the overrides that vary); None when
    the sweep has no parent run (launched without the SweepRun callback)."""
    info = read_sweep_file(sweep_dir)
    if info is None:
        return None
    varying = [o for o in task_overrides if o.partition("=")[0].lstrip("+~") in info["varying"]]
    return {**info, "name": ",".join(varying) or f"job{job_num}"}


class SweepRun(Callback):
    """Creates the parent run before any job starts and finishes it with the report after the last one."""

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        from xentlab.store import resolve_tracking_uri, setup_experiment
        from xentlab.tracking import flatten_params

        # Store and experiment exist before any job starts: parallel jobs on a fresh SQLite store would
        # otherwise race on MLflow's schema creation.
        self.uri = resolve_tracking_uri(config.tracking.uri, Path.cwd())
        experiment_id = setup_experiment(self.uri, config.tracking.experiment)
        overrides = list(config.hydra.overrides.task)
        params_node = config.hydra.sweeper.get("params")
        sweeper_params = OmegaConf.to_container(params_node, resolve=False) if params_node else {}
        sweep_id = uuid.uuid4().hex[:12]
        client = MlflowClient(self.uri)
        parent = client.create_run(
            experiment_id,
            run_name=f"sweep/{sweep_id}",
            tags={SWEEP_TAG: sweep_id, ROLE_TAG: "sweep",
                  "xentlab.sweep_dir": str(Path(config.hydra.sweep.dir).resolve())},
        )
        self.parent_id = parent.info.run_id
        sweep_params = {f"sweep.{k}": str(v) for k, v in (sweeper_params or {}).items()}
        sweep_params.update({f"sweep.override.{i}": o for i, o in enumerate(overrides)})
        for key, value in flatten_params(sweep_params).items():
            client.log_param(self.parent_id, key[:250], value)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps({
            "parent_run_id": self.parent_id, "sweep_id": sweep_id, "tracking_uri": self.uri,
            "experiment_id": experiment_id, "varying": varying_keys(overrides, sweeper_params),
        }, indent=2))
        atexit.register(self._fail_if_unfinished)
        print(f"sweep {sweep_id}: parent MLflow run {self.parent_id}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        from xentlab.compare import write_report

        client = MlflowClient(self.uri)
        try:
            out_dir = Path(config.hydra.sweep.dir) / "report"
            report = write_report(self.uri, parent_run_id=self.parent_id, out_dir=out_dir)
            print(report.markdown, flush=True)
            status = "FINISHED"
        except Exception as err:  # the report must not leave the parent RUNNING
            client.set_tag(self.parent_id, "xentlab.error", f"{type(err).__name__}: {err}"[:5000])
            status = "FAILED"
        client.set_terminated(self.parent_id, status)
        self.parent_id = None

    def _fail_if_unfinished(self) -> None:
        """A job raised and Hydra stopped the sweep before on_multirun_end: say so on the parent."""
        if self.parent_id is None:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        client.set_tag(self.parent_id, "xentlab.error", "the sweep stopped early: a job failed (see its child run)")
        client.set_terminated(self.parent_id, "FAILED")
