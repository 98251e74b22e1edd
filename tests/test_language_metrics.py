"""A language model is judged in bits per character: bpc and perplexity from the streaming nll, against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xentlab.core.language_metrics import bits_per_char, language_model_metrics, perplexity


def test_bpc_and_perplexity_of_byte_sequences_equal_numpy():
    """Windows of bytes (N, T) against logits (N, T, 256), one position masked: the run's `nll` metric turned into
    bpc equals -mean log2 p(true byte) computed in numpy, and perplexity 2**bpc."""
    from xentlab.core.metrics import SparseNLL

    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, size=(4, 9, 256)).astype("float32")
    labels = rng.integers(0, 256, size=(4, 9))
    labels[1, 3] = -1  # the ignore class: left out of nll, so out of bpc too
    metric = SparseNLL(from_logits=True, ignore_class=-1)
    metric.update_state(labels, logits)
    nll = float(metric.result())

    z = logits.astype("float64")
    log2_p = (z - z.max(-1, keepdims=True)) / math.log(2) - np.log2(np.exp(z - z.max(-1, keepdims=True)).sum(-1,
                                                                                                             keepdims=True))
    keep = labels != -1
    reference = -np.take_along_axis(log2_p, np.where(keep, labels, 0)[..., None], axis=-1)[..., 0][keep].mean()
    got = language_model_metrics({"nll": nll, "val_nll": nll, "test_nll": nll})
    assert got["bpc"] == got["val_bpc"] == got["test_bpc"] == pytest.approx(reference, rel=1e-5)
    assert got["test_perplexity"] == pytest.approx(2.0 ** reference, rel=1e-5)
    assert set(got) == {"bpc", "val_bpc", "test_bpc", "test_perplexity"}


def test_uniform_bytes_cost_eight_bits():
    assert bits_per_char(math.log(256)) == pytest.approx(8.0)
    assert perplexity(math.log(256)) == pytest.approx(256.0)
    assert perplexity(1e4) == math.inf  # beyond float range, not an OverflowError
    assert language_model_metrics({"loss": 1.0, "accuracy": 0.5}) == {}


# ------------------------------------------------------------------------------------------ the language model's set
def test_a_language_model_computes_nll_and_accuracy_and_the_extra_metrics_it_names():
    from xentlab.core.metric_set import build_run_metrics
    from xentlab.core.targets import LabelContract
    from xentlab.metric_table import CLASSIFICATION, LANGUAGE_MODEL

    contract = LabelContract(256, from_logits=True, label_shape=(20,))
    assert [m.name for m in build_run_metrics(contract, task=LANGUAGE_MODEL)] == ["nll", "accuracy"]
    with_extra = [m.name for m in build_run_metrics(contract, task=LANGUAGE_MODEL, extra=["auc", "ece"])]
    assert with_extra == ["nll", "ece", "accuracy", "auc"]  # the table's order, whatever the order asked
    classifier = {m.name: m for m in build_run_metrics(LabelContract(4), task=CLASSIFICATION)}
    assert {"auc", "ece", "classwise_ece", "adaptive_ece", "brier", "confusion"} <= set(classifier)
    assert classifier["confusion"].statistics == ("balanced_accuracy", "macro_f1", "worst_class_recall")
    only_f1 = build_run_metrics(contract, task=LANGUAGE_MODEL, extra=["macro_f1"])[-1]
    assert only_f1.statistics == ("macro_f1",)


def test_an_unknown_extra_metric_is_refused_before_training_with_the_known_names(store, text_file):
    from mlflow.tracking import MlflowClient

    from conftest import TINY, compose
    from xentlab.cli.train import run
    from xentlab.errors import ExpectedError

    args = [*TINY, f"tracking.uri={store}", "data=text", f"data.path={text_file}", "data.seq_len=20",
            "data.stride=20", "model=char_lstm", "model.embedding_dim=8", "model.lstm_units=8",
            "metrics.extra=[auc,bleu]"]
    with pytest.raises(ExpectedError, match=r"metrics.extra has unknown metric names \['bleu'\]; known: \[.*'auc'"):
        run(compose(args))
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("xentlab").experiment_id])
    assert logged.info.status == "FAILED" and "bleu" in logged.data.tags["xentlab.error"]
    assert "loss" not in logged.data.metrics  # nothing trained


def test_any_sequence_model_over_a_vocabulary_is_a_language_model():
    from xentlab.core.metric_set import metric_task
    from xentlab.core.models import DataShapes
    from xentlab.metric_table import CLASSIFICATION, LANGUAGE_MODEL

    text = DataShapes(input_shape=(20,), integer_inputs=True, label_shape=(20,))  # next-token windows
    assert metric_task("char_lstm", text) == LANGUAGE_MODEL
    assert metric_task("custom", text) == LANGUAGE_MODEL  # a user's sequence model on the same data
    periods = DataShapes(input_shape=(60,), integer_inputs=True, label_shape=(3,))  # token ids, 3 heads
    images = DataShapes(input_shape=(8, 8, 1), integer_inputs=False, label_shape=())
    assert metric_task("multi_head", periods) == metric_task("mlp", images) == CLASSIFICATION
