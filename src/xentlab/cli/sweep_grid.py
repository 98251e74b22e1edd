"""What a sweep driver that looks at results needs from Hydra (xentlab.cli.tuned, xentlab.cli.until_decided): the
grid split into variants and seeds, batches of jobs launched through the configured launcher (basic, joblib,
submitit, Ray) with the value each job returned, and the sweep's parent run."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from xentlab.cli.sweep import SEED_KEY, job_variant, read_sweep_file, write_record
from xentlab.errors import ExpectedError


@dataclass
class Grid:
    """The jobs of a grid as variants and seeds.

    Attributes:
        variants: per variant its overrides (grid values and fixed overrides, the seed left out), in grid order.
        seeds: the grid's `trainer.seed` values ([] when the grid sets none).
    """

    variants: list[list[str]]
    seeds: list[str]


def split_grid(sweeper, arguments: list[str]) -> Grid:
    """The sweeper's params and the command line, expanded as Hydra's basic sweeper does, the seed axis apart."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    overrides = parser.parse_overrides([*sweeper._parse_config(), *arguments])
    seeds: list[str] = []
    rest = []
    for override in overrides:
        if override.get_key_element().lstrip("+~") == SEED_KEY:  # the command line comes last and wins
            seeds = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                     else [override.get_value_element_as_str()])
        else:
            rest.append(override)
    return Grid(BasicSweeper.split_arguments(rest, None)[0], seeds)


@dataclass
class Launches:
    """Launches batches of jobs in one sweep folder, numbering them on from batch to batch."""

    sweeper: Any
    returns: list = field(default_factory=list)
    next_job: int = 0

    def __post_init__(self) -> None:
        sweep_dir = Path(self.sweeper.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.sweeper.config, sweep_dir / "multirun.yaml")

    def run(self, batch: list[list[str]]) -> list[float]:
        """Runs the jobs of `batch` (overrides each); the value each returned (the final val_nll), NaN for a job that
        failed."""
        from hydra.core.utils import JobStatus

        if not batch:
            return []
        self.sweeper.validate_batch_is_legal(batch)
        results = self.sweeper.launcher.launch(batch, initial_job_idx=self.next_job)
        self.next_job += len(batch)
        self.returns.append(results)
        values = []
        for r in results:
            value = r.return_value if r.status == JobStatus.COMPLETED else None
            values.append(float(value) if isinstance(value, int | float) else math.nan)
        return values


@dataclass(frozen=True)
class Parent:
    """The sweep's parent run (made by the SweepRun callback) and how to name a variant as its children do."""

    run_id: str | None
    uri: str | None
    varying: list[str]

    @classmethod
    def of(cls, sweeper) -> Parent:
        """The parent of the sweep; the seed becomes one of the keys that vary between its jobs (sweep.json), as a
        grid over seeds would have made it: the driver adds seeds, and a job of another seed is another job."""
        sweep_dir = Path(sweeper.config.hydra.sweep.dir)
        info = read_sweep_file(sweep_dir) or {}
        if info and SEED_KEY not in info.get("varying", []):
            info["varying"] = sorted([*info.get("varying", []), SEED_KEY])
            write_record(sweep_dir, info)  # the record this sweep's jobs read
        return cls(info.get("parent_run_id"), store_uri(sweeper), list(info.get("varying", [])))

    def variant_name(self, overrides: list[str]) -> str:
        """The variant's short name, as tag `xentlab.variant` of its runs says it."""
        return job_variant(overrides, self.varying)["variant"]

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id is None:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        for name, value in tags.items():
            client.set_tag(self.run_id, name, value)


def refuse(parent: Parent, err: ExpectedError) -> None:
    """A sweep setting that cannot work: the message on stderr and on the parent (FAILED by the SweepRun callback),
    no traceback, exit status 2, before any job runs."""
    from xentlab.tracking.store import ERROR_TAG

    parent.set_tags({ERROR_TAG: f"{type(err).__name__}: {err}"[:5000]})
    print(f"\nxentlab: {err}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def store_uri(sweeper) -> str:
    """The sweep's store, resolved as the SweepRun callback resolves it (its record keeps the URI masked)."""
    from xentlab.tracking.store import resolve_tracking_uri

    return resolve_tracking_uri(sweeper.config.tracking.uri, Path.cwd())


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def forget_designs(sweeper) -> None:
    """A plain grid continuing a parent that a tuned or sequential sweep of the same key made: its report is the
    plain one again (the design tags go)."""
    from xentlab.tracking.store import SEQUENTIAL_TAG, TUNING_TAG

    info = read_sweep_file(sweeper.config.hydra.sweep.dir) or {}
    if not info.get("parent_run_id"):
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri(sweeper))
    tags = client.get_run(info["parent_run_id"]).data.tags
    for tag in (SEQUENTIAL_TAG, TUNING_TAG):
        if tag in tags:
            client.delete_tag(info["parent_run_id"], tag)
