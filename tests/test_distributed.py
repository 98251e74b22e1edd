"""The custom training loop of xentlab.runtime.multi_worker against Keras' own fit and evaluate, and against numpy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import free_ports
from xentlab.core.losses import build_loss
from xentlab.core.pipeline import make_dataset
from xentlab.core.targets import LabelContract
from xentlab.runtime.multi_worker import evaluate_custom, fit_custom, loss_parts

RNG = np.random.default_rng(0)
X = RNG.normal(size=(90, 5)).astype("float32")
Y = RNG.integers(0, 3, 90)
Y[RNG.random(90) < 0.3] = -1  # n/a labels, masked: the replicas of a batch hold different unmasked counts
COMMON = {"batch_size": 32, "labels": LabelContract(3, ignore_class=-1)}


def _datasets():
    """90 training examples in batches of 32 (the last one 26), class-weighted; 40 validation examples."""
    train = make_dataset(X, Y, class_weights=np.array([1.0, 2.0, 0.5]), shuffle=True, seed=1, epochs=(0, 2),
                         **COMMON)
    return train, make_dataset(X[:40], Y[:40], **COMMON)


def _model(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu", kernel_regularizer="l2"),
                                  keras.layers.Dense(3)])
        model.compile(keras.optimizers.Adam(0.05), loss=build_loss("crossentropy", from_logits=True, ignore_class=-1),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


class Recorder(keras.callbacks.Callback):
    """Keeps what a callback is given, in order."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))


def test_fit_custom_gives_fits_history_and_evaluate_gives_evaluates_results():
    strategy = tf.distribute.get_strategy()
    model = _model(strategy)
    train, val = _datasets()
    expected = model.fit(train, validation_data=val, epochs=2, steps_per_epoch=3, verbose=0).history
    expected_test = model.evaluate(val, return_dict=True, verbose=0)

    model = _model(strategy)
    train, val = _datasets()
    recorder = Recorder()
    history = fit_custom(model, train, val, epochs=2, initial_epoch=0, steps_per_epoch=3, strategy=strategy,
                         global_batch_size=32, callbacks=[recorder])
    assert sorted(history) == sorted(expected) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for name, values in expected.items():
        np.testing.assert_allclose(history[name], values, rtol=1e-5, err_msg=name)
    test = evaluate_custom(model, val, strategy=strategy)
    assert test == pytest.approx(expected_test, rel=1e-5)
    keys = sorted(expected)
    epoch = [[("epoch_begin", e), *[("batch_end", b, ["loss"]) for b in range(3)], ("epoch_end", e, keys)]
             for e in (0, 1)]
    assert recorder.calls == epoch[0] + epoch[1]


def test_fit_custom_starts_at_initial_epoch():
    strategy = tf.distribute.get_strategy()
    model = _model(strategy)
    train, val = _datasets()
    history = fit_custom(model, train, val, epochs=2, initial_epoch=1, steps_per_epoch=3, strategy=strategy,
                         global_batch_size=32, callbacks=[])
    assert len(history["loss"]) == 1
    assert fit_custom(model, train, val, epochs=2, initial_epoch=2, steps_per_epoch=3, strategy=strategy,
                      global_batch_size=32, callbacks=[]) == {}  # a completed job: nothing to run


def test_loss_parts_add_up_to_the_single_device_loss_over_uneven_shares():
    """Two shares of one batch with different unmasked counts: numerators over the summed count give the loss of
    the whole batch; the mean of the shares' means (Keras' replica reduction) does not."""
    loss = build_loss("crossentropy", from_logits=True, ignore_class=-1)
    logits = RNG.normal(size=(10, 3)).astype("float32")
    y = np.array([0, -1, 2, 1, -1, -1, 0, 2, 1, 1])
    w = RNG.uniform(0.5, 2.0, size=10).astype("float32")
    whole = float(loss(y, logits, sample_weight=w))
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = y >= 0
    reference = -(w[valid] * log_p[valid, y[valid]]).sum() / valid.sum()
    assert whole == pytest.approx(reference, rel=1e-5)
    (n1, c1), (n2, c2) = [[float(t) for t in loss_parts(loss, y[s], logits[s], w[s])] for s in (slice(0, 3),
                                                                                               slice(3, 10))]
    assert (c1, c2) == (2.0, 5.0)
    assert (n1 + n2) / (c1 + c2) == pytest.approx(whole, rel=1e-5)
    assert (n1 / c1 + n2 / c2) / 2 != pytest.approx(whole, rel=1e-3)


def test_loss_parts_refuses_a_sum_reduction():
    with pytest.raises(ValueError, match="reduction='sum_over_batch_size'"):
        loss_parts(build_loss("crossentropy", reduction="sum"), np.array([0]), np.array([[0.5, 0.5, 0.0]]))


def test_fit_custom_over_two_replicas_matches_one_device():
    """MirroredStrategy over two logical CPUs (a fresh process: the CPU is split before TensorFlow starts): the
    loop's losses equal the single-device ones although the replicas hold different unmasked counts; a global
    batch that does not split over the replicas is refused."""
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, sys.argv[1])
        import tensorflow as tf
        from xentlab.runtime.strategy import split_cpu
        split_cpu(2)
        import test_distributed as t
        from xentlab.runtime.multi_worker import fit_custom
        out = {}
        for name, strategy in [("one", tf.distribute.get_strategy()),
                               ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
            train, val = t._datasets()
            out[name] = fit_custom(t._model(strategy), train, val, epochs=2, initial_epoch=0, steps_per_epoch=3,
                                   strategy=strategy, global_batch_size=32, callbacks=[])
            out[name + "_replicas"] = strategy.num_replicas_in_sync
        try:
            fit_custom(t._model(strategy), train, val, epochs=1, initial_epoch=0, steps_per_epoch=1,
                       strategy=strategy, global_batch_size=33, callbacks=[])
        except ValueError as err:
            out["refused"] = str(err)
        print("RESULT" + json.dumps(out))
    """)
    tests = str(Path(__file__).parent)
    result = subprocess.run([sys.executable, "-c", script, tests], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    assert (out["one_replicas"], out["two_replicas"]) == (1, 2)
    assert "global_batch_size=33 does not split over 2 replicas" in out["refused"]
    for name, values in out["one"].items():
        np.testing.assert_allclose(out["two"][name], values, rtol=1e-5, err_msg=name)


def _workers(per_worker: list[tuple[list[str], Path]]) -> list[tuple[int, str]]:
    """`xentlab-train strategy=multi_worker ARGS` as one cluster on 127.0.0.1, each worker with its own arguments
    and folder; (exit status, output) per worker."""
    import os

    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(len(per_worker))]}
    procs = []
    for index, (args, cwd) in enumerate(per_worker):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", "strategy=multi_worker", *args]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]


def _table(path: Path, flip: bool) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    rows = ["a,b,y", *[f"{a:.4f},{b:.4f},{(1 - c) if flip and i < 10 else c}"
                       for i, (a, b, c) in enumerate(zip(rng.normal(size=120), rng.normal(size=120), y, strict=True))]]
    path.write_text("\n".join(rows) + "\n")


TINY_MW = ["trainer.epochs=1", "data.limit=96", "model=mlp", "tracking.log_model=false", "tracking.log_plots=false"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["config", "data"])
def test_workers_on_different_jobs_are_refused_naming_what_differs(case, tmp_path, store):
    """Worker 1 started with another batch size and seed (the batch size alone crashed in a collective; the seed
    trained silently), or on another copy of the data file: both workers stop before training with one message
    naming each difference; the chief's run is FAILED with it."""
    from conftest import runs_of

    folders = [tmp_path / "w0", tmp_path / "w1"]
    for i, folder in enumerate(folders):
        folder.mkdir()
        _table(folder / "t.csv", flip=(case == "data" and i == 1))
    common = [*TINY_MW, "data=csv", "data.path=t.csv", "data.label=y", f"tracking.uri={store}"]
    extra = [["trainer.batch_size=32", "trainer.seed=0"],
             ["trainer.batch_size=64", "trainer.seed=1"] if case == "config" else ["trainer.batch_size=32",
                                                                                  "trainer.seed=0"]]
    results = _workers([([*common, *extra[i]], folders[i]) for i in range(2)])
    expected = (["trainer.batch_size (worker 0: 32, worker 1: 64)", "trainer.seed (worker 0: 0, worker 1: 1)"]
                if case == "config" else ["data (digest of the loaded splits) (worker 0: "])
    for code, out in results:
        assert code != 0, out[-3000:]
        assert "Collective instance" not in out and "Traceback" not in out, out[-3000:]
        assert "the workers were not started on the same job" in out
        assert all(text in out for text in expected), out[-3000:]
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and expected[0] in run.data.tags["xentlab.error"]
    assert "val_loss" not in run.data.metrics  # nothing trained
