"""Class-wise and adaptive ECE (streaming metrics and their numpy twins in core.calibration) and shot-group accuracy
against independent numpy and scikit-learn references: hand-computed cases, masks, weights, heads, and the bound of
the adaptive approximation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from xentlab.core import calibration
from xentlab.core.calibration_metrics import SparseAdaptiveECE, SparseClasswiseECE
from xentlab.core.metric_set import EVALUATED_METRICS, build_run_metrics
from xentlab.core.probabilities import FINE_BINS, fine_confidence_bins
from xentlab.core.targets import LabelContract


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_classwise_ece(y, probs, w=None, num_bins=15):
    """Kull et al.'s class-wise ECE with a loop per class and bin; bins right-closed, 0 in the first."""
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype="float64")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    total = 0.0
    for c in range(probs.shape[1]):
        p = probs[:, c]
        for b in range(num_bins):
            inside = (p > edges[b]) & (p <= edges[b + 1]) if b else (p <= edges[1])
            total += abs(np.sum(w[inside] * ((y[inside] == c) - p[inside])))
    return total / (probs.shape[1] * w.sum())


def ref_adaptive_ece(y, probs, w=None, num_bins=15):
    """Exact equal-mass ECE: positions sorted by confidence, each in the bin of its cumulative-mass midpoint."""
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype="float64")
    confidence, hit = probs.max(-1), (probs.argmax(-1) == y).astype("float64")
    order = np.argsort(confidence, kind="stable")
    c, h, ws = confidence[order], hit[order], w[order]
    middle = np.cumsum(ws) - ws / 2
    bins = np.minimum((num_bins * middle / ws.sum()).astype(int), num_bins - 1)
    gaps = [np.sum(ws[bins == b] * (h[bins == b] - c[bins == b])) for b in range(num_bins)]
    return float(np.sum(np.abs(gaps)) / ws.sum())


def adaptive_bound(probs, w=None, num_bins=15):
    """2 x the mass of the fine bins holding an equal-mass edge, over the total: how far the streaming
    approximation may be from `ref_adaptive_ece`."""
    w = np.ones(len(probs)) if w is None else np.asarray(w, dtype="float64")
    counts = np.bincount(fine_confidence_bins(probs.max(-1)), weights=w, minlength=FINE_BINS)
    before, total = np.cumsum(counts) - counts, counts.sum()
    edges = total * np.arange(1, num_bins) / num_bins
    straddle = [counts[(before < e) & (before + counts > e)].sum() for e in edges]
    return 2 * float(np.sum(straddle)) / total


def streamed(metric, y, outputs, w=None, batches=3):
    for part in np.array_split(np.arange(len(y)), batches):
        metric.update_state(y[part], outputs[part], sample_weight=None if w is None else w[part])
    return float(metric.result())


def test_hand_computed_cases():
    # Top-label confidences 0.6 (wrong), 0.7, 0.8, 0.9 (right). Two equal-mass bins: {0.6, 0.7} with 1 right vs
    # 1.3 confident, {0.8, 0.9} with 2 vs 1.7: (0.3 + 0.3) / 4 = 0.15. Equal-width bins see 1.2 / 4 = 0.3.
    probs = np.array([[0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9]], dtype=np.float32)
    y = np.array([0, 1, 1, 1])
    assert streamed(SparseAdaptiveECE(num_bins=2), y, probs, batches=2) == pytest.approx(0.15, abs=1e-6)
    assert calibration.adaptive_ece(probs, y, from_logits=False, num_bins=2) == pytest.approx(0.15, abs=1e-6)
    # Class-wise, 3 classes, 15 bins. Class 0: p = 0.5 (labelled 0) and 0.5 (not) share a bin: |1 - 1.0| = 0;
    # 0.1 (not): 0.1. Class 1: 0.3 (not), 0.3 (labelled 1) share: |1 - 0.6| = 0.4; 0.8 (labelled 1): 0.2.
    # Class 2, never the label: 0.2 + 0.2 in one bin, 0.1 in another: 0.5. Sum 1.2 over K * N = 9: 0.1333.
    probs = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]], dtype=np.float32)
    y = np.array([0, 1, 1])
    assert streamed(SparseClasswiseECE(3), y, probs, batches=2) == pytest.approx(1.2 / 9, abs=1e-6)
    assert calibration.classwise_ece(probs, y, from_logits=False) == pytest.approx(1.2 / 9, abs=1e-6)
    assert ref_classwise_ece(y, probs.astype("float64")) == pytest.approx(1.2 / 9, abs=1e-7)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize(("k", "peaked"), [(2, 1.0), (5, 1.5), (10, 6.0)])
def test_match_numpy_on_random_predictions(k, peaked, from_logits):
    rng = np.random.default_rng(k)
    n = 2000
    y = rng.integers(0, k, n)
    logits = (rng.normal(size=(n, k)) * peaked + peaked * np.eye(k)[y]).astype(np.float32)
    probs = softmax(logits.astype("float64"))
    w = rng.uniform(0.2, 3.0, n).astype(np.float32)
    outputs = logits if from_logits else probs.astype(np.float32)
    for weights in (None, w):
        got = streamed(SparseClasswiseECE(k, from_logits=from_logits), y, outputs, weights)
        assert got == pytest.approx(ref_classwise_ece(y, probs, weights), abs=1e-4)
        got = streamed(SparseAdaptiveECE(from_logits=from_logits), y, outputs, weights)
        exact = ref_adaptive_ece(y, probs, weights)
        assert abs(got - exact) <= adaptive_bound(probs, weights) + 1e-4
        assert got == pytest.approx(exact, abs=2e-3)  # the bound is loose: in practice much closer
    assert calibration.classwise_ece(outputs, y, from_logits=from_logits) == pytest.approx(
        ref_classwise_ece(y, probs), abs=1e-5)
    assert calibration.adaptive_ece(outputs, y, from_logits=from_logits) == pytest.approx(
        streamed(SparseAdaptiveECE(from_logits=from_logits), y, outputs), abs=1e-4)


def test_adaptive_bins_are_exact_when_no_fine_bin_is_shared_and_ties_stay_together():
    # 30 confidences 0.05 log-odds apart: one per fine bin, so the streaming bins are the exact ones.
    z = np.linspace(0.1, 1.55, 30)
    p = 1 / (1 + np.exp(-z))
    probs = np.stack([1 - p, p], axis=1)
    y = (np.arange(30) % 3 != 0).astype(int)
    assert adaptive_bound(probs) == 0.0
    got = streamed(SparseAdaptiveECE(), y, probs.astype(np.float32))
    assert got == pytest.approx(ref_adaptive_ece(y, probs), abs=1e-6)
    # Saturated outputs: every confidence 1.0, half right. Any split of the tie gives |n/2 - n| / n = 0.5.
    saturated = np.tile([[0.0, 50.0]], (40, 1)).astype(np.float32)
    assert streamed(SparseAdaptiveECE(from_logits=True), np.arange(40) % 2, saturated) == pytest.approx(0.5)


def test_masks_heads_and_one_hot_labels():
    rng = np.random.default_rng(3)
    k, heads = 4, 3
    y = rng.integers(0, k, (200, heads))
    logits = (rng.normal(size=(200, heads, k)) * 2).astype(np.float32)
    y[::5, 1] = -1  # n/a positions
    probs = softmax(logits.astype("float64"))
    contract = LabelContract(k, ignore_class=-1, label_shape=(heads,), from_logits=True, num_heads=heads)
    metrics = {m.name: m for m in build_run_metrics(contract)}
    for m in metrics.values():
        m.update_state(y, logits)
    keep = y != -1
    assert float(metrics["classwise_ece"].result()) == pytest.approx(ref_classwise_ece(y[keep], probs[keep]), abs=1e-4)
    for h in range(heads):
        kh = keep[:, h]
        assert float(metrics[f"classwise_ece_head{h}"].result()) == pytest.approx(
            ref_classwise_ece(y[kh, h], probs[kh, h]), abs=1e-4)
        exact = ref_adaptive_ece(y[kh, h], probs[kh, h])
        assert abs(float(metrics[f"adaptive_ece_head{h}"].result()) - exact) <= adaptive_bound(probs[kh, h]) + 1e-4
    # One-hot labels: with an ignore class, its all-zero row is a masked position, as in every metric.
    one_hot = tf.one_hot(y[:, 1], k).numpy()  # tf.one_hot(-1) is the zero row
    kh = keep[:, 1]
    options = {"encoding": "one_hot", "from_logits": True, "ignore_class": -1}
    for metric, ref in ((SparseClasswiseECE(k, **options), ref_classwise_ece),
                        (SparseAdaptiveECE(**options), ref_adaptive_ece)):
        assert streamed(metric, one_hot, logits[:, 1]) == pytest.approx(ref(y[kh, 1], probs[kh, 1]), abs=2e-3)


def test_one_sigmoid_unit_is_two_classes_and_configs_round_trip():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(300, 1)).astype(np.float32) * 3
    y = (rng.random(300) < 1 / (1 + np.exp(-z[:, 0] * 0.5))).astype(int)
    two = np.concatenate([np.zeros_like(z), z], axis=1)  # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
    for cls in (lambda: SparseClasswiseECE(2, from_logits=True), lambda: SparseAdaptiveECE(from_logits=True)):
        assert streamed(cls(), y, z) == pytest.approx(streamed(cls(), y, two), abs=1e-5)
    for m in (SparseClasswiseECE(7, ignore_class=3, head=1, num_bins=10), SparseAdaptiveECE(num_bins=20)):
        clone = type(m).from_config(m.get_config())
        assert clone.get_config() == m.get_config()
    with pytest.raises(ValueError, match=r"outputs have 3 classes .* num_classes=4"):
        SparseClasswiseECE(4).update_state(np.array([0]), np.array([[0.2, 0.3, 0.5]], np.float32))


def test_temperature_scaling_reports_them_calibrated():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    logits = (rng.normal(size=(600, 4)) + 2 * np.eye(4)[y]) * 4.0  # over-confident
    out = calibration.calibrate(logits[:300], y[:300], logits[300:], y[300:], LabelContract(4, from_logits=True))
    t = out["calibration.temperature"]
    assert out["test_classwise_ece_calibrated"] == pytest.approx(
        ref_classwise_ece(y[300:], softmax(logits[300:] / t)), abs=1e-9)
    assert abs(out["test_adaptive_ece_calibrated"] - ref_adaptive_ece(y[300:], softmax(logits[300:] / t))) <= (
        adaptive_bound(softmax(logits[300:] / t)) + 1e-9)
    assert out["test_adaptive_ece_calibrated"] < calibration.adaptive_ece(logits[300:], y[300:], from_logits=True)
    assert {"classwise_ece", "adaptive_ece"} <= set(EVALUATED_METRICS)


@pytest.mark.parametrize("from_logits", [True, False])
def test_shot_group_accuracy_is_mean_recall_over_the_group_like_sklearn(from_logits):
    from sklearn.metrics import recall_score

    from xentlab.core.shot_metrics import SparseGroupRecall

    rng = np.random.default_rng(9)
    k = 6
    y = rng.integers(0, 5, 400)  # class 5 never labelled: left out of its group's mean
    logits = (rng.normal(size=(400, k)) + 1.5 * np.eye(k)[y]).astype(np.float32)
    w = rng.uniform(0.5, 2.0, 400).astype(np.float32)
    y_masked = y.copy()
    y_masked[::7] = -1
    outputs = logits if from_logits else softmax(logits.astype("float64")).astype(np.float32)
    keep = y_masked != -1
    pred = logits.argmax(-1)
    groups = {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    contract = LabelContract(k, ignore_class=-1, from_logits=from_logits)
    metrics = {m.name: m for m in build_run_metrics(contract, shot_groups=groups)}
    for group, classes in groups.items():
        present = [c for c in classes if c < 5]
        expected = recall_score(y[keep], pred[keep], labels=present, average=None, sample_weight=w[keep]).mean()
        assert streamed(metrics[f"{group}_shot_accuracy"], y_masked, outputs, w) == pytest.approx(expected, abs=1e-5)
    assert build_run_metrics(contract, shot_groups={"many": [], "medium": [1], "few": []})[-1].name == (
        "medium_shot_accuracy")  # an empty group: no metric
    sigmoid = SparseGroupRecall(2, classes=[1], from_logits=True)
    z = rng.normal(size=(50, 1)).astype(np.float32)
    yb = rng.integers(0, 2, 50)
    assert streamed(sigmoid, yb, z) == pytest.approx(recall_score(yb, (z[:, 0] > 0).astype(int)), abs=1e-6)
    with pytest.raises(ValueError, match=r"classes must be a non-empty list of class ids in \[0, 2\)"):
        SparseGroupRecall(2, classes=[2])
