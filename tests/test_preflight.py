"""The pre-flight plan: model=auto, the head and the loss kind decided once, from the config and the data's facts;
the hardware policy from the one table; the builders take the plan as given."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import plan_of


@pytest.mark.parametrize(("overrides", "model"), [
    (["data=digits"], "mnist_cnn"),  # images (8, 8, 1)
    (["data=breast_cancer"], "mlp"),  # flat features
    (["data=periods"], "multi_head"),  # token ids, one label per period
])
def test_model_auto_is_resolved_by_the_data_with_that_models_defaults(overrides, model):
    from xentlab.config.schema import SCHEMAS

    plan = plan_of(["model=auto", *overrides])
    assert plan.model == model
    defaults = dataclasses.asdict(SCHEMAS["model"][f"base_{model}"](name=model))
    assert plan.arch == {k: getattr(v, "value", v) for k, v in defaults.items() if k not in ("name", "head")
                         and not k.startswith("sample_")}


def test_model_auto_picks_the_char_lstm_for_text(text_file):
    plan = plan_of(["data=text", f"data.path={text_file}", "data.seq_len=20", "data.stride=20"])
    assert plan.model == "char_lstm" and plan.sampling["sample_prompt"] == "ROMEO:"


@pytest.mark.parametrize(("overrides", "loss_kind", "head"), [
    (["data=digits"], "crossentropy", (10, "softmax")),
    (["data=digits", "loss.from_logits=true"], "crossentropy", (10, None)),
    (["data=breast_cancer", "model.head=sigmoid1"], "binary", (1, "sigmoid")),  # the one-unit form of the loss
    (["data=breast_cancer", "model.head=softmax2"], "crossentropy", (2, "softmax")),
    # Each class its own sigmoid, on probabilities: the check that re-derived the head refused this one.
    (["data=digits", "loss=weighted_binary", "labels=one_hot", "loss.from_logits=false"], "weighted_binary",
     (10, "sigmoid")),
])
def test_the_head_and_the_loss_kind_are_decided_once(overrides, loss_kind, head):
    plan = plan_of(overrides)
    assert (plan.loss_kind, tuple(plan.head)) == (loss_kind, head)
    assert plan.from_logits is (head[1] is None) and plan.labels.from_logits is plan.from_logits


def test_the_plan_is_frozen_and_carries_the_cpu_policy_here():
    from xentlab.runtime.strategy import HARDWARE_POLICY

    plan = plan_of(["data=breast_cancer", "weighting=balanced"])
    assert plan.hardware == HARDWARE_POLICY["cpu"]
    assert plan.class_weights is not None and plan.class_counts.sum() > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.model = "mlp"


@pytest.mark.parametrize(("overrides", "arch"), [
    (["data=digits", "model=mnist_cnn"], {"conv1_filters": 2, "conv2_filters": 2, "dense_units": 4}),
    (["data=breast_cancer", "model=mlp", "loss.from_logits=true"], {"hidden_units": [4]}),
    (["data=periods", "model=multi_head"], {"embedding_dim": 2, "hidden_units": 4}),
])
def test_every_model_built_from_its_plan_ends_in_the_plans_head_in_float32(overrides, arch):
    """Under mixed precision the head still computes in float32, with the plan's units and activation: the
    builders take the head as given, nothing re-checks it after the build."""
    import keras

    from conftest import config_of
    from xentlab.core.models import build_model
    from xentlab.data import load_data

    config = config_of(overrides)
    bundle = load_data(**config["data"])
    plan = plan_of(overrides, bundle)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        facts = {"vocab_size": bundle.meta.get("vocab_size", bundle.num_classes), "num_heads": 3}
        model = build_model(plan.model, input_shape=bundle.input_shape, head=plan.head, **{**plan.arch, **arch},
                            **facts)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    head = model.layers[-1]
    activation = getattr(getattr(head, "activation", None), "__name__", None)
    assert model.output_shape[-1] == plan.head.units and head.compute_dtype == "float32"
    assert (None if activation == "linear" else activation) == plan.head.activation


def test_one_pass_checks_the_values_before_it_touches_a_device_or_a_file(tmp_path):
    from conftest import config_of
    from xentlab.config.checks import CheckError
    from xentlab.config.preflight import preflight

    missing = ["data=mnist", f"data.path={tmp_path / 'nope.npz'}", "model=mlp"]
    with pytest.raises(CheckError, match="trainer.epochs=0 is not allowed"):  # not the missing file
        preflight(config_of([*missing, "trainer.epochs=0"]))
    with pytest.raises(CheckError, match="loss=binary .* needs 2 classes, the data has 10"):  # after the data
        preflight(config_of(["data=digits", "model=mlp", "loss=binary"]))
    ready = preflight(config_of(["data=breast_cancer", "model=mlp", "data.limit=64"]))
    assert ready.plan.task == "classification" and ready.bundle.y_train.dtype == "int64"  # the checked labels
    assert ready.hardware.kind == "cpu" and ready.plan.hardware.precision == "float32"


def test_the_build_reads_the_plan_and_never_calls_back_into_config():
    """Validation is one pass (xentlab.config.preflight): the entry point's build steps import nothing from
    config but the pass itself; config.checks is reached by the pass, and by `run` for the store's own values."""
    import ast
    from pathlib import Path

    source = Path(__file__).parents[1] / "src" / "xentlab" / "cli" / "train.py"
    functions = {n.name: n for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.FunctionDef)}
    allowed = {"prepare": {"xentlab.config.preflight", "xentlab.config.schema"}, "build_datasets": set(),
               "build_compiled_model": set()}
    for name, modules in allowed.items():
        imported = {(n.module, a.name) for n in ast.walk(functions[name]) if isinstance(n, ast.ImportFrom)
                    for a in n.names if n.module.startswith("xentlab.config")}
        assert {m for m, _ in imported} <= modules, (name, imported)
    from_checks = {(f, a.name) for f, fn in functions.items() for n in ast.walk(fn)
                   if isinstance(n, ast.ImportFrom) and n.module == "xentlab.config.checks" for a in n.names}
    assert from_checks == {("run", "check_tracking")}
