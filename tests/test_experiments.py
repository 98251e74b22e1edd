"""The seed presets end to end on tiny data: contract metrics, artifacts, generation, per-head and per-class metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import compose, run_cli, runs_of

FAST = ["trainer.epochs=1", "tracking.log_model=false"]
TINY_LSTM = ["data.seq_len=20", "data.stride=20", "model.embedding_dim=16", "model.lstm_units=16",
             "trainer.batch_size=16", "model.sample_length=30"]


def _artifacts(uri, run_id, path=None):
    return {a.path for a in MlflowClient(uri).list_artifacts(run_id, path)}


def _train(overrides, store):
    from xentlab.cli.train import run

    run(compose([*overrides, f"tracking.uri={store}"]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED"
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "test_loss", "test_accuracy",
            "test_auc"} <= set(logged.data.metrics)
    return logged


def test_mnist_cnn_preset(store, mnist_npz):
    run = _train(["+experiment=mnist_cnn", f"data.path={mnist_npz}", *FAST, "data.limit=128"], store)
    assert run.data.params["optimizer.name"] == "adadelta" and run.data.params["optimizer.learning_rate"] == "1.0"
    assert run.data.params["trainer.batch_size"] == "128" and run.data.params["model.name"] == "mnist_cnn"
    assert {"evaluation/confusion_matrix.png", "evaluation/roc_curves.png", "evaluation/learning_curves.png",
            "evaluation/per_class.json"} <= _artifacts(store, run.info.run_id, "evaluation")


@pytest.mark.slow
def test_binary_auc_preset_softmax2_and_sigmoid1_log_the_same_auc(tmp_path):
    values = {}
    for head in ("softmax2", "sigmoid1"):
        store = f"sqlite:///{tmp_path / head}.db"
        run = _train(["+experiment=binary_auc", f"model.head={head}", "trainer.epochs=3", "tracking.log_model=false"],
                     store)
        values[head] = run
    assert values["softmax2"].data.params["model.head"] == "softmax2"
    assert values["sigmoid1"].info.run_name == "binary_auc/sigmoid1"
    for run in values.values():
        assert run.data.metrics["test_auc"] > 0.9  # breast cancer is easy; both heads learn it


def test_imbalanced_preset_logs_per_class_recall(store):
    run = _train(["+experiment=imbalanced", "weighting=balanced", *FAST], store)
    assert {f"test_recall_{c}" for c in "ABCD"} <= set(run.data.metrics)
    assert "class_weights.json" in _artifacts(store, run.info.run_id)
    weights = [float(w) for w in run.data.params["weighting.class_weights"].strip("[]").split(",")]
    assert weights[0] > weights[2]  # A (198 examples) weighs more than C (710)


@pytest.mark.parametrize("heads", ["shared", "separate"])
def test_periods_preset_logs_per_head_metrics(heads, store, tmp_path):
    run = _train(["+experiment=periods", f"model.heads={heads}", *FAST], store)
    per_head = ("auc", "accuracy", "nll", "ece", "brier", "balanced_accuracy", "macro_f1", "worst_class_recall")
    for h in range(3):
        assert {f"val_{m}_head{h}" for m in per_head} <= set(run.data.metrics)
    figures = _artifacts(store, run.info.run_id, "evaluation")
    assert {f"evaluation/confusion_matrix_head{h}.png" for h in range(3)} <= figures
    assert {f"evaluation/roc_curves_head{h}.png" for h in range(3)} <= figures
    reliability = json.loads(Path(MlflowClient(store).download_artifacts(
        run.info.run_id, "evaluation/reliability.json", str(tmp_path))).read_text())
    assert len(reliability["heads"]) == 3 and sum(reliability["count"]) == sum(
        sum(head["count"]) for head in reliability["heads"])  # all heads = the union of each head's positions
    tag = json.loads(run.data.tags["xentlab.reliability"])  # the same bins, where one search returns them
    assert tag["count"] == reliability["count"] and tag["ece"] == pytest.approx(reliability["ece"], abs=1e-6)
    assert tag["accuracy"] == pytest.approx([a if a is None else pytest.approx(a, abs=1e-6)
                                             for a in reliability["accuracy"]])


@pytest.mark.slow
def test_shakespeare_preset_generates_five_streams_and_xentlab_generate_reads_the_run(tmp_path, store, text_file):
    args = ["+experiment=shakespeare_lstm", f"data.path={text_file}", *TINY_LSTM, "trainer.epochs=1",
            "tracking.log_plots=false", f"tracking.uri={store}"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(store)
    assert run.data.params["model.name"] == "char_lstm" and run.data.params["optimizer.name"] == "rmsprop"
    text = MlflowClient(store).download_artifacts(run.info.run_id, "generated.txt", str(tmp_path))
    streams = open(text, encoding="utf-8").read().split("--- stream ")[1:]
    assert len(streams) == 5
    bodies = [s.split("\n", 1)[1].strip("\n") for s in streams]
    assert len(set(bodies)) == 5  # five independent samples, not one copied

    generate = subprocess.run(
        [sys.executable, "-m", "xentlab.cli.generate", "--run-id", run.info.run_id, "--tracking-uri", store,
         "--prompt", "ROMEO:", "--length", "25", "--temperature", "0.7"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert generate.returncode == 0, generate.stderr[-3000:]
    out = generate.stdout.split("--- stream ")[1:]
    assert len(out) == 5 and all(s.split("\n", 1)[1].startswith("ROMEO:") for s in out)


def test_generation_rebuilds_a_stateful_copy_that_matches_the_trained_model():
    """Feeding the stateful batch-5 copy one byte at a time gives the trained model's window outputs."""
    import keras

    from xentlab.core.models import build_model, head_spec
    from xentlab.core.sampling import reset_states, stateful_copy

    keras.utils.set_random_seed(0)
    model = build_model("char_lstm", input_shape=(12,), embedding_dim=8, lstm_units=8,
                        head=head_spec(loss="crossentropy", from_logits=False, num_classes=256))
    window = np.random.default_rng(0).integers(0, 256, size=(5, 12)).astype("int32")
    full = np.asarray(model.predict(window, verbose=0))
    twin = stateful_copy(model)
    reset_states(twin)
    steps = np.stack([np.asarray(twin.predict_on_batch(window[:, t : t + 1]))[:, 0] for t in range(12)], axis=1)
    np.testing.assert_allclose(steps, full, atol=1e-5)
    reset_states(twin)  # a reset starts the streams afresh
    again = np.asarray(twin.predict_on_batch(window[:, :1]))[:, 0]
    np.testing.assert_allclose(again, full[:, 0], atol=1e-5)


def test_shakespeare_offline_without_cache_names_data_path(monkeypatch):
    import keras

    from xentlab.data import DataError
    from xentlab.data import text as text_source

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DataError, match="data.path=/path/to/tinyshakespeare.txt"):
        text_source.load_shakespeare(path=None, val_fraction=0.05, test_fraction=0.05)


def test_text_split_is_by_position_without_leakage(text_file):
    from xentlab.data.text import load_text

    bundle = load_text(str(text_file), val_fraction=0.1, test_fraction=0.1, seq_len=20, stride=20)
    raw = np.frombuffer(text_file.read_bytes(), np.uint8)
    train_end = int(len(raw) * 0.8)
    assert bundle.x_train.max() < 256 and bundle.y_train.shape == bundle.x_train.shape
    np.testing.assert_array_equal(bundle.y_train[0][:-1], bundle.x_train[0][1:])  # targets shifted by one
    np.testing.assert_array_equal(bundle.x_val[0], raw[train_end : train_end + 20])  # val starts after train


@pytest.mark.parametrize(("args", "message"), [
    (["--length", "-5"], "--length must be a positive number of bytes per stream, got -5"),
    (["--temperature", "0"], "--temperature must be a finite number > 0"),
    (["--temperature", "-1"], "--temperature must be a finite number > 0"),
    (["--prompt", ""], "--prompt must not be empty"),
])
def test_generate_refuses_bad_arguments_before_loading_anything(args, message, capsys):
    from xentlab.cli.generate import main

    with pytest.raises(SystemExit) as stop:
        main(["--run-id", "does-not-matter", *args])
    assert stop.value.code == 2 and message in capsys.readouterr().err
