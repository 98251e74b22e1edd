"""One rule for outputs -> probabilities: numpy and TensorFlow agree, logits are stated, never guessed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, log_softmax
from scipy.special import softmax as scipy_softmax

from xentlab.core.probabilities import (
    confidence_bins,
    confidence_bins_tf,
    log_probabilities_tf,
    to_probabilities,
    to_probabilities_tf,
)

RNG = np.random.default_rng(0)
LOGITS = (RNG.normal(size=(4, 6, 5)) * 3).astype(np.float32)
UNIT = (RNG.normal(size=(7, 1)) * 4).astype(np.float32)


def test_softmax_and_sigmoid_from_logits_match_scipy():
    np.testing.assert_allclose(to_probabilities(LOGITS, True), scipy_softmax(LOGITS.astype(np.float64), -1),
                               rtol=1e-12)
    p = expit(UNIT.astype(np.float64))
    np.testing.assert_allclose(to_probabilities(UNIT, True), np.concatenate([1 - p, p], -1), rtol=1e-12)
    np.testing.assert_allclose(to_probabilities(p, False), np.concatenate([1 - p, p], -1), rtol=1e-12)
    assert np.isfinite(to_probabilities(np.array([[-1e4], [1e4]]), True)).all()


def test_probabilities_are_renormalised_not_guessed():
    rows = np.array([[0.2, 0.3, 0.1]])  # a probability row whose float sum drifted: renormalised, not softmaxed
    np.testing.assert_allclose(to_probabilities(rows, False), rows / 0.6)
    # The same numbers read as logits give a different distribution: the caller's word decides.
    assert not np.allclose(to_probabilities(rows, True), to_probabilities(rows, False))
    with pytest.raises(TypeError, match="from_logits must be True or False"):
        to_probabilities(rows, None)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("outputs", [LOGITS, UNIT], ids=["softmax", "sigmoid_unit"])
def test_tensorflow_counterparts_agree_with_numpy(outputs, from_logits):
    if from_logits:
        x = outputs
    else:  # probabilities: p of one sigmoid unit, or softmax rows
        x = to_probabilities(outputs, True).astype(np.float32)
        x = x[..., -1:] if outputs.shape[-1] == 1 else x
    expected = to_probabilities(x, from_logits)
    np.testing.assert_allclose(to_probabilities_tf(x, from_logits).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(np.exp(log_probabilities_tf(x, from_logits).numpy()), expected, atol=1e-6)


def test_log_probabilities_from_logits_are_exact_where_probabilities_underflow():
    z = np.array([[0.0, -200.0, 5.0]], dtype=np.float32)
    np.testing.assert_allclose(log_probabilities_tf(z, True).numpy(), log_softmax(z.astype(np.float64), -1),
                               rtol=1e-6)
    assert log_probabilities_tf(np.array([[1.0, 0.0]], np.float32), False).numpy()[0, 1] == pytest.approx(
        np.log(1e-7), rel=1e-5)  # from probabilities: Keras' clip


def test_confidence_bins_are_right_closed_equal_width_in_numpy_and_tensorflow():
    c = np.array([0.0, 1e-9, 1 / 15, 1 / 15 + 1e-6, 0.5, 0.8, 14 / 15 + 1e-6, 1.0])
    expected = [0, 0, 0, 1, 7, 11, 14, 14]  # (b/15, (b+1)/15]; 0.8 = 12/15 closes bin 11
    assert confidence_bins(c).tolist() == expected
    inner = np.array([0.03, 0.3, 0.51, 0.77, 0.99])
    assert confidence_bins_tf(inner).numpy().tolist() == confidence_bins(inner).tolist() == [0, 4, 7, 11, 14]


def test_sampling_follows_the_stated_output_kind_and_temperature():
    from xentlab.core.sampling import sampling_probabilities

    z = np.array([[2.0, 0.0, -1.0]])
    p = scipy_softmax(z, -1)
    np.testing.assert_allclose(sampling_probabilities(z, True, 1.0), p, rtol=1e-12)
    np.testing.assert_allclose(sampling_probabilities(p, False, 1.0), p, rtol=1e-12)
    np.testing.assert_allclose(sampling_probabilities(z, True, 0.5), scipy_softmax(z / 0.5, -1), rtol=1e-9)
    # A softmax output read as logits would be flattened towards uniform: the flag, not the values, decides.
    assert not np.allclose(sampling_probabilities(p, True, 1.0), p, atol=1e-3)
    from xentlab.core.sampling import generate

    with pytest.raises(TypeError, match="from_logits must be True or False"):
        generate(object(), "ROMEO:", from_logits="auto")  # refused before the model is touched


def test_xentlab_generate_reads_from_logits_from_the_run(tmp_path):
    import mlflow

    from xentlab.cli.generate import run_from_logits

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("generate", artifact_location=str(tmp_path / "artifacts"))
    runs = {}
    for value in ("True", "False", None):
        run = client.create_run(experiment)
        if value is not None:
            client.log_param(run.info.run_id, "loss.from_logits", value)
        runs[value] = run.info.run_id
    assert run_from_logits(client, runs["True"]) is True
    assert run_from_logits(client, runs["False"]) is False
    with pytest.raises(ValueError, match="loss.from_logits=None"):
        run_from_logits(client, runs[None])


@pytest.mark.parametrize("from_logits", [True, False])
def test_one_reading_of_every_head_form_feeds_metrics_calibration_and_figures(from_logits):
    """A sigmoid unit and the 2-unit head with the same probabilities score the same in every reader: the class
    outputs (numpy and TensorFlow), the arg-max the accuracy takes, the AUC's scores, calibration's logits."""
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    from xentlab.core import calibration
    from xentlab.core.metrics import SparseAccuracy, SparseAUC, SparseNLL
    from xentlab.core.probabilities import class_outputs

    z = np.concatenate([UNIT, [[0.0]]]).astype(np.float32)  # z = 0: p = 0.5, the tie goes to class 0
    p = expit(z.astype(np.float64))
    unit = z if from_logits else p.astype(np.float32)
    two = np.concatenate([np.zeros_like(z), z], -1) if from_logits else np.concatenate([1 - p, p], -1)
    np.testing.assert_allclose(class_outputs(unit, from_logits), two, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(class_outputs(tf.constant(unit), from_logits).numpy(), two, rtol=1e-6, atol=1e-7)
    assert class_outputs(LOGITS, True).shape == LOGITS.shape  # K units are K classes, untouched
    y = (np.arange(len(z)) % 2).astype(int)
    for metric, reference in ((SparseAccuracy, np.mean((z[:, 0] > 0) == y)),
                              (SparseAUC, roc_auc_score(y, z[:, 0])),
                              (SparseNLL, -np.mean(np.log(np.where(y == 1, p[:, 0], 1 - p[:, 0]))))):
        args = (2,) if metric is SparseAUC else ()
        got = [metric(*args, from_logits=from_logits) for _ in range(2)]
        got[0].update_state(y, unit)
        got[1].update_state(y, two.astype(np.float32))
        assert float(got[0].result()) == pytest.approx(reference, abs=2e-3)
        assert float(got[0].result()) == pytest.approx(float(got[1].result()), abs=1e-6)
    assert calibration.nll(unit, y, from_logits=from_logits) == pytest.approx(
        calibration.nll(two, y, from_logits=from_logits), abs=1e-6)
    np.testing.assert_allclose(to_probabilities(unit, from_logits), np.concatenate([1 - p, p], -1), atol=1e-6)
