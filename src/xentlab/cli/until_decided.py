"""Seeds until decided (`sweep.until_decided=true`): seeds are added `sweep.seed_batch` at a time, only to the
comparisons with the baseline that are still open, under the group-sequential rule of report.sequential, up to
`sweep.max_seeds`. The seeds are 0, 1, 2, ... (the grid's `trainer.seed` axis gives way to them).

Each look launches the next batch of seeds for the baseline and every open variant, reads the value each job
returned (the final val_nll: the report's primary metric for classifiers, and a fixed multiple of val_bpc for
language models, so the same tests) and decides. A rerun replays the same looks over reused runs: nothing trains
twice and the decisions are the same; the report replays them from the runs (report.sweep_designs).
"""

from __future__ import annotations

import math

from xentlab.cli.sweep_grid import Launches, Parent, compact_json, refuse, split_grid
from xentlab.errors import ConfigError
from xentlab.report.sequential import Design, decide, next_seeds


def _design(settings) -> Design:
    try:
        return Design(int(settings.seed_batch), int(settings.max_seeds), float(settings.alpha))
    except ValueError as err:
        raise ConfigError(f"{err}; e.g. sweep.seed_batch=3 sweep.max_seeds=12") from None


def _baseline(sweeper, parent: Parent, names: list[str], grid_variants: list[list[str]]) -> str:
    """The variant the preset (or the command, hydra.callbacks.sweep_run.baseline) names, as the report chooses it
    from the same tags; else the first of the grid."""
    from xentlab.cli.sweep import job_variant
    from xentlab.report.variants import choose_baseline

    named = sweeper.config.hydra.callbacks.get("sweep_run", {}).get("baseline")
    overrides = {n: job_variant(v, parent.varying)["variant_overrides"] for n, v in zip(names, grid_variants,
                                                                                        strict=True)}
    return choose_baseline(names, None, str(named) if named else None, overrides)[0]


def run_until_decided(sweeper, arguments: list[str]) -> list:
    """The looks: a batch of seeds for the baseline and the open comparisons, then the decisions, until none is
    open. The design goes on the parent (tag `xentlab.sequential`) for the report."""
    from xentlab.tracking.store import SEQUENTIAL_TAG

    parent = Parent.of(sweeper)
    grid = split_grid(sweeper, arguments)
    try:
        design = _design(sweeper.config.sweep)
        if len(grid.variants) < 2:
            raise ConfigError("sweep.until_decided=true needs at least two variants (a baseline and one to compare), "
                              f"got {len(grid.variants)}; e.g. loss=crossentropy,focal")
    except ConfigError as err:
        refuse(parent, err)
    names = [parent.variant_name(v) for v in grid.variants]
    overrides = dict(zip(names, grid.variants, strict=True))
    baseline = _baseline(sweeper, parent, names, grid.variants)
    others = [n for n in names if n != baseline]
    parent.set_tags({SEQUENTIAL_TAG: compact_json({"seed_batch": design.seed_batch, "max_seeds": design.max_seeds,
                                                   "alpha": design.alpha})})
    if grid.seeds:
        print(f"sweep.until_decided: the grid's trainer.seed={','.join(grid.seeds)} gives way to seeds 0, 1, ... "
              "added by the sequential rule", flush=True)
    launches = Launches(sweeper)
    values: dict[str, dict[int, float]] = {n: {} for n in names}
    decisions: list = []
    done = 0
    while (target := next_seeds(decisions, others, design)) > done:
        active = [baseline] + [d.variant for d in decisions if d.open] if decisions else names
        batch = [(n, seed) for n in active for seed in range(done, target)]
        results = launches.run([[*overrides[n], f"trainer.seed={seed}"] for n, seed in batch])
        for (n, seed), value in zip(batch, results, strict=True):
            values[n][seed] = value
        if not all(math.isfinite(v) for v in results):
            print("sweep.until_decided: a job of this look failed, so the look is incomplete; the same command "
                  "runs it again and reuses the others", flush=True)
            break
        decisions = decide({n: v for n, v in values.items() if v}, baseline, design)
        done = target
        print(f"look {design.looks().index(target) + 1} ({target} seeds): "
              + "; ".join(f"{d.variant} {d.status}" for d in decisions), flush=True)
    return launches.returns
