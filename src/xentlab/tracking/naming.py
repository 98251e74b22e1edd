"""Names people read in the MLflow UI: a sweep variant's short name, a job's run name, a derived dataset's name.

The runs table shows about 30 characters of a run name. A sweep job is named `<variant> s<seed>`
(`logit_adjusted s0`, `one_hot crossentropy logits s2`): the values of the overrides that vary, without the
config-group key a choice already implies (`+setup=`, `loss=`) and with only the last part of a dotted key
(`loss.gamma=2` -> `gamma=2`). The full overrides stay in the run's params and its `xentlab.command` tag.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

SEED_KEY = "trainer.seed"
FOLD_KEY = "data.fold"  # k-fold sweeps: the fold is a repetition of a variant, as the seed
REPETITIONS = (SEED_KEY, FOLD_KEY)
MAX_RUN_NAME = 30  # what the runs table shows before it cuts a name
DEFAULT_VARIANT = "default"  # a sweep over seeds only: every job is the one variant
# Values whose key=value form is long and whose meaning has a common short word.
VALUE_WORDS = {("from_logits", "true"): "logits", ("from_logits", "false"): "probs"}


def override_key(override: str) -> str:
    """The key of a command-line override, without Hydra's `+`/`~`/`++` prefixes."""
    return override.partition("=")[0].lstrip("+~")


def _labels(keys: list[str]) -> dict[str, str]:
    """Per key, the shortest dotted suffix that no other key shares (`loss.gamma` -> `gamma`)."""
    labels = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        labels[key] = suffix
    return labels


def _part(key: str, label: str, value: str) -> str:
    if "." not in key:  # a config group's choice (`loss=focal`, `+setup=balanced`): the value says it all
        return value
    word = VALUE_WORDS.get((label.rsplit(".", 1)[-1], value.lower()))
    return word or f"{label}={value}"


def variant_name(overrides: list[str]) -> str:
    """The short name of the variant a sweep job runs: its varying overrides but the seed (and fold), by key.

    Args:
        overrides: the job's overrides that vary across the sweep (`+setup=logit_adjusted`, `trainer.seed=0`).

    Returns:
        e.g. `logit_adjusted`, `one_hot crossentropy logits`, `gamma=2`; `default` when only the seed varies.
        Distinct variants of one sweep get distinct names (a group choice by its value, a boolean by its word,
        anything else as label=value, in the same key order).
    """
    chosen = sorted((o for o in overrides if "=" in o and override_key(o) not in REPETITIONS), key=override_key)
    labels = _labels([override_key(o) for o in chosen])
    parts = [_part(override_key(o), labels[override_key(o)], o.partition("=")[2]) for o in chosen]
    return " ".join(parts) or DEFAULT_VARIANT


def variant_overrides(overrides: list[str]) -> str:
    """The varying overrides of a job but the seed (and fold), comma-joined in key order (`+setup=balanced`): what a
    preset's baseline names and `xentlab-compare --baseline` accepts."""
    return ",".join(sorted((o for o in overrides if override_key(o) not in REPETITIONS), key=override_key))


def run_name(variant: str, seed: Any, fold: Any = None, limit: int = MAX_RUN_NAME) -> str:
    """`<variant> s<seed>` (`<variant> f<fold> s<seed>` in k-fold sweeps) in at most `limit` characters (for seeds
    below 10**(limit - 24)).

    A longer variant keeps its first characters and a 4-digit hash of the whole name, so two long variants
    never share a run name prefix by accident (`learning_rate=0.31~a1f0 s0`).
    """
    suffix = (f" f{fold}" if fold is not None else "") + f" s{seed}"
    room = limit - len(suffix)
    if len(variant) <= room:
        return variant + suffix
    digest = hashlib.sha1(variant.encode()).hexdigest()[:4]
    return f"{variant[:max(room - 5, 1)]}~{digest}{suffix}"


AUTO_MODEL = "auto"  # model=auto: the model is named by the plan (xentlab.config.preflight)


def job_run_name(config: dict[str, Any], sweep: dict[str, Any] | None = None, model: str | None = None) -> str:
    """The name of a job's run: tracking.run_name if set; in a sweep `<variant> s<seed>` (`run_name`); else
    `<model>/<loss>/<labels>/<weighting>`, with `model` the plan's resolved model (None: the configured one, which
    for model=auto is a placeholder until the plan exists). Decided from the plan once per attempt: a resumed run
    is named as its first attempt was."""
    if sweep:
        if "variant" not in sweep or sweep.get("trial") is not None:  # a tuned sweep's trial: `<variant> t<n>`
            return sweep["name"]
        data = config["data"]
        return run_name(sweep["variant"], config["trainer"]["seed"], data["fold"] if data.get("folds") else None)
    if config["tracking"]["run_name"]:
        return config["tracking"]["run_name"]
    return "/".join([model or config["model"]["name"], config["loss"]["name"], config["labels"]["encoding"],
                     config["weighting"]["scheme"]])


def dataset_name(source: str, data_cfg: dict[str, Any]) -> str:
    """The name of the data a run trains on: the source, plus what an option derived from it
    (`digits-lt10`: a long tail of ratio 10; `-na0.2`: a fifth of the labels made n/a; `-n200`: data.limit;
    `-fold2of5`: fold 2 of a 5-fold split)."""
    name = source
    if (data_cfg.get("long_tail_ratio") or 1.0) > 1.0:
        name += f"-lt{data_cfg['long_tail_ratio']:g}"
    if (data_cfg.get("na_fraction") or 0.0) > 0.0:
        name += f"-na{data_cfg['na_fraction']:g}" + ("-dropped" if data_cfg.get("drop_na") else "")
    if data_cfg.get("limit"):
        name += f"-n{data_cfg['limit']}"
    if data_cfg.get("folds"):  # k-fold: each fold trains on other examples
        name += f"-fold{data_cfg.get('fold', 0)}of{data_cfg['folds']}"
    return re.sub(r"\s+", "", name)
