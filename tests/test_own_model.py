"""A user's own model (model=custom model._target_=...) and the literature's backbones (model=resnet, keras_app):
the head the loss implies is xentlab's, a full model's head is checked before training, runs finish and the logged
model loads back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import TINY, compose, config_of, run_cli, runs_of
from xentlab.choices import Encoding
from xentlab.core.losses import LOSS_TABLE
from xentlab.core.losses.table import check_loss_combination
from xentlab.errors import ConfigError, ExpectedError

USER_MODELS = textwrap.dedent(
    """
    import keras
    from keras import layers

    def backbone(input_shape, width=8):
        return keras.Sequential([keras.Input(shape=input_shape), layers.Flatten(),
                                 layers.Dense(width, activation="relu")])

    def feature_layer(width=8):  # a layer, not a model: xentlab gives it an input
        return layers.Dense(width, activation="relu")

    def conv_features(input_shape):  # a feature map: xentlab averages it over the image
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, layers.Conv2D(4, 3, padding="same")(inputs))

    def full(input_shape, num_classes, activation="softmax"):
        return keras.Sequential([keras.Input(shape=input_shape), layers.Flatten(),
                                 layers.Dense(num_classes, activation=activation)])

    def not_a_model():
        return 42
    """
)


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_models"


def build(overrides: list[str]):
    """The plan of `overrides` and the model the runner builds from it (no training)."""
    from xentlab.config.checks import check_config
    from xentlab.config.preflight import resolve_plan
    from xentlab.core.models import build_model
    from xentlab.data import load_data
    from xentlab.runtime.strategy import build_strategy

    config = check_config(config_of(overrides))  # composed once: plan_of would compose again
    bundle = load_data(**config["data"])
    plan = resolve_plan(config, bundle, build_strategy("cpu"))
    return plan, build_model(plan.model, input_shape=bundle.input_shape, head=plan.head, **plan.arch)


def _activation(layer) -> str:
    return getattr(getattr(layer, "activation", None), "__name__", "?")


# Every combination LOSS_TABLE allows on 2-class data: loss kind x label encoding x from_logits.
COMBINATIONS = [
    (kind, encoding, logits) for kind in LOSS_TABLE for encoding in Encoding.names() for logits in (False, True)
    if not LOSS_TABLE[kind].needs_logits or logits
    if encoding in LOSS_TABLE[kind].encodings
]


def test_the_combinations_are_every_one_the_table_allows():
    allowed = []
    for kind in LOSS_TABLE:
        for encoding in Encoding.names():
            for logits in (False, True):
                try:
                    check_loss_combination(kind, encoding=encoding, from_logits=logits, num_classes=2)
                    allowed.append((kind, encoding, logits))
                except ConfigError:
                    pass
    assert sorted(allowed) == sorted(COMBINATIONS) and len(COMBINATIONS) == 18


@pytest.mark.parametrize(("loss", "encoding", "from_logits"), COMBINATIONS)
def test_a_backbone_gets_the_head_every_loss_needs(loss, encoding, from_logits, user_models):
    plan, model = build(["data=breast_cancer", "model=custom", f"model._target_={user_models}.backbone",
                         f"loss={loss}", f"labels={encoding}", f"loss.from_logits={from_logits}"])
    spec = LOSS_TABLE[loss]
    head = model.layers[-1]
    assert model.output_shape == (None, 1 if spec.single_unit else 2) == (None, plan.head.units)
    assert _activation(head) == ("linear" if from_logits else spec.activation)
    assert head.name == "head" and head.compute_dtype == "float32"
    out = np.asarray(model(np.random.default_rng(0).normal(size=(4, 30)).astype("float32")))
    if not from_logits:  # probabilities: softmax rows sum to 1, sigmoids in (0, 1)
        assert ((out > 0) & (out < 1)).all()
        if spec.activation == "softmax":
            np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(("target", "overrides", "shape"), [
    ("feature_layer", ["model.options={width: 5}"], (None, 10)),  # a layer; options reach the function
    ("conv_features", [], (None, 10)),  # (8, 8, 4) feature maps, averaged
])
def test_a_layer_or_a_feature_map_is_a_backbone_too(target, overrides, shape, user_models):
    _, model = build(["data=digits", "model=custom", f"model._target_={user_models}.{target}", *overrides])
    assert model.output_shape == shape and _activation(model.layers[-1]) == "softmax"


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.full_model=true", "loss.from_logits=true"],
     "the loss takes logits (loss.from_logits=true); model._target_=my_models.full's last layer has a softmax: "
     "return the backbone (model.full_model=false), remove the softmax, or set loss.from_logits=false"),
    (["model.full_model=true", "model.options={activation: linear}"],
     "last layer is linear: set loss.from_logits=true (its outputs are logits)"),
    (["model.full_model=true", "loss=binary"],  # 1 sigmoid unit needed, 2 softmax units given
     "outputs shape (None, 2), the loss needs (None, 1)"),
    ([], "it looks like a full model, and xentlab would add its head on top of probabilities. Return the backbone"),
])
def test_a_full_model_with_a_wrong_head_is_refused_with_the_fix(overrides, message, user_models):
    with pytest.raises(ConfigError) as raised:
        build(["data=breast_cancer", "model=custom", f"model._target_={user_models}.full", *overrides])
    assert message in str(raised.value) and isinstance(raised.value, ExpectedError)


def test_a_full_model_with_the_right_head_is_used_as_it_is(user_models):
    _, model = build(["data=breast_cancer", "model=custom", f"model._target_={user_models}.full",
                      "model.full_model=true", "model.options={activation: linear}", "loss.from_logits=true"])
    assert model.output_shape == (None, 2) and _activation(model.layers[-1]) == "linear"


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=custom"], "model=custom needs model._target_=package.module.function"),
    (["model=custom", "model._target_=my_models.not_a_model"], "returned a int; expected a Keras model or layer"),
    (["model=custom", "model._target_=my_models.backbone", "model.options={depth: 3}"],
     "model.options has ['depth'], which my_models.backbone does not take"),
    (["model=custom", "model._target_=nowhere.build"], "no module nowhere found; put the folder holding it on"),
    (["model=resnet", "model.depth=21"], "model.depth=21: a CIFAR ResNet has depth 6n+2"),
    (["model=keras_app", "model.arch=NoSuchNet"], "model.arch=NoSuchNet is not a keras.applications model"),
    (["model=keras_app", "model.weights=imagenet"], "model.weights=imagenet would download at run time"),
    (["model=keras_app", "model.weights=missing.weights.h5"], "no such file"),
    (["model=resnet", "data=breast_cancer"], "model=resnet needs images of shape (H, W, C)"),
])
def test_a_wrong_model_setting_is_a_config_error_before_anything_trains(overrides, message, user_models):
    with pytest.raises(ExpectedError) as raised:
        build(["data=digits", *overrides])
    assert message in str(raised.value)


@pytest.mark.parametrize(("depth", "millions"), [(20, 0.27), (32, 0.46)])
def test_the_resnet_has_the_papers_parameter_count(depth, millions):
    from xentlab.core.architectures import resnet
    from xentlab.core.models import HeadSpec, with_head

    model = with_head(resnet((32, 32, 3), depth=depth), HeadSpec(10, None), input_shape=(32, 32, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert round(trainable / 1e6, 2) == millions  # He et al. 2016, Table 6: 0.27 M and 0.46 M
    assert len([w for w in model.trainable_weights if len(w.shape) == 4]) == depth - 1  # convs; + the head = depth


def test_keras_app_resizes_small_images_and_freezes_the_backbone():
    from xentlab.core.architectures import keras_app

    model = keras_app((8, 8, 1), arch="MobileNetV3Small", freeze_backbone=True)
    assert model.get_layer("resize").output.shape[1:3] == (32, 32)
    assert not model.trainable_weights and model.output_shape[0] is None


@pytest.mark.slow
def test_keras_app_loads_a_local_weights_file_and_repeats_grey_images_to_colour(tmp_path):
    """model.weights=FILE: the backbone starts from the file's weights (never a download); 1-channel images become
    the 3 channels the weights expect."""
    import keras

    from xentlab.core.architectures import keras_app

    keras.utils.set_random_seed(1)
    saved = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                pooling="avg")
    saved.save_weights(tmp_path / "mnv3.weights.h5")
    keras.utils.set_random_seed(2)  # a different initialisation: equal weights can only come from the file
    model = keras_app((8, 8, 1), arch="MobileNetV3Small", weights=str(tmp_path / "mnv3.weights.h5"))
    base = model.layers[-1]
    assert model.get_layer("gray_to_rgb").output.shape[-1] == 3
    for ours, theirs in zip(base.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_a_custom_backbone_trains_through_the_runner(user_models, store):
    from xentlab.cli.train import run

    run(compose([*TINY, f"tracking.uri={store}", "data=breast_cancer", "model=custom",
                 f"model._target_={user_models}.backbone", "labels=one_hot", "loss=focal", "loss.from_logits=true"]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "custom/focal/one_hot/none"
    assert logged.data.params["model._target_"] == "my_models.backbone" and "test_nll" in logged.data.metrics


# ---------------------------------------------------------------------------------------------- slow: whole runs
@pytest.mark.slow
@pytest.mark.parametrize(("loss", "encoding", "from_logits"), COMBINATIONS)
def test_a_backbone_trains_a_step_under_every_loss(loss, encoding, from_logits, user_models):
    """One real optimizer step per combination: the loss accepts the head xentlab attached."""
    from xentlab.cli.train import prepare

    prepared = prepare(config_of(["data=breast_cancer", "model=custom", f"model._target_={user_models}.backbone",
                                  f"loss={loss}", f"labels={encoding}", f"loss.from_logits={from_logits}",
                                  "data.limit=32", "trainer.batch_size=16"]))
    history = prepared.model.fit(prepared.train_ds, epochs=1, steps_per_epoch=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()


LOAD_BACK = textwrap.dedent(
    """
    import json, sys
    import mlflow, numpy as np
    from mlflow.tracking import MlflowClient
    from xentlab.data import load_data
    uri, run_id = sys.argv[1:]
    mlflow.set_tracking_uri(uri)
    params = MlflowClient(uri).get_run(run_id).data.params
    bundle = load_data("breast_cancer", limit=int(params["data.limit"]), path=None, val_fraction=0.15,
                       test_fraction=0.15, split_seed=0)
    # compile=False: predicting needs no loss (loading the compiled model needs `import xentlab.core.losses` first)
    model = mlflow.keras.load_model(f"runs:/{run_id}/model", load_model_kwargs={"compile": False})
    logits = np.asarray(model.predict(bundle.x_test, verbose=0))
    p = np.exp(logits - logits.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
    print(json.dumps({"accuracy": float((p.argmax(-1) == bundle.y_test).mean()),
                      "nll": float(-np.log(p[np.arange(len(p)), bundle.y_test]).mean())}))
    """
)


@pytest.mark.slow
def test_a_custom_model_trained_by_the_cli_loads_back_in_a_fresh_process(tmp_path, store):
    """xentlab-train from the folder holding the user's module; the logged model, loaded in a fresh process that
    can import that module, gives the run's own test metrics."""
    (tmp_path / "my_models.py").write_text(USER_MODELS)
    result = run_cli([*TINY, "tracking.log_model=true", f"tracking.uri={store}", "data=breast_cancer",
                      "model=custom", "model._target_=my_models.backbone", "loss.from_logits=true"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED"
    loaded = subprocess.run([sys.executable, "-c", LOAD_BACK, store, run.info.run_id], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    again = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert again["accuracy"] == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)
    assert again["nll"] == pytest.approx(run.data.metrics["test_nll"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["model=resnet", "model.depth=20"],
    ["model=keras_app", "model.arch=MobileNetV3Small", "model.weights=null"],
])
def test_the_literatures_backbones_train_an_epoch_on_tiny_images(overrides, store):
    from xentlab.cli.train import run

    run(compose([*TINY, "data.limit=16", "trainer.batch_size=8", f"tracking.uri={store}", "data=digits",
                 *overrides]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED" and "test_accuracy" in logged.data.metrics
