"""Bad input through the real runner: a clear message, a non-zero exit, a FAILED run without metrics."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, compose, run_cli, runs_of
from xentlab.config import checks


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


def _run_in_process(overrides: list[str]) -> str:
    """The real runner in this process (the CLI's exit code is covered in test_train): returns the error text."""
    from xentlab.cli.train import run

    with pytest.raises(Exception) as raised:
        run(compose(overrides))
    return f"{type(raised.value).__name__}: {raised.value}"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_fails_before_training(case, tmp_path, store):
    arrays, message = BAD[case]
    path = _npz(tmp_path / "data.npz", **arrays)
    error = _run_in_process([*TINY, f"tracking.uri={store}", "data=mnist", f"data.path={path}", "model=mlp"])
    assert message in error
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and message in run.data.tags["xentlab.error"]
    assert not run.data.metrics  # nothing trained


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=binary"], "loss=binary (one sigmoid unit) needs 2 classes, the data has 10; use loss=crossentropy"),
        (["loss=weighted_binary", "labels=sparse"], "set labels=one_hot"),
        (["weighting=custom"], "weighting=custom needs weighting.weights with one value per class (10)"),
        (["model.head=sigmoid1"], "model.head=sigmoid1 is for 2-class data"),
        (["trainer.batch_size=3", "strategy=multi_cpu"], "not divisible by the 2 replicas"),
        (["data.na_fraction=1.5"], "data.na_fraction must be in [0, 1), got 1.5"),
        (["loss=logit_adjusted", "loss.from_logits=false"],
         "loss=logit_adjusted works on the logits (the head's raw outputs) and needs from_logits=True; received "
         "loss.from_logits=False. Set loss.from_logits=true"),
        (["data.long_tail_ratio=0.5"], "data.long_tail_ratio must be a number >= 1"),
        (["data=periods", "data.long_tail_ratio=10"], "set data.long_tail_ratio=1"),
        (["data=periods", "data.na_fraction=0.1", "data.drop_na=true"],
         "mask the n/a positions instead with labels.ignore_class=-1"),
    ],
)
def test_bad_combinations_fail_with_the_override_that_fixes_them(overrides, message, tmp_path, store):
    if "strategy=multi_cpu" in overrides:  # must split the CPU before TensorFlow starts: a fresh process
        result = run_cli([*TINY, f"tracking.uri={store}", "model=mlp", *overrides], cwd=tmp_path)
        assert result.returncode != 0
        error = result.stderr
    else:
        error = _run_in_process([*TINY, f"tracking.uri={store}", "model=mlp", *overrides])
    assert message in error
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and message in run.data.tags["xentlab.error"]


@pytest.mark.parametrize("strategy", ["gpu", "multi_gpu", "tpu", "multi_worker"])
def test_missing_hardware_gives_the_documented_error_fast(strategy, store):
    import time

    start = time.time()
    error = _run_in_process([*TINY, f"tracking.uri={store}", f"strategy={strategy}"])
    assert time.time() - start < 10  # no hang waiting for a TPU or a cluster
    expected = {"gpu": "found 0; devices found", "multi_gpu": "found 0; devices found",
                "tpu": "found no TPU on this host", "multi_worker": "needs the TF_CONFIG"}[strategy]
    assert expected in error
    if strategy != "multi_worker":
        assert "strategy=cpu" in error
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and expected in run.data.tags["xentlab.error"]


def test_auto_picks_the_cpu_here(store):
    from xentlab.cli.train import run as train

    train(compose([*TINY, f"tracking.uri={store}", "strategy=auto", "model=mlp"]))
    (run,) = runs_of(store)
    assert run.data.params["hardware.strategy"] == "cpu" and run.data.params["hardware.precision"] == "float32"


def test_n1_labels_are_squeezed_explicitly():
    y = checks.check_labels(np.array([[1], [2], [0]]), split="train", num_classes=3, ignore_class=None)
    assert y.shape == (3,) and y.dtype == np.int64


def test_head_checks_for_user_models():
    base = dict(output_shape=(None, 10), label_shape=(), units=10, num_classes=10, head_dtype="float32",
                single_unit=False)
    with pytest.raises(checks.CheckError, match="apply it twice"):
        checks.check_model_output(head_activation="softmax", from_logits=True, **base)
    with pytest.raises(checks.CheckError, match="expects probabilities"):
        checks.check_model_output(head_activation=None, from_logits=False, **base)
    with pytest.raises(checks.CheckError, match="must be float32"):
        checks.check_model_output(**{**base, "head_dtype": "float16"}, head_activation="softmax", from_logits=False)
    with pytest.raises(checks.CheckError, match="head has 8 units but the data has 10 classes"):
        checks.check_model_output(**{**base, "output_shape": (None, 8)}, head_activation="softmax", from_logits=False)


@pytest.mark.slow
def test_invalid_utf8_text_trains_as_bytes(tmp_path, store):
    text = tmp_path / "latin1.txt"
    text.write_bytes(("Caf\xe9 na\xefve \xff\xfe " * 200).encode("latin-1"))  # not valid UTF-8
    args = [*TINY, f"tracking.uri={store}", "data=text", f"data.path={text}", "data.seq_len=20", "data.stride=20",
            "model=char_lstm", "model.embedding_dim=8", "model.lstm_units=8", "model.sample_length=10",
            "optimizer=rmsprop"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED"


# Values the schema's types accept but no run can use: each refused first thing in the run, naming the key and
# the value as given, and the run is FAILED with that message.
OUT_OF_RANGE = [
    ("trainer.epochs=0", "trainer.epochs=0 is not allowed: it must be >= 1"),
    ("trainer.epochs=-1", "trainer.epochs=-1 is not allowed: it must be >= 1"),
    ("trainer.seed=-1", "trainer.seed=-1 is not allowed: seeds are integers in [0, 2**32 - 1]"),
    ("optimizer.learning_rate=nan", "optimizer.learning_rate=nan is not allowed: it must be a finite number > 0"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5 is not allowed: a share of the labelled pool strictly between"),
    ("weighting=custom", "weighting=custom needs weighting.weights with one value per class (2), got None"),
    ("+weighting.weights=[0,0]", "weighting.weights=[0.0, 0.0] gives weight 0 to every class present in the training"),
]


@pytest.mark.parametrize(("override", "message"), OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_out_of_range_values_fail_the_run_with_the_value_as_given(override, message, store):
    extra = ["weighting=custom"] if override.startswith("+weighting") else []
    error = _run_in_process([*TINY, f"tracking.uri={store}", "model=mlp", "data=breast_cancer", *extra,
                             override.lstrip("+")])
    assert message in error
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and message in run.data.tags["xentlab.error"]
    assert "test_loss" not in run.data.metrics  # refused before anything was trained or evaluated


@pytest.mark.parametrize(("override", "message"), [
    ("tracking.experiment=", "tracking.experiment='' is not allowed: an experiment needs a non-empty name"),
    ("tracking.uri=foo://bar", "tracking.uri='foo://bar' is not allowed: the scheme must be one of"),
])
def test_tracking_values_are_refused_before_any_store_is_touched(override, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = _run_in_process([*TINY, override])
    assert message in error
    assert not (tmp_path / "outputs").exists()


def test_an_ignore_class_no_label_carries_is_reported(store, capsys):
    from xentlab.cli.train import run

    run(compose([*TINY, f"tracking.uri={store}", "model=mlp", "data=breast_cancer", "labels.ignore_class=99"]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED"
    warning = logged.data.tags["xentlab.warning"]
    assert warning.startswith("labels.ignore_class=99 masks nothing: no label of any split equals 99")
    assert "labels seen: [0, 1]" in warning and warning in capsys.readouterr().err
