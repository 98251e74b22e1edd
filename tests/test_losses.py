"""Every loss against an independent float64 numpy reference: values, gradients, reductions, weights, masks,
extreme inputs and the three label shapes; plus equality with Keras where Keras has the same loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from xentlab import losses as L

EPS = 1e-7
TOL = 1e-5
SHAPES = {"N": (16,), "NT": (4, 6), "NH": (6, 3)}  # label shapes (N,), (N,T) sequence, (N,heads)
K = 5


# ---------------------------------------------------------------------------------------------- numpy reference
def np_log_probs(pred, from_logits):
    pred = pred.astype(np.float64)
    if from_logits:
        z = pred - pred.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = pred / pred.sum(-1, keepdims=True)
    return np.log(np.clip(p, EPS, 1 - EPS))


def np_target(y, k, ls):
    t = np.eye(k)[y]
    return t * (1 - ls) + ls / k


def np_crossentropy(y, pred, from_logits, ls=0.0, ignore=None):
    logp = np_log_probs(pred, from_logits)
    t = np_target(np.where(y == ignore, 0, y) if ignore is not None else y, pred.shape[-1], ls)
    out = -(t * logp).sum(-1)
    return np.where(y == ignore, 0.0, out) if ignore is not None else out


def np_focal(y, pred, from_logits, gamma, alpha, ls=0.0, ignore=None):
    logp = np_log_probs(pred, from_logits)
    p = np.exp(logp)
    a = 1.0 if alpha is None else np.asarray(alpha, dtype=np.float64)
    t = np_target(np.where(y == ignore, 0, y) if ignore is not None else y, pred.shape[-1], ls)
    out = (t * a * (1 - p) ** gamma * -logp).sum(-1)
    return np.where(y == ignore, 0.0, out) if ignore is not None else out


def np_binary(y, x, from_logits, ls=0.0):
    x = x[..., 0].astype(np.float64)
    t = y * (1 - ls) + 0.5 * ls
    p = 1 / (1 + np.exp(-x)) if from_logits else np.clip(x, EPS, 1 - EPS)
    if from_logits:  # stable form of -(t log p + (1-t) log(1-p))
        return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def np_weighted_binary(y, x, q):
    x = x.astype(np.float64)
    log_sig = -np.logaddexp(0, -x)
    log_one_minus = -np.logaddexp(0, x)
    return (-(q * y * log_sig + (1 - y) * log_one_minus)).mean(-1)


def np_reduce(per_elem, weights, reduction, valid):
    weighted = per_elem * weights
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return weighted.sum()
    return weighted.sum() / valid.sum()


def numeric_grad(f, x, rel=1e-6):
    """Central differences of a float64 scalar function, the step relative to each input (probabilities of
    1e-6 need steps far below 1e-6)."""
    x = x.astype(np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        h = rel * max(abs(x[i]), 1e-4)
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def tf_value_and_grad(loss, y, pred, sample_weight=None):
    x = tf.Variable(pred.astype(np.float32))
    with tf.GradientTape() as tape:
        value = loss(y, x, sample_weight=sample_weight)
        total = tf.reduce_sum(value)
    return value.numpy(), tape.gradient(total, x).numpy()


def make_inputs(shape, from_logits, rng, k=K, scale=3.0):
    logits = rng.normal(size=(*shape, k)) * scale
    if from_logits:
        return logits
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def assert_close(a, b, tol=TOL):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------- crossentropy
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("encoding", ["sparse", "one_hot"])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
def test_crossentropy_value_and_gradient(shape, encoding, from_logits, reduction):
    rng = np.random.default_rng(hash((shape, encoding, from_logits, reduction)) % 2**32)
    dims = SHAPES[shape]
    pred = make_inputs(dims, from_logits, rng)
    y = rng.integers(0, K, size=dims)
    w = rng.uniform(0, 2, size=dims)
    w.flat[0] = 0.0  # a zero weight
    ls = 0.1
    labels = y if encoding == "sparse" else np.eye(K)[y]
    loss = L.CrossEntropy(encoding, from_logits=from_logits, label_smoothing=ls, reduction=reduction)
    value, grad = tf_value_and_grad(loss, labels, pred, sample_weight=w)

    def reference(p):
        return np_reduce(np_crossentropy(y, p, from_logits, ls), w, reduction, np.ones(dims))

    assert_close(value, reference(pred))
    assert_close(grad, numeric_grad(lambda p: np.sum(reference(p)), pred), tol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ignore", [0, -1])
def test_masked_positions_have_zero_loss_and_exactly_zero_gradient(shape, ignore):
    rng = np.random.default_rng(7)
    dims = SHAPES[shape]
    pred = make_inputs(dims, True, rng)
    y = rng.integers(0, K, size=dims)
    y.flat[::3] = ignore
    masked = y == ignore
    for encoding in ("sparse", "one_hot"):
        labels = y if encoding == "sparse" else tf.one_hot(y, K).numpy()  # out-of-range -> zero row
        loss = L.CrossEntropy(encoding, from_logits=True, ignore_class=ignore)
        value, grad = tf_value_and_grad(loss, labels, pred)
        assert np.all(grad[masked] == 0.0)
        assert np.any(grad[~masked] != 0.0)
        expected = np_crossentropy(y[~masked], pred[~masked], True).mean()  # the subset without n/a labels
        assert_close(value, expected)
        per = L.crossentropy(labels, pred.astype(np.float32), encoding=encoding, from_logits=True,
                             ignore_class=ignore).numpy()
        assert np.all(per[masked] == 0.0)


def test_extreme_logits_stay_finite_and_exact():
    pred = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    y = np.array([1, 1, 2])
    value, grad = tf_value_and_grad(L.CrossEntropy(from_logits=True, reduction="none"), y, pred)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    assert_close(value, [2e4, 0.0, np.log(3.0)])


def test_probability_clipping_caps_the_loss_and_zeroes_the_gradient():
    pred = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    y = np.array([1, 1])  # first: p(label) = 0 exactly; second: p(label) = 1 exactly
    value, grad = tf_value_and_grad(L.CrossEntropy(from_logits=False, reduction="none"), y, pred)
    cap = -np.log(np.float32(EPS))
    assert value[0] == pytest.approx(cap, rel=1e-6) and value[0] == pytest.approx(16.118, abs=1e-3)
    assert value[1] == pytest.approx(-np.log1p(-np.float32(EPS)), abs=1e-6)
    assert np.all(grad[0, :] == 0.0)  # clipped: no gradient flows, the sample cannot learn


# ---------------------------------------------------------------------------------------------- focal
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.2, 0.3, 0.2, 0.2]])
def test_focal_value_and_gradient_sparse_equals_one_hot(shape, from_logits, alpha):
    rng = np.random.default_rng(3)
    dims = SHAPES[shape]
    pred = make_inputs(dims, from_logits, rng)
    y = rng.integers(0, K, size=dims)
    results = {}
    for encoding, labels in (("sparse", y), ("one_hot", np.eye(K)[y])):
        loss = L.FocalCrossEntropy(encoding, gamma=2.0, alpha=alpha, from_logits=from_logits, label_smoothing=0.05)
        results[encoding] = tf_value_and_grad(loss, labels, pred)

    def reference(p):
        return np_focal(y, p, from_logits, 2.0, alpha, ls=0.05).mean()

    assert_close(results["sparse"][0], reference(pred))
    assert_close(results["sparse"][1], numeric_grad(reference, pred), tol=1e-4)
    assert_close(results["one_hot"][0], results["sparse"][0])
    assert_close(results["one_hot"][1], results["sparse"][1])


def test_focal_with_gamma_zero_is_crossentropy():
    rng = np.random.default_rng(0)
    pred = make_inputs((20,), True, rng)
    y = rng.integers(0, K, 20)
    a = L.FocalCrossEntropy(gamma=0.0, from_logits=True)(y, pred)
    b = L.CrossEntropy(from_logits=True)(y, pred)
    assert float(a) == pytest.approx(float(b), abs=1e-6)


def test_focal_masks_like_crossentropy():
    rng = np.random.default_rng(1)
    pred = make_inputs((4, 6), True, rng)
    y = rng.integers(0, K, size=(4, 6))
    y[:, ::2] = 4
    value, grad = tf_value_and_grad(L.FocalCrossEntropy(ignore_class=4, from_logits=True), y, pred)
    assert np.all(grad[y == 4] == 0.0)
    assert_close(value, np_focal(y[y != 4], pred[y != 4], True, 2.0, None).mean())


# ---------------------------------------------------------------------------------------------- binary
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_binary_value_and_gradient(from_logits, label_shape):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(12, 1)) * 3
    pred = x if from_logits else 1 / (1 + np.exp(-x))
    y = rng.integers(0, 2, 12)
    labels = y if label_shape == "flat" else y[:, None]
    value, grad = tf_value_and_grad(L.BinaryCrossEntropy(from_logits=from_logits, label_smoothing=0.1), labels, pred)

    def reference(p):
        return np_binary(y, p, from_logits, 0.1).mean()

    assert_close(value, reference(pred))
    assert_close(grad, numeric_grad(reference, pred), tol=1e-4)


def test_binary_extreme_logits_are_finite():
    pred = np.array([[1e4], [-1e4], [1e4]], dtype=np.float32)
    value, grad = tf_value_and_grad(L.BinaryCrossEntropy(from_logits=True, reduction="none"), np.array([1, 0, 0]), pred)
    assert_close(value, [0.0, 0.0, 1e4])
    assert np.all(np.isfinite(grad))


def test_two_softmax_units_equal_one_sigmoid_unit():
    """The seed's comparison: softmax over [0, z] is sigmoid(z), so the two heads give the same loss."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=(10, 1)).astype(np.float32) * 4
    y = rng.integers(0, 2, 10)
    two = L.CrossEntropy(from_logits=True)(y, np.concatenate([np.zeros_like(z), z], axis=1))
    one = L.BinaryCrossEntropy(from_logits=True)(y, z)
    assert float(two) == pytest.approx(float(one), abs=1e-6)


@pytest.mark.parametrize("pos_weight", [1.0, 3.0, [0.5, 1.0, 2.0, 4.0]])
@pytest.mark.parametrize("from_logits", [True, False])
def test_weighted_binary_matches_tf_and_numpy(pos_weight, from_logits):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(8, 4)) * 3
    y = rng.integers(0, 2, size=(8, 4)).astype(np.float64)
    pred = x if from_logits else 1 / (1 + np.exp(-x))
    loss = L.WeightedBinaryCrossEntropy(pos_weight=pos_weight, from_logits=from_logits, reduction="none")
    value, grad = tf_value_and_grad(loss, y, pred)
    q = np.asarray(pos_weight)
    assert_close(value, np_weighted_binary(y, x, q), tol=1e-4 if not from_logits else TOL)
    tf_ref = tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(y, x, q), axis=-1).numpy()
    assert_close(value, tf_ref, tol=1e-4 if not from_logits else TOL)
    if from_logits:
        assert_close(grad, numeric_grad(lambda p: np_weighted_binary(y, p, q).sum(), pred), tol=1e-4)


# ---------------------------------------------------------------------------------------------- equal to Keras
@pytest.mark.parametrize("from_logits", [True, False])
def test_equal_to_keras_where_keras_has_the_loss(from_logits):
    rng = np.random.default_rng(11)
    pred = make_inputs((32,), from_logits, rng, k=7).astype(np.float32)
    y = rng.integers(0, 7, 32)
    onehot = np.eye(7)[y]
    pairs = [
        (L.CrossEntropy(from_logits=from_logits)(y, pred),
         keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)(y, pred)),
        (L.CrossEntropy("one_hot", from_logits=from_logits, label_smoothing=0.2)(onehot, pred),
         keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=0.2)(onehot, pred)),
        (L.FocalCrossEntropy("one_hot", gamma=2.0, alpha=0.25, from_logits=from_logits)(onehot, pred),
         keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, from_logits=from_logits)(onehot, pred)),
    ]
    for ours, theirs in pairs:
        assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    x = rng.normal(size=(32, 1)).astype(np.float32)
    p = x if from_logits else tf.sigmoid(x).numpy()
    ours = L.BinaryCrossEntropy(from_logits=from_logits, label_smoothing=0.1)(y % 2, p)
    theirs = keras.losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=0.1)((y % 2)[:, None], p)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)


# ---------------------------------------------------------------------------------------------- config
LOSS_OBJECTS = [
    L.CrossEntropy("one_hot", from_logits=True, label_smoothing=0.1, ignore_class=2, reduction="sum"),
    L.FocalCrossEntropy("sparse", gamma=1.5, alpha=[0.1, 0.9], from_logits=False, ignore_class=-1),
    L.BinaryCrossEntropy(from_logits=True, label_smoothing=0.05),
    L.WeightedBinaryCrossEntropy(pos_weight=[1.0, 2.0], from_logits=True, reduction="none"),
]


@pytest.mark.parametrize("loss", LOSS_OBJECTS, ids=lambda o: type(o).__name__)
def test_get_config_round_trips(loss):
    again = type(loss).from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.CrossEntropy("dense"), "encoding must be one of"),
        (lambda: L.CrossEntropy(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
        (lambda: L.FocalCrossEntropy(gamma=-1), "gamma must be >= 0"),
        (lambda: L.FocalCrossEntropy(alpha=[0.5, -1]), "alpha must be >= 0"),
        (lambda: L.WeightedBinaryCrossEntropy(pos_weight=0), "pos_weight must be > 0"),
        (lambda: L.CrossEntropy(reduction="mean_over_everything"), "reduction must be one of"),
        (lambda: L.build_loss("hinge"), "unknown loss 'hinge'"),
    ],
)
def test_bad_arguments_say_what_is_expected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("encoding", ["sparse", "one_hot"])
def test_trains_inside_model_fit(encoding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("adam", loss=L.CrossEntropy(encoding, from_logits=True))
    labels = y if encoding == "sparse" else np.eye(3)[y]
    history = model.fit(x, labels, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
