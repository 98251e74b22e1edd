"""Variants of a sweep: a run name without its seed, override sets in any order, the baseline."""

from __future__ import annotations

from xentlab.report.columns import OVERRIDE_SPLIT, SEED_OVERRIDE


# ---------------------------------------------------------------------------------------------- variants
def variant_name(run_name: str) -> str:
    """The run name without its seed, so runs that differ only by trainer.seed aggregate into one row."""
    name = SEED_OVERRIDE.sub("", run_name).strip(",")
    return name or "(default)"


def override_set(name: str) -> frozenset[str]:
    """The key=value items of a variant name, in any order (`a=1,b=2` and `b=2,a=1` are one variant); booleans in
    any case (Hydra names runs `x=False` for a grid written `x: true,false`)."""
    return frozenset(_canonical(item.strip()) for item in OVERRIDE_SPLIT.split(name) if item.strip())


def _canonical(item: str) -> str:
    key, sep, value = item.partition("=")
    return f"{key}{sep}{value.lower()}" if value.lower() in ("true", "false") else item


def find_variant(variants: list[str], wanted: str) -> str | None:
    """The variant named `wanted` (the same overrides in any order), or None."""
    if wanted in variants:
        return wanted
    key = override_set(variant_name(wanted))
    matches = [v for v in variants if override_set(v) == key]
    return matches[0] if len(matches) == 1 else None


def choose_baseline(variants: list[str], requested: str | None, preset: str | None) -> tuple[str, str]:
    """(baseline, how it was chosen). `requested` (--baseline) must name a variant; a preset's baseline that
    matches none (its grid was overridden) gives way to the first variant, and the report says so."""
    if not variants:
        raise ValueError("the sweep has no FINISHED child runs to compare")
    if requested:
        found = find_variant(variants, requested)
        if found is None:
            listed = "\n  ".join(variants)
            raise ValueError(f"--baseline {requested!r} names no variant of this sweep; the variants are:\n  {listed}")
        return found, "chosen with --baseline"
    if preset:
        found = find_variant(variants, preset)
        if found is not None:
            return found, "named by the sweep preset"
        return variants[0], f"the preset's baseline `{preset}` is not among the variants: first variant launched"
    return variants[0], "first variant launched (choose another with --baseline)"
