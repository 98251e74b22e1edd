"""Tuned comparisons (`+sweep=tuned`): every variant of the grid gets the same tuning budget before it is compared.

Per variant, an Optuna study (`sweep.tuning.trials` trials; the same sampler, sampler seed and tuning seeds for all)
over the search space its config groups declare (`search:` in each group's yaml), minimising the value every job
returns (the final val_nll). Trial t of every variant runs in one batch, so a parallel launcher trains the variants
side by side. Then each variant's best configuration trains over the evaluation seeds (the grid's `trainer.seed`,
disjoint from the tuning seeds). Jobs carry `sweep.stage` (tuning / evaluation) and `sweep.trial`, which tag their
runs. A rerun asks the same trials again (the sampler is seeded and the reused runs return the same values), so
every job finds its FINISHED run and nothing trains twice; more trials continue each study.
"""

from __future__ import annotations

import math
import re
from typing import Any

from xentlab.cli.sweep_grid import Grid, Launches, Parent, compact_json, refuse, split_grid
from xentlab.errors import ConfigError, ExpectedError
from xentlab.metric_table import OBJECTIVE  # what every job returns: the first of these it logged (val_nll)

SPEC = re.compile(r"^\s*(uniform|loguniform|int|choice)\((.*)\)\s*$")
SAMPLERS = ("tpe", "random")


def distribution(key: str, spec: str):
    """The Optuna distribution of one search entry: `uniform(lo, hi)`, `loguniform(lo, hi)`, `int(lo, hi)` or
    `choice(a, b, ...)`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    match = SPEC.match(str(spec))
    if not match:
        raise ConfigError(f"search space {key}: {spec!r} is not uniform(lo, hi), loguniform(lo, hi), int(lo, hi) or "
                          f"choice(a, b, ...); e.g. {key}=uniform(0.0, 0.2) in the group's `search:`")
    kind, body = match.group(1), [part.strip() for part in match.group(2).split(",") if part.strip()]
    try:
        if kind == "choice":
            return CategoricalDistribution(body)
        low, high = body
        if kind == "int":
            return IntDistribution(int(low), int(high))
        return FloatDistribution(float(low), float(high), log=kind == "loguniform")
    except ValueError as err:
        raise ConfigError(f"search space {key}: {spec!r}: {err}") from None


def search_space(sweeper, variant: list[str]) -> dict[str, Any]:
    """{`<group>.<key>`: distribution} from the `search:` of every group of the variant's composed config, less the
    keys the variant sets itself (a grid over `loss.gamma` compares those values: they are not tuned)."""
    config = sweeper.hydra_context.config_loader.load_sweep_config(sweeper.config, list(variant))
    fixed = {o.partition("=")[0].lstrip("+~") for o in variant}
    space = {}
    for group, node in config.items():
        if group in ("hydra", "sweep") or not hasattr(node, "get") or not node.get("search"):
            continue
        for key, spec in node.search.items():
            if f"{group}.{key}" not in fixed:
                space[f"{group}.{key}"] = distribution(f"{group}.search.{key}", spec)
    if not space:
        raise ConfigError(f"variant {' '.join(variant) or '(the defaults)'} declares no search space: its config "
                          "groups have no `search:` entries; add one, e.g. optimizer.search.learning_rate="
                          "'loguniform(0.01,1.0)'")
    return space


def _spec(dist) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(str(c) for c in dist.choices)})"
    kind = "loguniform" if getattr(dist, "log", False) else "int" if isinstance(dist.low, int) else "uniform"
    return f"{kind}({dist.low:g}, {dist.high:g})"


def _check(settings, grid: Grid, sweeper) -> tuple[list[str], list[str]]:
    """(tuning seeds, evaluation seeds), refused when they overlap or the sampler is unknown."""
    tuning = [str(s) for s in settings.tuning.seeds]
    evaluation = grid.seeds or [str(sweeper.config.trainer.seed)]
    if settings.until_decided:
        raise ConfigError("sweep.until_decided=true and sweep.tuning.trials > 0 together: a tuned sweep evaluates "
                          "over its trainer.seed seeds; run one or the other (sweep.tuning.trials=0)")
    if str(settings.tuning.sampler) not in SAMPLERS:
        raise ConfigError(f"sweep.tuning.sampler={settings.tuning.sampler}: expected one of {', '.join(SAMPLERS)}")
    if not tuning:
        raise ConfigError("sweep.tuning.seeds is empty: the trials need a seed, e.g. sweep.tuning.seeds=[1000]")
    shared = sorted(set(tuning) & set(evaluation), key=str)
    if shared:
        raise ConfigError(f"sweep.tuning.seeds=[{','.join(tuning)}] and the evaluation seeds "
                          f"trainer.seed={','.join(evaluation)} share {', '.join(shared)}: a configuration chosen on "
                          "a seed would be judged on it. Pick disjoint seeds, e.g. sweep.tuning.seeds=[1000]")
    return tuning, evaluation


def _study(settings):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = int(settings.tuning.seed)
    sampler = (optuna.samplers.TPESampler(seed=seed) if settings.tuning.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    return optuna.create_study(direction="minimize", sampler=sampler)


def _value_override(key: str, value: Any) -> str:
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def _tune(launches: Launches, studies: dict[str, dict], trials: int, tuning_seeds: list[str]) -> None:
    """Trial t of every study in one batch, t = 0 .. trials - 1; each trial's value is its mean over the tuning
    seeds (a failed job fails the trial)."""
    from optuna.trial import TrialState

    for t in range(trials):
        asked = {name: s["study"].ask(s["space"]) for name, s in studies.items()}
        batch, owners = [], []
        for name, trial in asked.items():
            chosen = [_value_override(k, v) for k, v in trial.params.items()]
            for seed in tuning_seeds:
                batch.append([*studies[name]["variant"], *chosen, "sweep.stage=tuning", f"sweep.trial={t}",
                              f"trainer.seed={seed}"])
                owners.append(name)
        values = launches.run(batch)
        for name, trial in asked.items():
            mine = [v for v, owner in zip(values, owners, strict=True) if owner == name]
            if all(math.isfinite(v) for v in mine):
                studies[name]["study"].tell(trial, sum(mine) / len(mine))
            else:
                studies[name]["study"].tell(trial, state=TrialState.FAIL)


def _curve(study) -> list[float | None]:
    """Best value so far after each trial (None until a trial completes)."""
    best, out = math.inf, []
    for trial in study.trials:
        if trial.value is not None:
            best = min(best, trial.value)
        out.append(round(best, 6) if math.isfinite(best) else None)
    return out


def run_tuned(sweeper, arguments: list[str]) -> list:
    """The tuned sweep: the studies, then the evaluation runs; the budget, spaces, choices and curves go on the
    parent (tag `xentlab.tuning`) for the report."""
    from xentlab.tracking.store import TUNING_TAG

    settings = sweeper.config.sweep
    parent = Parent.of(sweeper)
    grid = split_grid(sweeper, arguments)
    try:
        tuning_seeds, evaluation_seeds = _check(settings, grid, sweeper)
        studies = {parent.variant_name(v): {"variant": v, "space": search_space(sweeper, v), "study": _study(settings)}
                   for v in grid.variants}
    except ExpectedError as err:
        refuse(parent, err)
    trials = int(settings.tuning.trials)
    launches = Launches(sweeper)
    print(f"tuned sweep: {len(studies)} variants x {trials} trials ({settings.tuning.sampler}, seed "
          f"{settings.tuning.seed}, tuning seeds {','.join(tuning_seeds)}), then evaluation seeds "
          f"{','.join(evaluation_seeds)}", flush=True)
    _tune(launches, studies, trials, tuning_seeds)
    summary: dict[str, Any] = {"trials": trials, "sampler": str(settings.tuning.sampler),
                               "seed": int(settings.tuning.seed), "tuning_seeds": tuning_seeds,
                               "evaluation_seeds": evaluation_seeds, "objective": OBJECTIVE[0], "variants": {}}
    batch = []
    for name, s in studies.items():
        done = [t for t in s["study"].trials if t.value is not None]
        best = min(done, key=lambda t: t.value) if done else None
        summary["variants"][name] = {"space": {k: _spec(d) for k, d in s["space"].items()}, "curve": _curve(s["study"]),
                                     "chosen": best.params if best else None,
                                     "best": round(best.value, 6) if best else None}
        if best is None:  # every trial failed: nothing to evaluate (the report says so)
            continue
        chosen = [_value_override(k, v) for k, v in best.params.items()]
        batch += [[*s["variant"], *chosen, "sweep.stage=evaluation", f"trainer.seed={seed}"]
                  for seed in evaluation_seeds]
    parent.set_tags({TUNING_TAG: compact_json(summary)[:7900]})
    launches.run(batch)
    return launches.returns
