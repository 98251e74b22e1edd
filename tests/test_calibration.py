"""Tests of core.calibration: temperature scaling finds a known temperature, the numpy metrics against independent
references (and the training-time `nll` metric), every head form (logits, probabilities, one sigmoid unit), masks and
label ranks, and the calibration config group."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from conftest import compose
from xentlab.core import calibration as C
from xentlab.core.targets import LabelContract


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sample_labels(true_logits, rng):
    """Labels drawn from softmax(true_logits): the true logits are perfectly calibrated."""
    p = softmax(true_logits)
    u = rng.random((*p.shape[:-1], 1))
    return np.minimum((p.cumsum(-1) < u).sum(-1), p.shape[-1] - 1)


def calibrated_problem(n=20000, k=5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    return z, sample_labels(z, rng)


def reference_ece(p, y, bins=15):
    """Guo et al.'s loop: bins (lo, hi] of the top-label confidence, weighted |accuracy - confidence|."""
    confidence, predicted = p.max(-1), p.argmax(-1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs((predicted[inside] == y[inside]).mean() - confidence[inside].mean())
    return total


# ---------------------------------------------------------------------------------------------- the temperature
@pytest.mark.parametrize("scale", [3.0, 0.5])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_recovers_a_known_temperature(scale, from_logits):
    """Outputs = true logits * scale (over-confident for 3, under-confident for 0.5): T is close to the scale."""
    z, y = calibrated_problem()
    outputs = z * scale if from_logits else softmax(z * scale)
    t = C.fit_temperature(outputs, y, from_logits=from_logits)
    assert t == pytest.approx(scale, rel=0.05)
    # dividing by T undoes the scaling: the calibrated NLL is that of the true logits, to sampling noise
    assert C.nll(outputs, y, from_logits=from_logits, temperature=t) == pytest.approx(
        C.nll(z, y, from_logits=True), rel=2e-3)


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_sigmoid_head_recovers_its_temperature_and_matches_the_two_unit_softmax(from_logits):
    rng = np.random.default_rng(1)
    logit = rng.normal(size=(20000, 1)) * 2.0
    y = (rng.random(20000) < 1 / (1 + np.exp(-logit[:, 0]))).astype(int)
    outputs = 3.0 * logit if from_logits else 1 / (1 + np.exp(-3.0 * logit))
    t = C.fit_temperature(outputs, y, from_logits=from_logits)
    assert t == pytest.approx(3.0, rel=0.05)
    x = 3.0 * logit
    if not from_logits:  # a probability head is read at p clipped to [1e-7, 1 - 1e-7], as Keras clips
        p = np.clip(outputs, 1e-7, 1 - 1e-7)
        x = np.log(p) - np.log1p(-p)
    two_units = np.concatenate([np.zeros_like(x), x], axis=1)  # softmax([0, x]) = [1 - sigmoid(x), sigmoid(x)]
    assert C.fit_temperature(two_units, y, from_logits=True) == pytest.approx(t, rel=1e-4)
    for metric in (C.nll, C.ece, C.brier):
        assert metric(outputs, y, from_logits=from_logits, temperature=t) == pytest.approx(
            metric(two_units, y, from_logits=True, temperature=t), rel=1e-4, abs=1e-9)
    # binary Brier over the two classes is twice the usual (p - y)^2
    p = 1 / (1 + np.exp(-3.0 * logit[:, 0]))
    assert C.brier(outputs, y, from_logits=from_logits) == pytest.approx(2 * np.mean((p - y) ** 2), rel=1e-5)


def test_calibrated_nll_is_the_minimum_on_validation():
    z, y = calibrated_problem(n=3000, seed=2)
    outputs = z * 2.2 + np.random.default_rng(3).normal(size=z.shape) * 0.3
    t = C.fit_temperature(outputs, y, from_logits=True)
    best = C.nll(outputs, y, from_logits=True, temperature=t)
    assert best <= C.nll(outputs, y, from_logits=True)
    grid = [C.nll(outputs, y, from_logits=True, temperature=float(np.exp(s))) for s in np.linspace(-3, 3, 241)]
    assert best <= min(grid) + 1e-9


def test_a_perfectly_separated_validation_set_stops_at_the_lower_bound():
    # margins small enough that the NLL still falls measurably at T = e^-3 (margin 0.3 / 0.05 = 6)
    outputs = np.array([[0.5, 0.0], [0.0, 0.5], [0.3, 0.0]])
    t = C.fit_temperature(outputs, np.array([0, 1, 0]), from_logits=True)
    assert t == pytest.approx(np.exp(C.LOG_T_BOUNDS[0]), rel=1e-3)


# ---------------------------------------------------------------------------------------------- the metrics
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_temperature_one_reproduces_the_uncalibrated_metrics(from_logits):
    import tensorflow as tf

    from xentlab.core.metrics import SparseNLL

    z, y = calibrated_problem(n=500, k=4, seed=4)
    z = 2.0 * z
    p = softmax(z)
    outputs = z if from_logits else p.astype(np.float32).astype(np.float64)
    p = softmax(z) if from_logits else outputs / outputs.sum(-1, keepdims=True)
    onehot = np.eye(4)[y]
    assert C.nll(outputs, y, from_logits=from_logits) == pytest.approx(-np.log(p[np.arange(500), y]).mean(), rel=1e-6)
    assert C.brier(outputs, y, from_logits=from_logits) == pytest.approx(((p - onehot) ** 2).sum(-1).mean(), rel=1e-6)
    assert C.ece(outputs, y, from_logits=from_logits) == pytest.approx(reference_ece(p, y), abs=1e-9)
    metric = SparseNLL(from_logits=from_logits)  # the training-time `nll`, in float32
    metric.update_state(y, tf.constant(outputs, tf.float32))
    assert C.nll(outputs, y, from_logits=from_logits) == pytest.approx(float(metric.result()), rel=1e-5)


def test_ece_matches_the_reference_loop_and_a_hand_example():
    rng = np.random.default_rng(5)
    for k in (2, 3, 10):
        logits = rng.normal(size=(2000, k)) * 3
        y = rng.integers(0, k, 2000)
        for t in (0.5, 1.0, 4.0):
            expected = reference_ece(softmax(logits / t), y)
            assert C.ece(logits, y, from_logits=True, temperature=t) == pytest.approx(expected, abs=1e-12)
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right): |0.5 - 0.9| * 2/3 + |1 - 0.6| * 1/3
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    assert C.ece(probs, np.array([0, 1, 1]), from_logits=False) == pytest.approx(0.4 * 2 / 3 + 0.4 / 3, abs=1e-6)


def test_every_labelled_position_counts_and_masked_ones_are_left_out():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(40, 3, 5)) * 2  # sequence or multi-head outputs (N, T, K)
    y = sample_labels(z, rng)
    y[::3, 1] = -1
    z[y == -1] = np.nan  # whatever masked positions hold is never read
    keep = y != -1
    t = C.fit_temperature(z, y, from_logits=True, ignore_class=-1)
    assert t == pytest.approx(C.fit_temperature(z[keep], y[keep], from_logits=True), rel=1e-9)
    for metric in (C.nll, C.ece, C.brier):
        assert metric(z, y, from_logits=True, temperature=1.7, ignore_class=-1) == pytest.approx(
            metric(z[keep], y[keep], from_logits=True, temperature=1.7), rel=1e-12)
    assert C.nll(z, y[..., None], from_logits=True, ignore_class=-1) == C.nll(z, y, from_logits=True, ignore_class=-1)


def test_calibrate_fits_on_validation_and_scores_test():
    z, y = calibrated_problem(n=8000, seed=7)
    val, test = slice(0, 4000), slice(4000, None)
    out = C.calibrate(2.5 * z[val], y[val], 2.5 * z[test], y[test], LabelContract(z.shape[-1], from_logits=True))
    assert set(out) == {"calibration.temperature", "test_nll_calibrated", "test_ece_calibrated",
                        "test_brier_calibrated", "test_classwise_ece_calibrated", "test_adaptive_ece_calibrated"}
    t = out["calibration.temperature"]
    assert t == C.fit_temperature(2.5 * z[val], y[val], from_logits=True)
    assert out["test_nll_calibrated"] == C.nll(2.5 * z[test], y[test], from_logits=True, temperature=t)
    assert out["test_ece_calibrated"] == C.ece(2.5 * z[test], y[test], from_logits=True, temperature=t)
    assert out["test_brier_calibrated"] == C.brier(2.5 * z[test], y[test], from_logits=True, temperature=t)
    assert out["test_classwise_ece_calibrated"] == C.classwise_ece(2.5 * z[test], y[test], from_logits=True,
                                                                   temperature=t)
    assert out["test_adaptive_ece_calibrated"] == C.adaptive_ece(2.5 * z[test], y[test], from_logits=True,
                                                                 temperature=t)
    for name, metric in [("nll", C.nll), ("ece", C.ece), ("brier", C.brier), ("classwise_ece", C.classwise_ece),
                         ("adaptive_ece", C.adaptive_ece)]:  # over-confident: calibration helps
        assert out[f"test_{name}_calibrated"] < metric(2.5 * z[test], y[test], from_logits=True)


@pytest.mark.parametrize(
    ("outputs", "y", "kwargs", "message"),
    [
        (np.zeros((4, 3)), np.eye(3)[[0, 1, 2, 0]], {}, r"y must hold integer class ids of shape outputs.shape\[:-1\]"),
        (np.zeros((4, 3)), np.array([0, 1, 3, 0]), {}, r"class ids in \[0, 3\) at labelled positions; found \[3.0\]"),
        (np.zeros((2, 3)), np.array([-1, -1]), {"ignore_class": -1}, "no labelled position"),
        (np.full((2, 3), np.nan), np.array([0, 1]), {}, "NaN or inf"),
        (np.zeros((2, 3)), np.array([0, 1]), {"temperature": 0.0}, "temperature must be a finite number > 0"),
    ],
)
def test_bad_inputs_say_what_was_expected(outputs, y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        C.nll(outputs, y, from_logits=True, **kwargs)


# ---------------------------------------------------------------------------------------------- the config group
def test_calibration_group_defaults_to_none_and_refuses_a_typo_at_compose_time():
    from omegaconf import OmegaConf

    from xentlab.tracking.runs import flatten_params

    assert compose([]).calibration.method == "none"
    cfg = compose(["calibration=temperature"])
    assert cfg.calibration.method == "temperature" and str(cfg.calibration.method) == "temperature"
    flat = flatten_params(OmegaConf.to_container(cfg, resolve=True))
    assert flat["calibration.method"] == "temperature"
    with pytest.raises((ConfigCompositionException, ValidationError)) as raised:
        compose(["calibration.method=temprature"])
    text = f"{raised.value} {raised.value.__cause__}"
    assert "temprature" in text and "none" in text and "temperature" in text
