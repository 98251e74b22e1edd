"""The validators as units (milliseconds each): the data checks, the config's values, and the combinations of
config and data that the pre-flight plan refuses, each with the override that fixes it. The journey (a refused run
ends FAILED with the message and no traceback) is one end-to-end test in test_train."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import config_of, plan_of
from xentlab.config import checks
from xentlab.errors import ExpectedError


def _npz(path, *, y_train=None, x_train=None, y_test=None, x_test=None):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(60, 28, 28)).astype(np.uint8) if x_train is None else x_train
    y = rng.integers(0, 10, 60) if y_train is None else y_train
    xt = x[:20] if x_test is None else x_test
    yt = rng.integers(0, 10, len(xt)) if y_test is None else y_test
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


labels60 = np.random.default_rng(1).integers(0, 10, 60)
BAD = {
    "out_of_range": (dict(y_train=np.where(labels60 == 3, 12, labels60)), "labels out of range: found [12]"),
    "negative": (dict(y_train=np.where(labels60 == 3, -1, labels60)), "labels out of range: found [-1]"),
    "float_not_whole": (dict(y_train=labels60 + 0.7), "non-whole numbers"),
    "one_hot_into_sparse": (dict(y_train=np.eye(10)[labels60]), "look one-hot"),
    "nan_features": (dict(x_train=np.full((60, 28, 28), np.nan, dtype=np.float32)), "NaN or inf"),
    "empty_test": (dict(x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.int64)), "split is empty"),
    "length_mismatch": (dict(y_test=np.zeros(5, np.int64)), "feature rows but"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_refused_before_anything_is_built(case, tmp_path):
    arrays, message = BAD[case]
    path = _npz(tmp_path / "data.npz", **arrays)
    with pytest.raises(checks.CheckError) as raised:
        plan_of(["data=mnist", f"data.path={path}", "model=mlp"])
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=binary"], "loss=binary (one sigmoid unit) needs 2 classes, the data has 10; use loss=crossentropy"),
        (["loss=weighted_binary", "labels=sparse"], "set labels=one_hot"),
        (["weighting=custom"], "weighting=custom needs weighting.weights with one value per class (10)"),
        (["model.head=sigmoid1"], "model.head=sigmoid1 is for 2-class data"),
        (["loss=logit_adjusted", "loss.from_logits=false"],
         "loss=logit_adjusted works on the logits (the head's raw outputs) and needs from_logits=True; received "
         "loss.from_logits=False. Set loss.from_logits=true"),
        (["model.head=sigmoid1", "loss=focal", "data=breast_cancer"], "model.head=sigmoid1 (one sigmoid unit) has no "
         "form of loss=focal"),
        (["model=mnist_cnn", "data=breast_cancer"], "model=mnist_cnn needs images of shape (H, W, C) with H, W >= 6"),
        (["model=char_lstm"], "model=char_lstm needs token ids labelled per position"),
        (["model=mlp", "data=periods"], "model=mlp needs one label per example"),
        (["data=breast_cancer", "weighting=custom", "weighting.weights=[0,0]"],
         "weighting.weights=[0.0, 0.0] gives weight 0 to every class present in the training"),
        (["data=breast_cancer", "weighting=custom"],
         "weighting=custom needs weighting.weights with one value per class (2), got None"),
    ],
)
def test_combinations_that_cannot_train_are_refused_with_the_fix(overrides, message):
    with pytest.raises(ExpectedError) as raised:
        plan_of(overrides)
    assert message in str(raised.value)


def test_a_model_that_does_not_fit_names_the_one_that_does():
    with pytest.raises(checks.CheckError) as raised:
        plan_of(["model=mnist_cnn", "data=breast_cancer"])
    assert "got inputs of shape (30,) (numbers) with labels of shape () per example; use model=mlp" in str(
        raised.value)


def test_a_global_batch_must_split_over_the_replicas():
    with pytest.raises(checks.CheckError, match="trainer.batch_size=3 is not divisible by the 2 replicas; use "
                                                "trainer.batch_size=2 or 4"):
        checks.check_batch(batch_size=3, replicas=2, train_size=100)
    checks.check_batch(batch_size=4, replicas=2, train_size=100)


# Values the schema's types accept but no run can use: refused first thing in the run, naming the key and the value
# as given.
OUT_OF_RANGE = [
    ("trainer.epochs=0", "trainer.epochs=0 is not allowed: it must be >= 1"),
    ("trainer.epochs=-1", "trainer.epochs=-1 is not allowed: it must be >= 1"),
    ("trainer.batch_size=0", "trainer.batch_size=0 is not allowed: it must be >= 1"),
    ("trainer.seed=-1", "trainer.seed=-1 is not allowed: seeds are integers in [0, 2**32 - 1]"),
    ("optimizer.learning_rate=nan", "optimizer.learning_rate=nan is not allowed: it must be a finite number > 0"),
    ("optimizer.learning_rate=0", "optimizer.learning_rate=0.0 is not allowed: it must be a finite number > 0"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5 is not allowed: a share of the labelled pool strictly between"),
    ("data.test_fraction=0", "data.test_fraction=0.0 is not allowed: a share of the labelled pool strictly between"),
    ("data.limit=0", "data.limit=0 is not allowed: a positive number of training examples, or null for all"),
]


@pytest.mark.parametrize(("override", "message"), OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_out_of_range_values_are_refused_with_the_value_as_given(override, message):
    with pytest.raises(checks.CheckError) as raised:
        checks.check_config(config_of([override]))
    assert message in str(raised.value)


@pytest.mark.parametrize(("override", "message"), [
    ("tracking.experiment=", "tracking.experiment='' is not allowed: an experiment needs a non-empty name"),
    ("tracking.uri=foo://bar", "tracking.uri='foo://bar' is not allowed: the scheme must be one of"),
    ("tracking.system_metrics_interval_s=0", "tracking.system_metrics_interval_s=0.0 is not allowed: it must be > 0"),
])
def test_tracking_values_are_refused(override, message):
    with pytest.raises(checks.CheckError) as raised:
        checks.check_tracking(config_of([override])["tracking"])
    assert message in str(raised.value)


def test_tracking_values_are_refused_before_any_store_is_touched(tmp_path, monkeypatch):
    from conftest import TINY, compose
    from xentlab.cli.train import run

    monkeypatch.chdir(tmp_path)
    with pytest.raises(checks.CheckError, match="tracking.uri='foo://bar' is not allowed"):
        run(compose([*TINY, "tracking.uri=foo://bar"]))
    assert not (tmp_path / "outputs").exists()


def test_an_ignore_class_no_label_carries_is_a_warning_of_the_plan():
    plan = plan_of(["model=mlp", "data=breast_cancer", "labels.ignore_class=99"])
    (warning,) = plan.warnings
    assert warning.startswith("labels.ignore_class=99 masks nothing: no label of any split equals 99")
    assert "labels seen: [0, 1]" in warning
    assert plan_of(["model=mlp", "data=breast_cancer"]).warnings == ()


def test_n1_labels_are_squeezed_explicitly():
    y = checks.check_labels(np.array([[1], [2], [0]]), split="train", num_classes=3, ignore_class=None)
    assert y.shape == (3,) and y.dtype == np.int64


def test_a_missing_data_file_names_data_path(tmp_path):
    from xentlab.data import DataError

    with pytest.raises(DataError, match=r"data.path=.*does not exist"):
        plan_of(["data=mnist", f"data.path={tmp_path / 'nope.npz'}"])


@pytest.mark.slow
def test_invalid_utf8_text_trains_as_bytes(tmp_path, store):
    from conftest import TINY, run_cli, runs_of

    text = tmp_path / "latin1.txt"
    text.write_bytes(("Caf\xe9 na\xefve \xff\xfe " * 200).encode("latin-1"))  # not valid UTF-8
    args = [*TINY, f"tracking.uri={store}", "data=text", f"data.path={text}", "data.seq_len=20", "data.stride=20",
            "model=char_lstm", "model.embedding_dim=8", "model.lstm_units=8", "model.sample_length=10",
            "optimizer=rmsprop"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED"
