"""Class counts over the labelled positions of the label contract, and class weights for every scheme."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from xentlab.core.targets import LabelContract
from xentlab.core.weighting import SCHEMES, class_weights, label_counts
from xentlab.errors import ConfigError, ExpectedError, LabelError


def test_counts_cover_every_labelled_position_of_any_label_shape():
    y = np.array([[0, 0], [0, 1], [2, 9]])  # (N, T) labels, 9 the n/a id
    assert label_counts(y, LabelContract(4, ignore_class=9)).tolist() == [3, 1, 1, 0]
    assert label_counts(y.reshape(-1), LabelContract(10)).tolist() == [3, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    inside = np.array([0, 1, 1, 2, 2, 2])  # an ignore class inside [0, K): its positions are not counted
    assert label_counts(inside, LabelContract(3, ignore_class=1)).tolist() == [1, 0, 3]


def test_an_id_that_is_neither_a_class_nor_the_ignore_class_is_an_error_not_a_silent_drop():
    with pytest.raises(LabelError, match=r"labels \[-1, 7\] are not classes: expected ids in \[0, 4\)") as raised:
        label_counts(np.array([0, -1, 7, 2]), LabelContract(4))
    assert isinstance(raised.value, ExpectedError)


def test_balanced_weights_match_scikit_learn_and_every_scheme_is_scaled_as_documented():
    rng = np.random.default_rng(0)
    y = rng.choice(4, size=500, p=[0.55, 0.25, 0.15, 0.05])
    counts = label_counts(y, LabelContract(4))
    sk = compute_class_weight("balanced", classes=np.arange(4), y=y)
    np.testing.assert_allclose(class_weights(counts, "balanced"), sk, rtol=1e-6)

    counts = np.array([3, 1, 1, 0])  # class 3 absent from the training split
    assert class_weights(counts, "balanced").tolist() == pytest.approx([5 / 12, 5 / 4, 5 / 4, 0.0])
    inv = class_weights(counts, "inverse_sqrt")
    assert inv[1] / inv[0] == pytest.approx(np.sqrt(3)) and inv[:3].mean() == pytest.approx(1.0) and inv[3] == 0
    eff = class_weights(counts, "effective_number", beta=0.9)
    raw = (1 - 0.9) / (1 - 0.9 ** np.array([3, 1, 1]))
    assert eff[:3] == pytest.approx(raw * 3 / raw.sum()) and eff[3] == 0
    assert class_weights(counts, "custom", weights=[1, 2, 3, 4]).tolist() == [1, 2, 3, 4]
    assert class_weights(counts, "none") is None
    assert set(SCHEMES) == {"none", "balanced", "inverse_sqrt", "effective_number", "custom"}


@pytest.mark.parametrize(
    ("scheme", "options", "message"),
    [
        ("custom", {"weights": [1.0]}, r"one value per class \(4\), got 1; e.g. weighting.weights=\[1.0,1.0,1.0,1.0\]"),
        ("custom", {}, "one value per class"),
        ("custom", {"weights": [1.0, -1.0, 1.0, 1.0]}, "must be finite and >= 0"),
        ("custom", {"weights": [0.0, 0.0, 0.0, 5.0]}, "weight 0 to every class present"),
        ("effective_number", {"beta": 1.0}, r"weighting.beta must be in \[0, 1\), got 1.0"),
        ("balance", {}, "unknown weighting scheme 'balance'"),
    ],
)
def test_bad_weighting_settings_are_config_errors_naming_the_key(scheme, options, message):
    with pytest.raises(ConfigError, match=message) as raised:
        class_weights(np.array([3, 1, 1, 0]), scheme, **options)
    assert isinstance(raised.value, (ExpectedError, ValueError))
