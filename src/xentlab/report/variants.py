"""Variants of a sweep: a run's variant (its tag, else its name without the seed), override sets in any order,
the baseline."""

from __future__ import annotations

from xentlab.errors import ReportError
from xentlab.report.columns import FOLD_OVERRIDE, OVERRIDE_SPLIT, SEED_OVERRIDE
from xentlab.tracking.store import VARIANT_OVERRIDES_TAG, VARIANT_TAG


# ---------------------------------------------------------------------------------------------- variants
def variant_name(run_name: str) -> str:
    """The run name without its seed and fold, so runs that differ only by trainer.seed (and data.fold, in k-fold
    sweeps) aggregate into one row."""
    name = FOLD_OVERRIDE.sub("", SEED_OVERRIDE.sub("", run_name).strip(",")).strip(",")
    return name or "(default)"


def variant_of(run) -> tuple[str, str]:
    """(variant, its overrides) of a sweep's child run: the tags `xentlab.variant` and
    `xentlab.variant_overrides`, or for runs without them (older sweeps) the run name without its seed, twice."""
    tags = run.data.tags
    if VARIANT_TAG in tags:
        return tags[VARIANT_TAG], tags.get(VARIANT_OVERRIDES_TAG, tags[VARIANT_TAG])
    name = variant_name(run.info.run_name or run.info.run_id)
    return name, name


def pair_key(params: dict[str, str], default: str) -> str:
    """What pairs two variants' runs in the paired test: the seed, and the fold of a k-fold split ("3/fold1")."""
    seed = params.get("trainer.seed", default)
    folds = params.get("data.folds", "null")
    return seed if folds in ("null", "None", "") else f"{seed}/fold{params.get('data.fold', '0')}"


def override_set(name: str) -> frozenset[str]:
    """The key=value items of a variant name, in any order (`a=1,b=2` and `b=2,a=1` are one variant); booleans in
    any case (Hydra names runs `x=False` for a grid written `x: true,false`)."""
    return frozenset(_canonical(item.strip()) for item in OVERRIDE_SPLIT.split(name) if item.strip())


def _canonical(item: str) -> str:
    key, sep, value = item.partition("=")
    return f"{key}{sep}{value.lower()}" if value.lower() in ("true", "false") else item


def find_variant(variants: list[str], wanted: str, overrides: dict[str, str] | None = None) -> str | None:
    """The variant named `wanted`: its name, or its overrides in any order (`overrides`: {variant: overrides},
    default the names themselves); None when none or several match."""
    if wanted in variants:
        return wanted
    overrides = overrides or {}
    key = override_set(variant_name(wanted))
    matches = [v for v in variants if override_set(overrides.get(v, v)) == key]
    return matches[0] if len(matches) == 1 else None


def choose_baseline(variants: list[str], requested: str | None, preset: str | None,
                    overrides: dict[str, str] | None = None) -> tuple[str, str]:
    """(baseline, how it was chosen). `requested` (--baseline) must name a variant (its short name or its
    overrides); a preset's baseline that matches none (its grid was overridden) gives way to the first variant,
    and the report says so."""
    if not variants:
        raise ReportError("the sweep has no FINISHED child runs to compare")
    if requested:
        found = find_variant(variants, requested, overrides)
        if found is None:
            listed = "\n  ".join(v if (overrides or {}).get(v, v) == v else f"{v}  ({overrides[v]})" for v in variants)
            raise ReportError(f"--baseline {requested!r} names no variant of this sweep; the variants are:\n  {listed}")
        return found, "chosen with --baseline"
    if preset:
        found = find_variant(variants, preset, overrides)
        if found is not None:
            return found, "named by the sweep preset"
        return variants[0], f"the preset's baseline `{preset}` is not among the variants: first variant launched"
    return variants[0], "first variant launched (choose another with --baseline)"
