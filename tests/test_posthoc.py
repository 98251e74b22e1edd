"""Post-hoc logit adjustment (xentlab.core.posthoc) against numpy and scikit-learn, and what it is for: a model
that learnt a long-tailed prior is judged on a balanced test split."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss, recall_score

from xentlab.core import calibration
from xentlab.core.posthoc import TAU_GRID, adjust, log_prior, posthoc_evaluation, scores, skip_reason, tune_tau


def ref_ece(y, probs, num_bins=15):
    confidence, correct = probs.max(-1), probs.argmax(-1) == y
    edges = np.linspace(0, 1, num_bins + 1)
    total = 0.0
    for b in range(num_bins):
        inside = (confidence > edges[b]) & (confidence <= edges[b + 1])
        total += abs(np.sum(correct[inside] - confidence[inside]))
    return total / len(y)


def bayes_on_a_long_tail(n=3000, seed=0):
    """Balanced test examples scored by the Bayes posterior under the long-tailed training prior: what a plain
    cross-entropy model fitted to a long tail estimates. Dividing the prior out is the balanced Bayes rule."""
    rng = np.random.default_rng(seed)
    counts = np.array([500, 200, 80, 30, 12])
    means = np.eye(5) * 2.0
    y = rng.integers(0, 5, n)
    x = means[y] + rng.normal(size=(n, 5))
    log_likelihood = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    return y, log_likelihood + np.log(counts / counts.sum()), log_likelihood, counts


def test_adjustment_divides_the_prior_out():
    y, logits, log_likelihood, counts = bayes_on_a_long_tail(200)
    prior = counts / counts.sum()
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    for tau in (0.0, 0.5, 1.0, 2.0):
        expected = p / prior**tau
        expected /= expected.sum(-1, keepdims=True)
        np.testing.assert_allclose(np.exp(adjust(logits, log_prior(counts), tau)), expected, rtol=1e-10)
    balanced = np.exp(log_likelihood - log_likelihood.max(-1, keepdims=True))
    np.testing.assert_allclose(np.exp(adjust(logits, log_prior(counts), 1.0)),
                               balanced / balanced.sum(-1, keepdims=True), rtol=1e-9)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_scores_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 500)
    y[:4] = 5
    y[y == 5] = rng.integers(0, 5, (y == 5).sum())  # class 5 never labelled: only predicted (macro-F1's corner)
    logits = rng.normal(size=(500, 6)) * 2 + 1.5 * np.eye(6)[y]
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    pred, probs = log_p.argmax(-1), np.exp(log_p)
    present = np.unique(y)
    got = scores(log_p, y, {"many": [0, 1], "few": [4, 5]})
    assert got.pop("classwise_ece") == pytest.approx(calibration.classwise_ece(logits, y, from_logits=True))
    assert got.pop("adaptive_ece") == pytest.approx(calibration.adaptive_ece(logits, y, from_logits=True))
    expected = {
        "accuracy": accuracy_score(y, pred),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro", zero_division=0),
        "worst_class_recall": recall_score(y, pred, labels=present, average=None).min(),
        "nll": log_loss(y, probs, labels=range(6)),
        "ece": ref_ece(y, probs),
        "brier": np.mean(np.sum((probs - np.eye(6)[y]) ** 2, axis=1)),
        "many_shot_accuracy": recall_score(y, pred, labels=[0, 1], average="macro"),
        "few_shot_accuracy": recall_score(y, pred, labels=[4], average="macro"),  # class 5 is not in the labels
    }
    assert got == pytest.approx(expected, abs=1e-9)


def test_adjustment_recovers_balanced_accuracy_and_tuning_finds_tau_near_one():
    y, logits, log_likelihood, counts = bayes_on_a_long_tail()
    out = posthoc_evaluation(logits[:1500], y[:1500], counts, from_logits=True, tau=1.0,
                             shot_groups={"many": [0, 1], "medium": [2], "few": [3, 4]})
    plain = scores(logits[:1500] - np.log(np.exp(logits[:1500]).sum(-1, keepdims=True)), y[:1500])
    balanced = balanced_accuracy_score(y[:1500], log_likelihood[:1500].argmax(-1))
    assert out["posthoc_tau"] == 1.0
    assert out["test_balanced_accuracy_posthoc"] == pytest.approx(balanced, abs=1e-12)
    assert out["test_balanced_accuracy_posthoc"] > plain["balanced_accuracy"] + 0.05
    assert out["test_few_shot_accuracy_posthoc"] > out["test_many_shot_accuracy_posthoc"] - 0.2
    assert set(out) >= {f"test_{m}_posthoc" for m in ("accuracy", "balanced_accuracy", "macro_f1",
                                                       "worst_class_recall", "nll", "ece")}
    tuned = posthoc_evaluation(logits[:1500], y[:1500], counts, from_logits=True, tau=0.0, val_outputs=logits[1500:],
                               y_val=y[1500:])
    assert tuned["posthoc_tau"] in TAU_GRID and 0.5 <= tuned["posthoc_tau"] <= 1.5
    assert tuned["val_balanced_accuracy_posthoc"] == pytest.approx(
        scores(adjust(logits[1500:], log_prior(counts), tuned["posthoc_tau"]), y[1500:])["balanced_accuracy"])


def test_ties_keep_the_configured_tau_and_probabilities_sigmoid_and_masks_work():
    prior = log_prior([10, 10])
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    assert tune_tau(logits, np.array([0, 1]), prior, default=0.75)[0] == 0.75  # a flat prior: every tau ties
    y, logits, _, counts = bayes_on_a_long_tail(400)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    from_p = posthoc_evaluation(probs.astype(np.float32), y, counts, from_logits=False, tau=1.0)
    from_z = posthoc_evaluation(logits, y, counts, from_logits=True, tau=1.0)
    assert from_p == pytest.approx(from_z, abs=1e-5)
    masked = y.copy()
    masked[::4] = -1
    keep = masked != -1
    assert posthoc_evaluation(logits, masked, counts, from_logits=True, tau=1.0, ignore_class=-1) == pytest.approx(
        posthoc_evaluation(logits[keep], y[keep], counts, from_logits=True, tau=1.0))
    z = np.array([[-1.0], [0.2], [1.5], [-0.1]])  # one sigmoid unit: the classes [1 - p, p]
    two = np.concatenate([np.zeros_like(z), z], axis=1)
    assert posthoc_evaluation(z, np.array([0, 1, 1, 0]), [30, 10], from_logits=True, tau=1.0) == pytest.approx(
        posthoc_evaluation(two, np.array([0, 1, 1, 0]), [30, 10], from_logits=True, tau=1.0))


def test_skip_reasons():
    names = ["a", "b", "c"]
    assert skip_reason(np.zeros(10), [3, 4, 3], names) is None
    assert "labels have shape (20,) per example" in skip_reason(np.zeros((5, 20)), [3, 4, 3], names)
    assert "classes ['b'] have no training example" in skip_reason(np.zeros(10), [3, 0, 3], names)
    with pytest.raises(ValueError, match="positive training counts"):
        log_prior([3, 0, 3])
