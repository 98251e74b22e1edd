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
