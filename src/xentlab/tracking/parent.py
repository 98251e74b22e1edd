"""A sweep's parent run from its start to its one end: the only place its status is set.

Opened before any job runs: created, continued (a parent of the same sweep key exists: tracking.sweeps), or joined
(the same sweep started at the same moment in another process). Ended once, with the truth: FINISHED (every job
finished, report logged), FAILED (tag `xentlab.error` says why; `xentlab.failed_jobs` how many jobs did not
finish) or KILLED (Ctrl-C or SIGTERM stopped the sweep). A parent is never left RUNNING.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from xentlab.tracking.store import ERROR_TAG, FAILED_JOBS_TAG, ROLE_TAG, SWEEP_KEY_TAG, SWEEP_TAG, mask_text


def parents_of(client: MlflowClient, experiment_id: str, key: str) -> list[Run]:
    """Parent runs of sweep key `key`, newest first."""
    return client.search_runs([experiment_id], f"tags.`{SWEEP_KEY_TAG}` = '{key}' and tags.`{ROLE_TAG}` = 'sweep'",
                              order_by=["attributes.start_time DESC"])


def settle_parent(client: MlflowClient, experiment_id: str, key: str, mine: str, known: set[str]) -> str:
    """After creating parent `mine`: the one parent two commands started at once agree on.

    Every parent of `key` not in `known` (those that existed before) was created concurrently; the oldest (start
    time, then id) wins in every process that looks, and a losing process deletes its own parent.
    """
    fresh = [r for r in parents_of(client, experiment_id, key) if r.info.run_id not in known]
    winner = min(fresh, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if fresh else mine
    if winner != mine:
        client.delete_run(mine)
    return winner


@dataclass
class SweepParent:
    """The parent run of one invocation of a sweep command.

    Attributes:
        client: the store's client.
        run_id: the parent run.
        sweep_id: its tag `xentlab.sweep_id`.
        how: "created", "continued" or "joined" (see the module docstring).
    """

    client: MlflowClient
    run_id: str
    sweep_id: str
    how: str = "created"
    ended: bool = False

    @classmethod
    def open(cls, client: MlflowClient, experiment_id: str, key: str, *, tags: dict[str, str],
             params: dict[str, str], fresh: bool) -> SweepParent:
        """Continues the newest parent of sweep key `key` (unless `fresh`) or creates one with `tags` and `params`."""
        existing = parents_of(client, experiment_id, key)
        if existing and not fresh:
            parent = existing[0]
            _reopen(client, parent, tags)
            for name, value in params.items():  # a param is written once: the first attempt's grid stays
                if name not in parent.data.params:
                    client.log_param(parent.info.run_id, name, value)
            return cls(client, parent.info.run_id, parent.data.tags[SWEEP_TAG], "continued")
        sweep_id = uuid.uuid4().hex[:12]
        tags = {**tags, SWEEP_TAG: sweep_id, ROLE_TAG: "sweep", SWEEP_KEY_TAG: key}
        mine = client.create_run(experiment_id, run_name=f"sweep/{sweep_id}", tags=tags).info.run_id
        winner = settle_parent(client, experiment_id, key, mine, {r.info.run_id for r in existing})
        if winner != mine:  # the same sweep started at the same moment elsewhere: join it
            return cls(client, winner, client.get_run(winner).data.tags[SWEEP_TAG], "joined")
        for name, value in params.items():
            client.log_param(mine, name, value)
        return cls(client, mine, sweep_id)

    def end(self, status: str, error: str | None = None, failed_jobs: int | None = None) -> None:
        """Ends the parent once: `status` with its reason (masked) and the count of jobs that did not finish."""
        if self.ended:
            return
        if error:
            self.client.set_tag(self.run_id, ERROR_TAG, mask_text(error)[:5000])
        if failed_jobs:
            self.client.set_tag(self.run_id, FAILED_JOBS_TAG, str(failed_jobs))
        self.client.set_terminated(self.run_id, status)
        self.ended = True

    def end_early(self, children: list[Run], interrupted: str | None) -> None:
        """The sweep stopped before its end: KILLED when it was interrupted (Ctrl-C here, or a job ended KILLED:
        Ctrl-C or SIGTERM in its process), else FAILED: with the reason the sweep gave (a refused setting), or a
        job failed, or the launcher did."""
        killed = [r for r in children if r.info.status == "KILLED"]
        if not (interrupted or killed) and ERROR_TAG in self.client.get_run(self.run_id).data.tags:
            self.end("FAILED")  # the sweep said why it stopped
        elif interrupted or killed:
            self.end("KILLED", interrupted or (f"the sweep was stopped: job {killed[0].info.run_name} ended KILLED "
                                               f"({killed[0].data.tags.get(ERROR_TAG, 'Ctrl-C or SIGTERM')})"))
        else:
            self.end("FAILED", "the sweep stopped early: a job failed (see its child run)" if children else
                     "the sweep stopped before any job ran: the launcher failed (see the console)")


def _reopen(client: MlflowClient, parent: Run, tags: dict[str, str]) -> None:
    """A continued parent is RUNNING again, without the last attempt's error and failure count."""
    for stale in (ERROR_TAG, FAILED_JOBS_TAG):
        if stale in parent.data.tags:
            client.delete_tag(parent.info.run_id, stale)
    for name, value in tags.items():
        client.set_tag(parent.info.run_id, name, value)
    client.update_run(parent.info.run_id, status="RUNNING")
