"""What a run logs besides its metrics: its inputs before training (params, datasets, config, the command that
reruns it), its evaluation files, generated text and the trained model."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np

from xentlab.masking import mask_override
from xentlab.metric_table import class_metric_names
from xentlab.tracking.metric_log import log_defined
from xentlab.tracking.runs import mask_config
from xentlab.tracking.source import source_info
from xentlab.tracking.store import WARNING_TAG, log_input, store_errors


def rerun_command(overrides: list[str]) -> str:
    """The one command that reruns a job (secrets masked)."""
    import shlex

    return " ".join(["xentlab-train", *[shlex.quote(mask_override(o)) for o in overrides]])


def log_inputs(outbox, facts: dict[str, Any], config: dict[str, Any], overrides: list[str]) -> None:
    """What is known before training: hardware, split sizes, class weights, the resolved model, the dataset (as
    MLflow dataset inputs), the masked config and overrides, the source diff and the command that reruns the job.

    A store that is locked or damaged at this point fails the run with a message naming it (StoreBusy,
    StoreDamaged): training has not started, so nothing is lost."""
    with store_errors(outbox.uri):
        _log_inputs(facts, config, overrides)


def _log_inputs(facts: dict[str, Any], config: dict[str, Any], overrides: list[str]) -> None:
    bundle = facts["bundle"]
    params = dict(facts["hardware"])
    params.update({f"data.{split}_size": str(n) for split, n in bundle.sizes().items()})
    params["data.num_classes"] = str(bundle.num_classes)
    params["model.resolved"] = facts["model"]
    if facts["class_weights"] is not None:
        weights = [round(float(w), 6) for w in facts["class_weights"]]
        params["weighting.class_weights"] = json.dumps(weights)
        mlflow.log_dict({"class_names": bundle.class_names, "class_weights": weights}, "class_weights.json")
    mlflow.log_params(params)
    log_shot_groups(bundle)
    for warning in facts["warnings"]:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if facts["warnings"]:
        mlflow.set_tag(WARNING_TAG, "\n".join(facts["warnings"]))
    if facts.get("run_name"):  # decided from the plan (model=auto named after the model it picked), on every attempt
        mlflow.set_tag("mlflow.runName", facts["run_name"])
    log_datasets(bundle, config["data"])
    mlflow.log_text(_yaml(mask_config(config)), "config.yaml")
    mlflow.log_text(_yaml([mask_override(o) for o in overrides]), "overrides.yaml")
    mlflow.set_tag("xentlab.command", rerun_command(overrides))
    if config["tracking"]["log_diff"] and source_info()["diff"]:
        mlflow.log_text(source_info()["diff"], "source/uncommitted.diff")


def log_shot_groups(bundle) -> None:
    """`shot_groups.json`: the training split's many/medium/few-shot classes (by id and name), the thresholds and
    the counts they come from; nothing when the split has no groups (balanced, or not one label per example)."""
    groups = bundle.meta.get("shot_groups")
    if not groups:
        return
    named = {g: {"classes": ids, "names": [bundle.class_names[c] for c in ids]} for g, ids in groups.items()}
    mlflow.log_dict({**bundle.meta["shot_counts"], "groups": named,
                     "rule": "many: count > high; medium: low <= count <= high; few: 0 < count < low"},
                    "shot_groups.json")


def _yaml(value: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(value)


def log_datasets(bundle, data_cfg: dict[str, Any]) -> None:
    """Each split as an MLflow dataset input (name, digest, source, shapes), so the UI's Dataset column and
    filters work: contexts training, validation and test. Data an option derived is named so (`digits-lt10`)."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    from xentlab.tracking.naming import dataset_name

    path = data_cfg.get("path")
    source = str(Path(path).resolve()) if path else CodeDatasetSource({"xentlab.data": bundle.name})
    name = dataset_name(bundle.name, data_cfg)
    for split, context in (("train", "training"), ("val", "validation"), ("test", "test")):
        x, y = bundle.splits()[split]
        with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways": all the same here
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(np.asarray(x), targets=np.asarray(y), source=source, name=name)
        log_input(dataset, context)



def log_evaluation(outbox, folder: Path, num_classes: int) -> None:
    """Logs the evaluation figures written in `folder` (core.figures.write_evaluation) under `evaluation/`, and
    per-class recall from its `per_class.json` as `test_recall_<class>` metrics (up to 12 classes; names from
    xentlab.metric_table.class_metric_names, unique whatever the class names)."""
    report = json.loads((folder / "per_class.json").read_text())
    outbox.log_artifacts(str(folder), "evaluation")
    log_reliability_tag(outbox, folder / "reliability.json")
    if num_classes <= 12:
        recalls = {}
        for head, classes in report.items():
            suffix = "" if head == "all" else f"_{head}"
            recalls.update({f"test_recall_{name}{suffix}": v["recall"] if v["support"] else math.nan
                            for name, v in zip(class_metric_names(list(classes)), classes.values(), strict=True)})
        log_defined(outbox, recalls)  # a class absent from the test split has no recall: said, not logged


def log_reliability_tag(outbox, path: Path) -> None:
    """The reliability bins of `path` (core.figures.reliability_table) as the run tag xentlab.reliability, rounded
    to 6 digits: a sweep's report reads every run's bins from one search instead of a download per run."""
    from xentlab.tracking.store import RELIABILITY_TAG

    table = json.loads(path.read_text())

    def rounded(values: list) -> list:
        return [None if v is None else round(float(v), 6) for v in values]

    compact = {"num_bins": len(table["count"]), "count": table["count"], "accuracy": rounded(table["accuracy"]),
               "confidence": rounded(table["confidence"]), "ece": round(float(table["ece"]), 6)}
    outbox.set_tag(RELIABILITY_TAG, json.dumps(compact, separators=(",", ":")))


def log_generated_text(outbox, model, *, sample_prompt: str, sample_length: int, sample_temperature: float,
                       from_logits: bool, seed: int) -> None:
    """For language models: five streams sampled from the stateful copy, as `generated.txt`."""
    from xentlab.core.sampling import generate

    streams = generate(model, sample_prompt, sample_length, sample_temperature, seed=seed, from_logits=from_logits)
    text = "\n\n".join(f"--- stream {i}\n{t}" for i, t in enumerate(streams))
    outbox.log_text(text, "generated.txt")
    print(text, flush=True)


def log_model(outbox, model, sample) -> None:
    """The trained model with an input/output signature and pinned requirements (no slow inference)."""
    import tensorflow as tf
    from mlflow.models import infer_signature

    # A plain call, not predict: under MultiWorkerMirroredStrategy predict starts collectives only the chief joins.
    signature = infer_signature(sample, np.asarray(model(sample, training=False)))
    outbox.log_keras_model(
        model, signature=signature,
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )
