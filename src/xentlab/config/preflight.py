"""Pre-flight: the run's one validation pass, before anything is built. The config, the data's facts and the
hardware picked become one resolved plan.

`preflight` checks in this order: the config's values alone (before any device, file or download is touched),
then gathers the facts (the hardware picked and its loop, the loaded data, the same on every worker), then the data
and every combination of config, data and hardware (`resolve_plan`), by the validators of xentlab.config.checks.
Everything a run decides before it builds is decided here: the model for model=auto, the loss kind the head
implies, the head itself, the metric task, the hardware policy (one table: xentlab.runtime.strategy.HARDWARE_POLICY),
the class weights and the label contract (xentlab.core.targets). The builders read the plan and check nothing again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xentlab.config import checks
from xentlab.config.schema import SCHEMAS
from xentlab.core.metric_set import metric_task
from xentlab.core.models import (
    DataShapes,
    HeadSpec,
    capabilities,
    choose_model,
    head_spec,
    is_backbone,
    model_misfit,
    resolve_loss_kind,
)
from xentlab.core.targets import LabelContract
from xentlab.core.weighting import class_weights, label_counts
from xentlab.data import DataBundle, load_data
from xentlab.data.long_tail import record_shot_groups
from xentlab.runtime.loops import Loop, loop_for
from xentlab.runtime.strategy import Hardware, HardwarePolicy, build_strategy, fresh_session, resolve_policy


@dataclass(frozen=True)
class Plan:
    """What the run builds, resolved and checked.

    Attributes:
        model: the model to build (model=auto resolved by the data's shapes).
        arch: its architecture knobs (for model=auto, that model's defaults).
        sampling: the `sample_*` settings of a text-generating model.
        loss_kind: the loss the head implies (model.head=sigmoid1 turns crossentropy into binary).
        head: units and activation of the output layer.
        task: the metric table's task (xentlab.metric_table): a language model or a classifier.
        labels: the label contract every builder reads (classes, encoding, ignore class, shape, heads, logits).
        hardware: precision, XLA, steps per execution and static batch shapes for the hardware picked.
        class_counts: training-split examples per class, masked positions left out.
        class_weights: per-class weights of weighting.scheme; None for none.
        warnings: printed on stderr and kept as the run tag xentlab.warning.
    """

    model: str
    arch: dict[str, Any]
    sampling: dict[str, Any]
    loss_kind: str
    head: HeadSpec
    task: str
    labels: LabelContract
    hardware: HardwarePolicy
    class_counts: np.ndarray
    class_weights: np.ndarray | None
    warnings: tuple[str, ...] = ()

    @property
    def from_logits(self) -> bool:
        """The loss takes logits: the head is linear."""
        return self.labels.from_logits


def data_shapes(bundle: DataBundle) -> DataShapes:
    return DataShapes(input_shape=tuple(bundle.input_shape), integer_inputs=bundle.input_dtype == "int32",
                      label_shape=tuple(bundle.y_train.shape[1:]))


def resolve_model(model_cfg: dict[str, Any], data: DataShapes) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The model name, its architecture knobs and its text-sampling settings (`sample_*`, language models only).

    model=auto picks by the data's shapes (`xentlab.core.models.choose_model`), with that model's schema defaults;
    a model named explicitly must fit the data.

    Raises:
        CheckError: When no model fits (auto), or the model named cannot take the data.
    """
    name = model_cfg["name"]
    if name == "auto":
        name = choose_model(data)
        if name is None:
            raise checks.CheckError(f"model=auto found no model for {data.describe()}; pick one with "
                                    f"model=mnist_cnn|mlp|char_lstm|multi_head")
        defaults = asdict(SCHEMAS["model"][f"base_{name}"](name=name))
        model_cfg = {k: getattr(v, "value", v) for k, v in defaults.items()} | {"head": model_cfg["head"]}
    elif name == "custom" and not model_cfg.get("_target_"):
        raise checks.CheckError("model=custom needs model._target_=package.module.function (your function that "
                                "returns a Keras backbone; see README, 'Your own model')")
    elif misfit := model_misfit(name, data):
        raise checks.CheckError(misfit)
    knobs = {k: v for k, v in model_cfg.items() if k not in ("name", "head") and not k.startswith("sample_")}
    return name, knobs, {k: v for k, v in model_cfg.items() if k.startswith("sample_")}


def resolve_plan(config: dict[str, Any], bundle: DataBundle, hardware: Hardware) -> Plan:
    """Resolves and validates everything the builders need; the bundle's labels come back cleaned (int64, squeezed).

    Args:
        config: the resolved run config (its values already passed `checks.check_config`).
        bundle: the loaded data.
        hardware: the strategy built for the hardware picked (its kind and replica count).

    Raises:
        CheckError: For data, or a combination of config and data, that would train wrongly or not at all.
    """
    labels, loss_cfg, trainer, weighting = config["labels"], config["loss"], config["trainer"], config["weighting"]
    ignore_class = labels["ignore_class"]
    checks.check_bundle(bundle, ignore_class=ignore_class)
    warnings = tuple(w for w in [checks.unused_ignore_class(bundle, ignore_class=ignore_class)] if w)
    shapes = data_shapes(bundle)
    model, arch, sampling = resolve_model(config["model"], shapes)
    if is_backbone(model, arch):  # with_head needs the inputs' type and the labels' rank; a user's model the classes
        arch |= {"input_dtype": "int32" if shapes.integer_inputs else "float32", "label_rank": len(shapes.label_shape),
                 "num_classes": bundle.num_classes}
    loss_kind = resolve_loss_kind(loss_cfg["name"], config["model"].get("head", "auto"), bundle.num_classes)
    from_logits = bool(loss_cfg["from_logits"])
    checks.check_loss_and_labels(loss=loss_kind, encoding=labels["encoding"], num_classes=bundle.num_classes,
                                 from_logits=from_logits, ignore_class=ignore_class,
                                 label_smoothing=loss_cfg["label_smoothing"])
    checks.check_batch(batch_size=trainer["batch_size"], replicas=hardware.replicas, train_size=len(bundle.x_train))
    contract = LabelContract.from_labels(
        bundle.y_train, num_classes=bundle.num_classes, encoding=labels["encoding"], ignore_class=ignore_class,
        from_logits=from_logits, separate_heads=capabilities(model).separate_heads)
    counts = label_counts(bundle.y_train, contract)  # training split, masked positions left out
    weights = class_weights(counts, weighting["scheme"], beta=weighting["beta"], weights=weighting["weights"])
    return Plan(
        model=model, arch=arch, sampling=sampling, loss_kind=loss_kind,
        head=head_spec(loss=loss_kind, from_logits=from_logits, num_classes=bundle.num_classes),
        task=metric_task(model, shapes), labels=contract,
        hardware=resolve_policy(hardware.kind, config["strategy"]), class_counts=counts, class_weights=weights,
        warnings=warnings,
    )



@dataclass(frozen=True)
class Ready:
    """What the pre-flight pass hands the build: the plan, the hardware built and its loop, the checked data."""

    plan: Plan
    hardware: Hardware
    loop: Loop
    bundle: DataBundle


def preflight(config: dict[str, Any], launch_dir: Path | None = None) -> Ready:
    """The run's one validation pass: every check of config, data and hardware, before a dataset or a model is built.

    Args:
        config: the resolved run config (`xentlab.config.schema.job_config`).
        launch_dir: where a relative data.path is read from (default: the working directory).

    Raises:
        CheckError: For a value, data, or a combination of config, data and hardware that would train wrongly or
            not at all; the loaders' and the hardware's own errors (DataError, HardwareError) as they come.
    """
    checks.check_config(config)  # the values alone, before any device, file or download is touched
    trainer = config["trainer"]
    hardware = build_strategy(**config["strategy"])  # first: may configure devices
    loop = loop_for(hardware, global_batch_size=trainer["batch_size"])
    fresh_session(seed=trainer["seed"], deterministic=trainer["deterministic"])
    bundle = load_data(**config["data"], root=launch_dir)
    loop.check_same_job(config, bundle.splits())  # every worker of a multi-worker run runs the same job, or none
    plan = resolve_plan(config, bundle, hardware)
    record_shot_groups(bundle, plan.class_counts, config["data"]["shot_thresholds"])  # the contract's counts
    return Ready(plan, hardware, loop, bundle)
