"""Tests of xentlab.core.losses: values and gradients against independent float64 numpy references, Keras' own losses,
masks (n/a labels), reductions, sample weights, the three label shapes, serialization and model.fit.

Run with `-s` to see the largest absolute error measured against numpy for every loss variant.
"""

from __future__ import annotations

import contextlib
import functools
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from xentlab.choices import Encoding
from xentlab.core import losses as L

K = 5  # classes
TOL = 1e-5  # relative and absolute, for values and gradients of size ~1
LO, HI = float(np.float32(1e-7)), float(np.float32(1.0 - 1e-7))  # Keras' clip bounds as float32 holds them
CAP = -np.log(LO)  # -log(1e-7) ~= 16.118: the largest loss of a clipped probability
SHAPES = {"N": (12,), "NT": (3, 4), "NH": (4, 3)}  # labels (N,), (N, T) sequence, (N, H) multi-head
REDUCTIONS = ("sum_over_batch_size", "sum", "none")
ALPHA_LIST = [0.1, 0.2, 0.3, 0.2, 0.2]
MAX_ERR: dict[str, tuple[float, float]] = {}  # variant -> largest |ours - numpy| seen (conftest prints it)


# ---------------------------------------------------------------------------------------------- numpy references
# Each returns per-element losses and their analytic gradient with respect to y_pred (float64). The analytic
# gradients are themselves checked against central finite differences on well-conditioned inputs
# (test_numpy_reference_gradients_match_finite_differences); finite differences cannot resolve every random input
# (a row holding p = 1e-8 next to p = 0.6 needs steps both far below 1e-8 and far above it).
def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_categorical(y, pred, kind="crossentropy", from_logits=True, ls=0.0, ignore=None, gamma=2.0, alpha=None):
    """Cross-entropy or focal loss from integer labels y: (per-element loss, valid, d loss / d pred).

    loss = sum_c t_c phi(q_c), q = log p, phi(q) = a (1 - p)^gamma (-q), gamma = 0 for cross-entropy;
    dphi/dq = a (gamma (1 - p)^(gamma - 1) p q - (1 - p)^gamma). Logits: dq_c/dz_j = [c = j] - p_j.
    Probabilities (p = clip(y / S)): dq_c/dy_j = [p_c unclipped] ([c = j] / y_c - 1 / S).
    """
    valid = np.ones(y.shape, bool) if ignore is None else y != ignore
    k = pred.shape[-1]
    t = np.eye(k)[np.where(valid, y, 0)] * (1.0 - ls) + ls / k
    a = np.ones(k) if alpha is None else np.broadcast_to(np.asarray(alpha, np.float64), (k,))
    g = 0.0 if kind == "crossentropy" else gamma
    with np.errstate(all="ignore"):  # masked rows may hold junk; np.where drops it
        if from_logits:
            q = np_log_softmax(pred)
            p, one_minus_p = np.exp(q), -np.expm1(q)
        else:
            s = pred.sum(-1, keepdims=True)
            r = pred / s
            free = (r > LO) & (r < HI)  # unclipped probabilities
            p = np.clip(r, LO, HI)
            q, one_minus_p = np.log(p), 1.0 - p
        m = one_minus_p**g
        loss = (t * a * m * -q).sum(-1)
        if g:
            slope = np.where(one_minus_p > 0, g * one_minus_p ** (g - 1) * p * q, 0.0)
            u = a * (slope - m)
        else:
            u = -a * np.ones_like(q)
        tu = t * u
        if from_logits:
            d = tu - p * tu.sum(-1, keepdims=True)
        else:
            tu = np.where(free, tu, 0.0)
            d = np.where(free, tu / np.where(free, pred, 1.0), 0.0) - tu.sum(-1, keepdims=True) / s
    return np.where(valid, loss, 0.0), valid, np.where(valid[..., None], d, 0.0)


def np_binary(y, pred, from_logits, ls=0.0, ignore=None):
    """Binary cross-entropy of one unit: (per-element loss, valid, d loss / d pred)."""
    valid = np.ones(y.shape, bool) if ignore is None else y != ignore
    x = pred[..., 0]
    t = np.where(valid, y, 0) * (1.0 - ls) + 0.5 * ls
    with np.errstate(all="ignore"):
        if from_logits:
            loss = t * np.logaddexp(0.0, -x) + (1.0 - t) * np.logaddexp(0.0, x)
            d = np.exp(-np.logaddexp(0.0, -x)) - t  # sigmoid(x) - t, without overflow
        else:
            p = np.clip(x, LO, HI)
            loss = -(t * np.log(p) + (1.0 - t) * np.log1p(-p))
            d = np.where((x > LO) & (x < HI), -t / p + (1.0 - t) / (1.0 - p), 0.0)
    return np.where(valid, loss, 0.0), valid, np.where(valid, d, 0.0)[..., None]


def np_weighted_binary(y, pred, pos_weight, from_logits):
    """Weighted multi-label loss, mean over labels: (per-element loss, d loss / d pred)."""
    q = np.asarray(pos_weight, dtype=np.float64)
    n_labels = pred.shape[-1]
    if from_logits:
        loss = q * y * np.logaddexp(0.0, -pred) + (1.0 - y) * np.logaddexp(0.0, pred)
        sig = np.exp(-np.logaddexp(0.0, -pred))  # sigmoid without overflow
        d = -q * y * (1.0 - sig) + (1.0 - y) * sig
    else:
        p = np.clip(pred, LO, HI)
        loss = -q * y * np.log(p) - (1.0 - y) * np.log1p(-p)
        d = np.where((pred > LO) & (pred < HI), -q * y / p + (1.0 - y) / (1.0 - p), 0.0)
    return loss.mean(-1), d / n_labels


def np_coef(valid, weights, reduction):
    """d(reduced) / d(per-element loss) for Keras' reductions with a mask: w * valid, / unmasked count for the
    mean; (N,) weights broadcast over trailing label axes."""
    w = np.ones(valid.shape) if weights is None else weights
    w = w.reshape(w.shape + (1,) * (valid.ndim - w.ndim))
    coef = w * valid
    if reduction == "sum_over_batch_size":
        coef = coef / valid.sum() if valid.sum() else 0.0 * coef
    return coef


def np_reduce(per_element, coef, reduction):
    return per_element * coef if reduction == "none" else (per_element * coef).sum()


def fd_grad(f, x, rel=1e-6):
    """Central finite differences of a float64 scalar function, the step relative to each input."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        h = rel * max(abs(x[i]), 1e-2)
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


# ---------------------------------------------------------------------------------------------- helpers
def seed(*parts) -> int:
    """A per-case seed that, unlike hash(), does not change between processes."""
    return zlib.crc32(repr(parts).encode())


def make_pred(shape, from_logits, rng, k=K, scale=3.0):
    """Logits or softmax probabilities, rounded to float32 so numpy and TF see the same numbers."""
    logits = rng.normal(size=(*shape, k)) * scale
    if from_logits:
        out = logits
    else:
        e = np.exp(logits - logits.max(-1, keepdims=True))
        out = e / e.sum(-1, keepdims=True)
    return out.astype(np.float32).astype(np.float64)


def value_and_grad(fn, y_true, pred, **kwargs):
    """fn(y_true, y_pred, **kwargs) in float32 and d sum(fn) / d y_pred, as float64 numpy."""
    x = tf.Variable(pred.astype(np.float32))
    with tf.GradientTape() as tape:
        value = fn(y_true, x, **kwargs)
        total = tf.reduce_sum(value)
    assert value.dtype == tf.float32
    return value.numpy().astype(np.float64), tape.gradient(total, x).numpy().astype(np.float64)


def check(variant, got, want, tol=TOL):
    """Asserts |got - want| <= tol * (1 + |want|) and records the largest absolute and relative errors."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (variant, got.shape, want.shape)
    diff = np.abs(got - want)
    abs_err, rel_err = MAX_ERR.get(variant, (0.0, 0.0))
    if got.size:
        abs_err = max(abs_err, float(diff.max()))
        rel_err = max(rel_err, float((diff / np.maximum(np.abs(want), 1.0)).max()))
    MAX_ERR[variant] = (abs_err, rel_err)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=variant)


def labels_for(y, encoding, k=K):
    """Integer ids, or their one-hot view as tf.one_hot makes it (an id outside [0, k) -> all-zero row)."""
    return y if encoding == "sparse" else tf.one_hot(y, k).numpy()


def make_loss(kind, encoding, **kwargs):
    if kind == "crossentropy":
        kwargs.pop("gamma", None), kwargs.pop("alpha", None)
        return L.CrossEntropy(encoding, **kwargs)
    return L.FocalCrossEntropy(encoding, **kwargs)


def pred_kind(from_logits):
    return "logits" if from_logits else "probs"


# ---------------------------------------------------------------------------------------------- the references
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_numpy_reference_gradients_match_finite_differences(from_logits):
    """The analytic reference gradients against central differences, on inputs where those are accurate
    (moderate logits, probabilities >= ~0.02, and rows of exact 0/1 probabilities, which stay clipped)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, size=(3, 4))
    pred = make_pred((3, 4), from_logits, rng, scale=1.0)
    if not from_logits:
        pred[0, :2] = [[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]]
    for kind, gamma, alpha, ls in [("crossentropy", 0.0, None, 0.1), ("focal", 2.0, 0.25, 0.0),
                                   ("focal", 0.5, ALPHA_LIST, 0.1)]:
        reference = functools.partial(np_categorical, y, kind=kind, from_logits=from_logits, ls=ls, ignore=3,
                                      gamma=gamma, alpha=alpha)
        fd = fd_grad(lambda p, reference=reference: reference(p)[0].sum(), pred)
        np.testing.assert_allclose(reference(pred)[2], fd, rtol=1e-6, atol=1e-8)

    x = rng.normal(size=(6, 1)) * 2
    pb = x if from_logits else 1 / (1 + np.exp(-x))
    binary = functools.partial(np_binary, np.array([0, 1, 2, 1, 0, 1]), from_logits=from_logits, ls=0.1, ignore=2)
    np.testing.assert_allclose(binary(pb)[2], fd_grad(lambda p: binary(p)[0].sum(), pb), rtol=1e-6, atol=1e-8)

    xw = rng.normal(size=(3, 4)) * 2
    pw = xw if from_logits else 1 / (1 + np.exp(-xw))
    weighted = functools.partial(np_weighted_binary, rng.integers(0, 2, size=(3, 4)).astype(np.float64),
                                 pos_weight=[0.5, 1.0, 2.0, 4.0], from_logits=from_logits)
    np.testing.assert_allclose(weighted(pw)[1], fd_grad(lambda p: weighted(p)[0].sum(), pw), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------- crossentropy, focal
CATEGORICAL_CASES = [  # (kind, gamma, alpha, reduction): every reduction for each loss
    ("crossentropy", None, None, "sum_over_batch_size"),
    ("crossentropy", None, None, "sum"),
    ("crossentropy", None, None, "none"),
    ("focal", 2.0, None, "sum_over_batch_size"),
    ("focal", 2.0, 0.25, "sum"),
    ("focal", 0.5, ALPHA_LIST, "none"),
]


@pytest.mark.parametrize(("kind", "gamma", "alpha", "reduction"), CATEGORICAL_CASES,
                         ids=[f"{c[0]}-g{c[1]}-a{'list' if isinstance(c[2], list) else c[2]}-{c[3]}"
                              for c in CATEGORICAL_CASES])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("shape", SHAPES)
def test_categorical_value_and_gradient_match_numpy_for_both_encodings(shape, from_logits, kind, gamma, alpha,
                                                                        reduction):
    rng = np.random.default_rng(seed(shape, from_logits, kind, reduction))
    dims = SHAPES[shape]
    pred = make_pred(dims, from_logits, rng)
    y = rng.integers(0, K, size=dims)
    w = rng.uniform(0.0, 2.0, size=dims)
    w.flat[:2] = 0.0  # zero weights
    ls = 0.0 if reduction == "sum" else 0.1
    options = {"from_logits": from_logits, "label_smoothing": ls, "reduction": reduction}
    if kind == "focal":
        options.update(gamma=gamma, alpha=alpha)
    per_element, valid, d = np_categorical(y, pred, kind, from_logits, ls, gamma=gamma, alpha=alpha)
    coef = np_coef(valid, w, reduction)

    results = {}
    for encoding in ("sparse", "one_hot"):
        loss = make_loss(kind, encoding, **options)
        results[encoding] = value_and_grad(loss, labels_for(y, encoding), pred, sample_weight=w)
        variant = f"{kind}/{encoding}/{pred_kind(from_logits)}"
        check(f"{variant} value", results[encoding][0], np_reduce(per_element, coef, reduction))
        check(f"{variant} grad", results[encoding][1], d * coef[..., None])
    assert np.all(results["sparse"][1][w == 0] == 0.0)  # a zero weight removes the element from the gradient
    # sparse == one_hot, to float32 rounding
    np.testing.assert_allclose(results["sparse"][0], results["one_hot"][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(results["sparse"][1], results["one_hot"][1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("kind", ["crossentropy", "focal"])
@pytest.mark.parametrize("ignore", [2, -1], ids=["ignore_inside", "ignore_outside"])
@pytest.mark.parametrize("shape", SHAPES)
def test_masked_positions_have_zero_loss_zero_gradient_and_leave_the_mean(shape, ignore, kind, from_logits):
    rng = np.random.default_rng(seed(shape, ignore, kind, from_logits))
    dims = SHAPES[shape]
    pred = make_pred(dims, from_logits, rng)
    y = rng.integers(0, K, size=dims)
    y.flat[::3] = ignore
    masked = y == ignore
    # junk in the masked rows must not reach values or gradients
    pred[masked] = [np.nan, np.inf, -np.inf, 1e30, 0.0] if from_logits else 0.0
    w = rng.uniform(0.5, 2.0, size=dims)
    w.flat[1] = 0.0
    options = {"from_logits": from_logits, "label_smoothing": 0.1, "ignore_class": ignore}
    per_element, valid, d = np_categorical(y, pred, kind, from_logits, 0.1, ignore=ignore)
    coef = np_coef(valid, w, "sum_over_batch_size")

    for encoding in ("sparse", "one_hot"):
        labels = labels_for(y, encoding)
        variant = f"{kind}/{encoding}/{pred_kind(from_logits)}/masked"
        value, grad = value_and_grad(make_loss(kind, encoding, **options), labels, pred, sample_weight=w)
        assert np.all(grad[masked] == 0.0)  # exactly, not approximately
        assert np.all(np.isfinite(grad)) and np.isfinite(value)
        check(f"{variant} value", value, np_reduce(per_element, coef, "sum_over_batch_size"))
        check(f"{variant} grad", grad, d * coef[..., None])

        # the loss of the batch equals the loss of the subset without the n/a positions
        subset = make_loss(kind, encoding, **options)(labels[~masked], pred[~masked].astype(np.float32),
                                                       sample_weight=w[~masked])
        np.testing.assert_allclose(value, float(subset), rtol=1e-6)
        per_element_tf = make_loss(kind, encoding, reduction="none", **options)(labels, pred.astype(np.float32))
        assert np.all(per_element_tf.numpy()[masked] == 0.0)
        total = make_loss(kind, encoding, reduction="sum", **options)(labels, pred.astype(np.float32))
        np.testing.assert_allclose(float(total), per_element_tf.numpy()[~masked].sum(), rtol=1e-6)


@pytest.mark.parametrize("encoding", ["sparse", "one_hot"])
def test_a_batch_of_only_masked_positions_gives_zero_not_nan(encoding):
    y = np.full((4, 3), -1)
    pred = np.random.default_rng(0).normal(size=(4, 3, K))
    value, grad = value_and_grad(L.CrossEntropy(encoding, from_logits=True, ignore_class=-1), labels_for(y, encoding),
                                 pred)
    assert value == 0.0 and np.all(grad == 0.0)


def test_masked_mean_also_holds_for_the_bare_function_given_to_compile():
    """The pure functions attach the mask, so Keras' wrapper of a plain function averages over unmasked positions."""
    rng = np.random.default_rng(4)
    pred = make_pred((10,), True, rng).astype(np.float32)
    y = rng.integers(0, K, 10)
    y[:4] = -1
    model = keras.Sequential([keras.Input((K,)), keras.layers.Identity()])
    model.compile(loss=functools.partial(L.crossentropy, from_logits=True, ignore_class=-1))
    value = model.evaluate(pred, y, batch_size=10, verbose=0)
    np.testing.assert_allclose(value, np_categorical(y[4:], pred[4:])[0].mean(), rtol=1e-6)


@pytest.mark.parametrize("encoding", ["sparse", "one_hot"])
@pytest.mark.parametrize("kind", ["crossentropy", "focal"])
def test_extreme_logits_are_finite_and_exact(kind, encoding):
    pred = np.array([[1e4, -1e4, 0.0, 0.0, 0.0],   # label 1: p = e^-2e4, loss 2e4 (cross-entropy)
                     [-1e4, 1e4, 5.0, 0.0, 0.0],   # label 1: p = 1 - tiny, loss ~ 0
                     [0.0, 0.0, 0.0, 0.0, 1e4],    # label 0: loss 1e4
                     [3.0, -2.0, 0.5, 1.0, -1e4]])
    y = np.array([1, 1, 0, 3])
    alpha = 0.25 if kind == "focal" else None
    loss = make_loss(kind, encoding, gamma=2.0, alpha=alpha, from_logits=True, reduction="none")
    value, grad = value_and_grad(loss, labels_for(y, encoding), pred)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    per_element, _, d = np_categorical(y, pred, kind, True, alpha=alpha)
    check(f"{kind}/{encoding}/logits extreme value", value, per_element)
    check(f"{kind}/{encoding}/logits extreme grad", grad, d)
    if kind == "crossentropy":
        assert value[0] == 2e4 and value[2] == 1e4


@pytest.mark.parametrize("encoding", ["sparse", "one_hot"])
@pytest.mark.parametrize("kind", ["crossentropy", "focal"])
def test_exact_zero_and_one_probabilities_cap_the_loss_and_get_no_gradient(kind, encoding):
    pred = np.array([[1.0, 0.0, 0.0, 0.0, 0.0],   # label 1 has p = 0: clipped, loss capped at -log(1e-7)
                     [0.0, 1.0, 0.0, 0.0, 0.0],   # label 1 has p = 1: clipped to 1 - 1e-7
                     [0.5, 0.5, 0.0, 0.0, 0.0]])  # label 0 has p = 0.5: unclipped, gradient flows
    y = np.array([1, 1, 0])
    loss = make_loss(kind, encoding, gamma=2.0, alpha=None, from_logits=False, reduction="none")
    value, grad = value_and_grad(loss, labels_for(y, encoding), pred)
    per_element, _, d = np_categorical(y, pred, kind, False)
    check(f"{kind}/{encoding}/probs 0-1 value", value, per_element)
    check(f"{kind}/{encoding}/probs 0-1 grad", grad, d)
    factor = (1 - LO) ** 2 if kind == "focal" else 1.0
    assert value[0] == pytest.approx(CAP * factor, rel=1e-6) and value[0] == pytest.approx(16.118, abs=1e-3)
    assert np.all(grad[:2] == 0.0)  # clipped: the sample cannot learn its way out
    assert np.all(grad[2] != 0.0)


def test_keras_logits_on_a_softmax_output_do_not_bypass_the_clip():
    """Keras' CategoricalCrossentropy(from_logits=False) reads `_keras_logits` off a Keras softmax output and
    computes from the logits (uncapped); ours always clips, so the probability set-up stays what it says."""
    logits = tf.constant([[1e4, -1e4, 0.0]])
    probs = keras.activations.softmax(logits)
    y = np.array([1])
    ours = float(L.CrossEntropy(from_logits=False)(y, probs))
    assert ours == pytest.approx(CAP, rel=1e-6)
    assert float(L.CrossEntropy(from_logits=False)(y, tf.identity(probs))) == ours
    keras_value = float(keras.losses.CategoricalCrossentropy(from_logits=False)(np.eye(3)[y], probs))
    print(f"\nKeras CategoricalCrossentropy on a softmax output with _keras_logits: {keras_value} (ours {ours})")


@pytest.mark.parametrize("encoding", ["sparse", "one_hot"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_focal_with_gamma_zero_and_no_alpha_is_crossentropy(from_logits, encoding):
    rng = np.random.default_rng(8)
    pred = make_pred((3, 4), from_logits, rng)
    labels = labels_for(rng.integers(0, K, size=(3, 4)), encoding)
    a = value_and_grad(L.FocalCrossEntropy(encoding, gamma=0.0, from_logits=from_logits, label_smoothing=0.1),
                       labels, pred)
    b = value_and_grad(L.CrossEntropy(encoding, from_logits=from_logits, label_smoothing=0.1), labels, pred)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ---------------------------------------------------------------------------------------------- binary
BINARY_CASES = [("sum_over_batch_size", -1), ("sum", None), ("none", 2)]  # (reduction, ignore_class)


@pytest.mark.parametrize(("reduction", "ignore"), BINARY_CASES, ids=[f"{r}-ignore{i}" for r, i in BINARY_CASES])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("label_shape", ["N", "N1", "NT"])
def test_binary_value_and_gradient_match_numpy(label_shape, from_logits, reduction, ignore):
    rng = np.random.default_rng(seed(label_shape, from_logits, reduction))
    dims = (12,) if label_shape in ("N", "N1") else (3, 4)
    x = rng.normal(size=(*dims, 1)) * 3
    pred = (x if from_logits else 1 / (1 + np.exp(-x))).astype(np.float32).astype(np.float64)
    y = rng.integers(0, 2, size=dims)
    if ignore is not None:
        y.flat[::4] = ignore
    w = rng.uniform(0.0, 2.0, size=dims)
    w.flat[1] = 0.0
    labels = y[..., None] if label_shape == "N1" else y
    per_element, valid, d = np_binary(y, pred, from_logits, 0.1, ignore)
    coef = np_coef(valid, w, reduction)

    loss = L.BinaryCrossEntropy(from_logits=from_logits, label_smoothing=0.1, ignore_class=ignore, reduction=reduction)
    value, grad = value_and_grad(loss, labels, pred, sample_weight=w)
    variant = f"binary/{pred_kind(from_logits)}"
    check(f"{variant} value", value, np_reduce(per_element, coef, reduction))
    check(f"{variant} grad", grad, d * coef[..., None])
    if ignore is not None:
        assert np.all(grad[y == ignore] == 0.0)


def test_binary_extreme_logits_and_exact_probabilities():
    y = np.array([1, 0, 0, 1])
    logits = np.array([[1e4], [-1e4], [1e4], [-1e4]])
    value, grad = value_and_grad(L.BinaryCrossEntropy(from_logits=True, reduction="none"), y, logits)
    check("binary/logits extreme value", value, [0.0, 0.0, 1e4, 1e4])
    check("binary/logits extreme grad", grad, np_binary(y, logits, True)[2])  # sigmoid(x) - y
    probs = np.array([[1.0], [0.0], [1.0], [0.0]])
    value, grad = value_and_grad(L.BinaryCrossEntropy(from_logits=False, reduction="none"), y, probs)
    check("binary/probs 0-1 value", value, np_binary(y, probs, False)[0])
    assert value[2] == pytest.approx(-np.log1p(-HI), rel=1e-6) and value[3] == pytest.approx(CAP, rel=1e-6)
    assert np.all(grad == 0.0)


def test_two_softmax_units_equal_one_sigmoid_unit():
    """softmax over [0, z] is sigmoid(z): the 2-unit head and the 1-unit head give the same loss and gradient."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=(10, 1)) * 4
    y = rng.integers(0, 2, 10)
    two = value_and_grad(L.CrossEntropy(from_logits=True), y, np.concatenate([np.zeros_like(z), z], axis=1))
    one = value_and_grad(L.BinaryCrossEntropy(from_logits=True), y, z)
    np.testing.assert_allclose(two[0], one[0], rtol=1e-6)
    np.testing.assert_allclose(two[1][:, 1:], one[1], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------- logit-adjusted, poly-1
PRIORS = [0.5, 0.25, 0.15, 0.07, 0.03]


def np_poly1(y, pred, epsilon, from_logits, ls=0.0, ignore=None):
    """Poly-1 loss: cross-entropy plus epsilon * (1 - sum_c t_c p_c), (per-element loss, valid, d loss / d pred).

    Logits: d p_c / dz_j = p_c ([c = j] - p_j). Probabilities (p = clip(y / S)): d p_c / dy_j = [p_c unclipped]
    ([c = j] / S - y_c / S^2).
    """
    ce, valid, d_ce = np_categorical(y, pred, "crossentropy", from_logits, ls, ignore=ignore)
    k = pred.shape[-1]
    t = np.eye(k)[np.where(valid, y, 0)] * (1.0 - ls) + ls / k
    with np.errstate(all="ignore"):
        if from_logits:
            p = np.exp(np_log_softmax(pred))
            d_pt = t * p - p * (t * p).sum(-1, keepdims=True)  # d (sum_c t_c p_c) / dz
        else:
            s = pred.sum(-1, keepdims=True)
            r = pred / s
            free = (r > LO) & (r < HI)
            p = np.clip(r, LO, HI)
            d_pt = (t * free) / s - (t * free * r).sum(-1, keepdims=True) / s
        loss = ce + epsilon * (1.0 - (t * p).sum(-1))
        d = d_ce - epsilon * d_pt
    return np.where(valid, loss, 0.0), valid, np.where(valid[..., None], d, 0.0)


def np_logit_adjusted(y, logits, priors, tau, ls=0.0, ignore=None):
    """Cross-entropy of the shifted logits z + tau log(prior); d/dz = d/d(shifted) since the shift is constant."""
    priors = np.asarray(priors, np.float64) / np.sum(priors)
    return np_categorical(y, logits + tau * np.log(priors), "crossentropy", True, ls, ignore=ignore)


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_poly1_and_logit_adjusted_references_match_finite_differences(from_logits):
    rng = np.random.default_rng(1)
    y = rng.integers(0, K, size=(3, 4))
    pred = make_pred((3, 4), from_logits, rng, scale=1.0)
    if not from_logits:
        pred[0, 0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # clipped: no gradient
    for epsilon, ls in [(1.0, 0.0), (-0.5, 0.1), (3.0, 0.2)]:
        reference = functools.partial(np_poly1, y, epsilon=epsilon, from_logits=from_logits, ls=ls, ignore=3)
        # logits: a larger step than fd_grad's default, which rounding dominates for sums of ~20; probabilities
        # keep the default, whose steps at p = 0 stay below the 1e-7 clip
        fd = fd_grad(lambda p, reference=reference: reference(p)[0].sum(), pred, rel=1e-4 if from_logits else 1e-6)
        np.testing.assert_allclose(reference(pred)[2], fd, rtol=1e-6, atol=1e-8)
    if from_logits:
        reference = functools.partial(np_logit_adjusted, y, priors=PRIORS, tau=1.5, ls=0.1, ignore=3)
        fd = fd_grad(lambda p: reference(p)[0].sum(), pred, rel=1e-4)
        np.testing.assert_allclose(reference(pred)[2], fd, rtol=1e-6, atol=1e-8)


LONG_TAIL_CASES = [  # (tau or epsilon, label smoothing, ignore_class, reduction)
    (1.0, 0.0, None, "sum_over_batch_size"),
    (0.5, 0.1, 2, "sum"),
    (2.0, 0.1, -1, "none"),
]
LONG_TAIL_IDS = [f"p{c[0]}-ls{c[1]}-ignore{c[2]}-{c[3]}" for c in LONG_TAIL_CASES]


def _long_tail_case(shape, ignore, parts):
    rng = np.random.default_rng(seed(shape, ignore, *parts))
    dims = SHAPES[shape]
    y = rng.integers(0, K, size=dims)
    if ignore is not None:
        y.flat[::3] = ignore
    w = rng.uniform(0.0, 2.0, size=dims)
    w.flat[1] = 0.0  # a zero weight
    return rng, dims, y, w


@pytest.mark.parametrize(("tau", "ls", "ignore", "reduction"), LONG_TAIL_CASES, ids=LONG_TAIL_IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_logit_adjusted_value_and_gradient_match_numpy_for_both_encodings(shape, tau, ls, ignore, reduction):
    rng, dims, y, w = _long_tail_case(shape, ignore, ("logit_adjusted", tau, reduction))
    pred = make_pred(dims, True, rng)
    masked = np.zeros(dims, bool) if ignore is None else y == ignore
    pred[masked] = [np.nan, np.inf, -np.inf, 1e30, 0.0]  # junk in masked rows must not reach values or gradients
    per_element, valid, d = np_logit_adjusted(y, pred, PRIORS, tau, ls, ignore)
    coef = np_coef(valid, w, reduction)
    for encoding in ("sparse", "one_hot"):
        loss = L.LogitAdjustedCrossEntropy(PRIORS, tau=tau, encoding=encoding, label_smoothing=ls,
                                           ignore_class=ignore, reduction=reduction)
        value, grad = value_and_grad(loss, labels_for(y, encoding), pred, sample_weight=w)
        variant = f"logit_adjusted/{encoding}/logits"
        check(f"{variant} value", value, np_reduce(per_element, coef, reduction))
        check(f"{variant} grad", grad, d * coef[..., None])
        assert np.all(grad[masked] == 0.0) and np.all(grad[w == 0] == 0.0)


@pytest.mark.parametrize(("epsilon", "ls", "ignore", "reduction"), LONG_TAIL_CASES, ids=LONG_TAIL_IDS)
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("shape", SHAPES)
def test_poly1_value_and_gradient_match_numpy_for_both_encodings(shape, from_logits, epsilon, ls, ignore, reduction):
    rng, dims, y, w = _long_tail_case(shape, ignore, ("poly1", from_logits, epsilon, reduction))
    pred = make_pred(dims, from_logits, rng)
    masked = np.zeros(dims, bool) if ignore is None else y == ignore
    pred[masked] = [np.nan, np.inf, -np.inf, 1e30, 0.0] if from_logits else 0.0
    per_element, valid, d = np_poly1(y, pred, epsilon, from_logits, ls, ignore)
    coef = np_coef(valid, w, reduction)
    for encoding in ("sparse", "one_hot"):
        loss = L.Poly1CrossEntropy(encoding, epsilon=epsilon, from_logits=from_logits, label_smoothing=ls,
                                   ignore_class=ignore, reduction=reduction)
        value, grad = value_and_grad(loss, labels_for(y, encoding), pred, sample_weight=w)
        variant = f"poly1/{encoding}/{pred_kind(from_logits)}"
        check(f"{variant} value", value, np_reduce(per_element, coef, reduction))
        check(f"{variant} grad", grad, d * coef[..., None])
        assert np.all(grad[masked] == 0.0) and np.all(grad[w == 0] == 0.0)


def test_masked_mean_of_the_long_tail_losses_is_the_mean_of_the_unmasked_subset():
    rng = np.random.default_rng(11)
    pred = make_pred((4, 3), True, rng).astype(np.float32)
    y = rng.integers(0, K, size=(4, 3))
    y[::2, 1] = -1
    keep = y != -1
    for loss in (L.LogitAdjustedCrossEntropy(PRIORS, ignore_class=-1),
                 L.Poly1CrossEntropy(from_logits=True, ignore_class=-1)):
        np.testing.assert_allclose(float(loss(y, pred)), float(loss(y[keep], pred[keep])), rtol=1e-6)


@pytest.mark.parametrize("encoding", ["sparse", "one_hot"])
def test_special_cases_reduce_to_crossentropy(encoding):
    """tau = 0, or equal priors, is cross-entropy; epsilon = 0 is cross-entropy; tau = 1 is the balanced softmax."""
    rng = np.random.default_rng(12)
    pred = make_pred((3, 4), True, rng)
    y = rng.integers(0, K, size=(3, 4))
    labels = labels_for(y, encoding)
    ce = value_and_grad(L.CrossEntropy(encoding, from_logits=True, label_smoothing=0.1), labels, pred)
    for other in (L.LogitAdjustedCrossEntropy(PRIORS, tau=0.0, encoding=encoding, label_smoothing=0.1),
                  L.LogitAdjustedCrossEntropy([0.2] * K, tau=3.0, encoding=encoding, label_smoothing=0.1),
                  L.Poly1CrossEntropy(encoding, epsilon=0.0, from_logits=True, label_smoothing=0.1)):
        got = value_and_grad(other, labels, pred)
        np.testing.assert_allclose(got[0], ce[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], ce[1], rtol=1e-5, atol=1e-7)
    # balanced softmax (Ren et al. 2020): -log(pi_y e^z_y / sum_c pi_c e^z_c)
    pi = np.asarray(PRIORS)
    e = pi * np.exp(pred)
    balanced = -np.log(np.take_along_axis(e, y[..., None], -1)[..., 0] / e.sum(-1)).mean()
    value = L.LogitAdjustedCrossEntropy(PRIORS, tau=1.0, encoding=encoding)(labels, pred.astype(np.float32))
    np.testing.assert_allclose(float(value), balanced, rtol=1e-6)


def test_long_tail_losses_are_finite_and_exact_for_extreme_logits():
    pred = np.array([[1e4, -1e4, 0.0, 0.0, 0.0], [-1e4, 1e4, 5.0, 0.0, 0.0], [3.0, -2.0, 0.5, 1.0, -1e4]])
    y = np.array([1, 1, 3])
    for name, loss, reference in [
        ("logit_adjusted", L.LogitAdjustedCrossEntropy(PRIORS, tau=1.0, reduction="none"),
         np_logit_adjusted(y, pred, PRIORS, 1.0)),
        ("poly1", L.Poly1CrossEntropy(epsilon=2.0, from_logits=True, reduction="none"), np_poly1(y, pred, 2.0, True)),
    ]:
        value, grad = value_and_grad(loss, y, pred)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
        check(f"{name}/logits extreme value", value, reference[0])
        check(f"{name}/logits extreme grad", grad, reference[2])


def test_class_priors_from_counts_floor_absent_classes_at_half_an_example():
    np.testing.assert_allclose(L.class_priors([30, 10, 0, 60]), np.array([30, 10, 0.5, 60]) / 100.5)
    np.testing.assert_allclose(L.class_priors(np.array([1, 1])), [0.5, 0.5])
    loss = L.build_loss("logit_adjusted", from_logits=True, class_counts=[30, 10, 0, 60], tau=1.0)
    assert loss.priors == pytest.approx(L.class_priors([30, 10, 0, 60]))
    value, grad = value_and_grad(loss, np.array([0, 1, 3]), np.zeros((3, 4)))
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    assert L.build_loss("logit_adjusted", from_logits=True, priors=[2.0, 6.0]).priors == [0.25, 0.75]


def test_at_equal_logits_the_adjustment_charges_the_rare_class_more():
    """An undecided model (equal logits) pays -log(prior) for its label: the rare class costs more, so training
    pushes its logit up by a margin that grows as its prior shrinks."""
    z = np.zeros((2, 2), np.float32)  # an undecided model
    y = np.array([0, 1])  # class 0 common, class 1 rare
    loss = L.LogitAdjustedCrossEntropy([0.9, 0.1], reduction="none")
    common, rare = loss(y, z).numpy()
    np.testing.assert_allclose([common, rare], [-np.log(0.9), -np.log(0.1)], rtol=1e-6)
    assert rare > common


# ---------------------------------------------------------------------------------------------- the table of kinds
def test_every_kind_has_a_row_and_its_readers_agree():
    from xentlab.config import checks
    from xentlab.core.models import head_spec, resolve_loss_kind

    assert L.LOSS_KINDS == tuple(L.LOSS_TABLE)
    for kind, spec in L.LOSS_TABLE.items():
        units = 1 if spec.single_unit else 7
        assert head_spec(loss=kind, from_logits=True, num_classes=7) == (units, None)
        assert head_spec(loss=kind, from_logits=False, num_classes=7) == (units, spec.activation)
        for encoding in Encoding.names():
            accepted = encoding in spec.encodings
            num_classes = 2 if spec.binary_only else 7
            try:
                checks.check_loss_and_labels(loss=kind, encoding=encoding, num_classes=num_classes)
            except checks.CheckError as error:
                assert not accepted and f"set labels={spec.encodings[0]}" in str(error)
            else:
                assert accepted
        for from_logits in (True, False):
            refused = spec.needs_logits and not from_logits
            with pytest.raises(ValueError, match="Set loss.from_logits=true") if refused else contextlib.nullcontext():
                L.build_loss(kind, from_logits=from_logits, class_counts=[5, 3])
    assert resolve_loss_kind("crossentropy", "sigmoid1", 2) == "binary"
    assert resolve_loss_kind("binary", "sigmoid1", 2) == "binary"
    assert resolve_loss_kind("poly1", "softmax2", 2) == "poly1"
    with pytest.raises(ValueError, match="model.head=sigmoid1 .* has no form of loss=focal"):
        resolve_loss_kind("focal", "sigmoid1", 2)
    with pytest.raises(ValueError, match="model.head=softmax2 needs a softmax loss, got loss=weighted_binary"):
        resolve_loss_kind("weighted_binary", "softmax2", 2)


def test_the_checks_refuse_what_the_table_forbids_with_the_override_that_fixes_it():
    from xentlab.config import checks

    cases = [
        (dict(loss="logit_adjusted", encoding="sparse", num_classes=5, from_logits=False),
         "loss=logit_adjusted works on the logits (the head's raw outputs) and needs from_logits=True; received "
         "loss.from_logits=False. Set loss.from_logits=true"),
        (dict(loss="binary", encoding="one_hot", num_classes=2),
         "loss=binary takes 0/1 labels (encoding='sparse'); received encoding='one_hot': set labels=sparse, or use "
         "a loss that takes labels=one_hot: crossentropy, focal, weighted_binary, logit_adjusted, poly1"),
        (dict(loss="weighted_binary", encoding="one_hot", num_classes=5, ignore_class=-1),
         "loss=weighted_binary has no ignore_class; received labels.ignore_class=-1"),
        (dict(loss="weighted_binary", encoding="one_hot", num_classes=5, label_smoothing=0.1),
         "Set loss.label_smoothing=0"),
        (dict(loss="hinge", encoding="sparse", num_classes=5), "kind must be one of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(checks.CheckError) as raised:
            checks.check_loss_and_labels(**kwargs)
        assert message in str(raised.value)
    checks.check_loss_and_labels(loss="logit_adjusted", encoding="one_hot", num_classes=5, from_logits=True,
                                 ignore_class=-1, label_smoothing=0.1)


# ---------------------------------------------------------------------------------------------- weighted binary
WEIGHTED_CASES = [(1.0, "sum_over_batch_size"), (3.0, "sum"), ([0.5, 1.0, 2.0, 4.0], "none")]


@pytest.mark.parametrize(("pos_weight", "reduction"), WEIGHTED_CASES, ids=["q1", "q3", "q_list"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_weighted_binary_matches_numpy_and_tf(from_logits, pos_weight, reduction):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(8, 4)) * 3
    y = rng.integers(0, 2, size=(8, 4)).astype(np.float64)
    pred = (x if from_logits else 1 / (1 + np.exp(-x))).astype(np.float32).astype(np.float64)
    w = rng.uniform(0.0, 2.0, size=8)
    w[0] = 0.0
    per_element, d = np_weighted_binary(y, pred, pos_weight, from_logits)
    coef = np_coef(np.ones(8, bool), w, reduction)

    loss = L.WeightedBinaryCrossEntropy(pos_weight=pos_weight, from_logits=from_logits, reduction=reduction)
    value, grad = value_and_grad(loss, y, pred, sample_weight=w)
    variant = f"weighted_binary/{pred_kind(from_logits)}"
    check(f"{variant} value", value, np_reduce(per_element, coef, reduction))
    check(f"{variant} grad", grad, d * coef[..., None])
    logits = pred if from_logits else np.log(pred) - np.log1p(-pred)
    tf_value = tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(y, logits, np.asarray(pos_weight)), -1)
    ours = L.weighted_binary_crossentropy(y, pred.astype(np.float32), pos_weight=pos_weight, from_logits=from_logits)
    np.testing.assert_allclose(ours.numpy(), tf_value.numpy(), rtol=TOL, atol=TOL)


def test_weighted_binary_extreme_inputs():
    y = np.array([[1.0, 0.0, 1.0, 0.0]])
    logits = np.array([[1e4, -1e4, -1e4, 1e4]])
    fn = functools.partial(L.weighted_binary_crossentropy, pos_weight=2.0, from_logits=True)
    value, grad = value_and_grad(fn, y, logits)
    check("weighted_binary/logits extreme value", value, [(2e4 + 1e4) / 4])
    check("weighted_binary/logits extreme grad", grad, np_weighted_binary(y, logits, 2.0, True)[1])
    probs = np.array([[1.0, 0.0, 0.0, 1.0]])
    value, grad = value_and_grad(functools.partial(fn, from_logits=False), y, probs)
    check("weighted_binary/probs 0-1 value", value, np_weighted_binary(y, probs, 2.0, False)[0])
    assert np.all(grad == 0.0)


# ---------------------------------------------------------------------------------------------- equal to Keras
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("shape", SHAPES)
def test_equal_to_keras_where_keras_has_the_loss(shape, from_logits):
    rng = np.random.default_rng(seed(shape, from_logits))
    dims = SHAPES[shape]
    pred = make_pred(dims, from_logits, rng, scale=1.5).astype(np.float32)  # no probability near the clip
    y = rng.integers(0, K, size=dims)
    onehot = np.eye(K)[y]
    w = rng.uniform(0.0, 2.0, size=dims)
    kw = {"from_logits": from_logits}
    pairs = {  # name: (ours, Keras', y_true for ours, y_true for Keras)
        "sparse": (L.CrossEntropy("sparse", **kw), keras.losses.SparseCategoricalCrossentropy(**kw), y, y),
        "sparse ignore": (L.CrossEntropy("sparse", ignore_class=2, **kw),
                          keras.losses.SparseCategoricalCrossentropy(ignore_class=2, **kw), y, y),
        "one_hot smoothed": (L.CrossEntropy("one_hot", label_smoothing=0.2, **kw),
                             keras.losses.CategoricalCrossentropy(label_smoothing=0.2, **kw), onehot, onehot),
        "sparse smoothed": (L.CrossEntropy("sparse", label_smoothing=0.2, **kw),
                            keras.losses.CategoricalCrossentropy(label_smoothing=0.2, **kw), y, onehot),
        "focal one_hot": (L.FocalCrossEntropy("one_hot", gamma=2.0, alpha=0.25, **kw),
                          keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, **kw), onehot, onehot),
        "focal sparse": (L.FocalCrossEntropy("sparse", gamma=1.5, alpha=0.25, label_smoothing=0.1, **kw),
                         keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=1.5, label_smoothing=0.1, **kw),
                         y, onehot),
    }
    for name, (ours, theirs, y_ours, y_theirs) in pairs.items():
        check(f"vs keras {name}/{pred_kind(from_logits)} mean", float(ours(y_ours, pred, sample_weight=w)),
              float(theirs(y_theirs, pred, sample_weight=w)), tol=1e-6)
        ours.reduction = theirs.reduction = "none"
        check(f"vs keras {name}/{pred_kind(from_logits)} per element", ours(y_ours, pred),
              theirs(y_theirs, pred), tol=1e-6)

    x = rng.normal(size=(*dims, 1)).astype(np.float32)
    p = x if from_logits else tf.sigmoid(x).numpy()
    yb = y % 2
    ours = L.BinaryCrossEntropy(label_smoothing=0.1, **kw)(yb, p, sample_weight=w)
    theirs = keras.losses.BinaryCrossentropy(label_smoothing=0.1, **kw)(yb[..., None], p, sample_weight=w)
    check(f"vs keras binary/{pred_kind(from_logits)} mean", float(ours), float(theirs), tol=1e-6)


# ---------------------------------------------------------------------------------------------- reduction machinery
def test_sample_weight_per_example_broadcasts_over_the_label_axes():
    rng = np.random.default_rng(3)
    pred = make_pred((4, 3), True, rng).astype(np.float32)
    y = rng.integers(0, K, size=(4, 3))
    w = np.array([0.0, 1.0, 2.0, 0.5])
    loss = L.CrossEntropy(from_logits=True)
    per_example = float(loss(y, pred, sample_weight=w))
    np.testing.assert_allclose(per_example, float(loss(y, pred, sample_weight=np.repeat(w[:, None], 3, 1))), rtol=1e-6)
    np.testing.assert_allclose(per_example, float(loss(y, pred, sample_weight=w[:, None])), rtol=1e-6)
    flat = L.CrossEntropy(from_logits=True)
    np.testing.assert_allclose(float(flat(y[:, 0], pred[:, 0], sample_weight=w[:, None])),
                               float(flat(y[:, 0], pred[:, 0], sample_weight=w)), rtol=1e-6)
    np.testing.assert_allclose(float(loss(y, pred, sample_weight=2.0)), 2 * float(loss(y, pred)), rtol=1e-6)
    with pytest.raises(ValueError, match="sample_weight must broadcast"):
        loss(y, pred, sample_weight=np.ones((4, 3, 2)))


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_graph_mode_and_a_distribution_strategy_give_the_eager_values(jit_compile):
    rng = np.random.default_rng(6)
    pred = make_pred((4, 3), True, rng).astype(np.float32)
    y = rng.integers(0, K, size=(4, 3))
    y[0] = -1
    w = rng.uniform(0.0, 2.0, size=(4, 3)).astype(np.float32)
    losses = [L.CrossEntropy(from_logits=True, ignore_class=-1),
              L.FocalCrossEntropy("one_hot", from_logits=True, ignore_class=-1)]
    for loss in losses:
        labels = labels_for(y, loss.encoding).astype(np.float32)
        eager = value_and_grad(loss, labels, pred, sample_weight=w)

        @tf.function(jit_compile=jit_compile)
        def step(labels, x, w, loss=loss):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(labels, x, sample_weight=w)
            return value, tape.gradient(value, x)

        graph = step(labels, tf.constant(pred), w)
        np.testing.assert_allclose(graph[0].numpy(), eager[0], rtol=1e-6)
        np.testing.assert_allclose(graph[1].numpy(), eager[1], rtol=1e-5, atol=1e-7)
        assert np.all(graph[1].numpy()[0] == 0.0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        replica = strategy.run(tf.function(lambda a, b, c, loss=loss: loss(a, b, sample_weight=c)),
                               (labels, tf.constant(pred), w))
        np.testing.assert_allclose(float(strategy.reduce("SUM", replica, axis=None)), eager[0], rtol=1e-6)


# ---------------------------------------------------------------------------------------------- config, fit
LOSS_OBJECTS = [
    L.CrossEntropy("one_hot", from_logits=True, label_smoothing=0.1, ignore_class=2, reduction="sum", name="ce"),
    L.FocalCrossEntropy("sparse", gamma=1.5, alpha=ALPHA_LIST, from_logits=False, ignore_class=-1),
    L.BinaryCrossEntropy(from_logits=True, label_smoothing=0.05, ignore_class=2, reduction="none"),
    L.WeightedBinaryCrossEntropy(pos_weight=[1.0, 2.0, 3.0, 4.0, 5.0], from_logits=False),
    L.LogitAdjustedCrossEntropy(PRIORS, tau=0.5, encoding="one_hot", label_smoothing=0.1, ignore_class=-1),
    L.Poly1CrossEntropy("sparse", epsilon=2.0, from_logits=True, label_smoothing=0.05, ignore_class=2,
                        reduction="sum"),
]


@pytest.mark.parametrize("loss", LOSS_OBJECTS, ids=lambda o: type(o).__name__)
def test_config_round_trips_and_serializes(loss):
    config = loss.get_config()
    again = type(loss).from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == config
    rng = np.random.default_rng(0)
    if isinstance(loss, (L.CrossEntropy, L.FocalCrossEntropy, L.LogitAdjustedCrossEntropy, L.Poly1CrossEntropy)):
        pred, y = make_pred((6,), loss.from_logits, rng), labels_for(rng.integers(0, K, 6), loss.encoding)
    elif isinstance(loss, L.BinaryCrossEntropy):
        pred, y = rng.normal(size=(6, 1)), rng.integers(0, 3, 6)
    else:
        pred, y = rng.uniform(0.01, 0.99, size=(6, K)), rng.integers(0, 2, size=(6, K))
    np.testing.assert_array_equal(restored(y, pred).numpy(), loss(y, pred).numpy())


@pytest.mark.parametrize("encoding", ["sparse", "one_hot"])
def test_trains_inside_model_fit_and_survives_save_and_load(encoding, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    y[::8] = -1  # n/a labels
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    loss = L.CrossEntropy(encoding, from_logits=True, label_smoothing=0.1, ignore_class=-1)
    model.compile("adam", loss=loss)
    history = model.fit(x, labels_for(y, encoding, 3), sample_weight=rng.uniform(0.5, 1.5, 64), epochs=1,
                        batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / "model.keras"
    model.save(path)
    assert keras.saving.load_model(path).loss.get_config() == loss.get_config()


# ---------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: L.CrossEntropy("dense"), ValueError, r"encoding must be one of .* received encoding='dense'"),
        (lambda: L.CrossEntropy(label_smoothing=1.0), ValueError, r"label_smoothing must be in \[0, 1\)"),
        (lambda: L.CrossEntropy(label_smoothing=-0.1), ValueError, r"label_smoothing must be in \[0, 1\)"),
        (lambda: L.CrossEntropy(label_smoothing="0.1"), TypeError, "label_smoothing must be a finite number"),
        (lambda: L.CrossEntropy(from_logits="yes"), TypeError, "from_logits must be True or False"),
        (lambda: L.CrossEntropy(ignore_class=1.5), TypeError, "ignore_class must be an integer"),
        (lambda: L.CrossEntropy(reduction="mean"), ValueError, r"reduction must be one of .* received"),
        (lambda: L.ElementwiseLoss(L.crossentropy, gamma=2.0), TypeError, "unexpected keyword argument 'gamma'"),
        (lambda: L.FocalCrossEntropy(gamma=-1), ValueError, "gamma must be >= 0; received gamma=-1"),
        (lambda: L.FocalCrossEntropy(alpha=[0.5, -1]), ValueError, r"alpha must be >= 0"),
        (lambda: L.FocalCrossEntropy(alpha=[]), ValueError, "alpha must not be empty"),
        (lambda: L.FocalCrossEntropy(alpha="balanced"), TypeError, "alpha must be a number or a list"),
        (lambda: L.BinaryCrossEntropy(label_smoothing=2), ValueError, r"label_smoothing must be in \[0, 1\)"),
        (lambda: L.WeightedBinaryCrossEntropy(pos_weight=0), ValueError, "pos_weight must be > 0"),
        (lambda: L.WeightedBinaryCrossEntropy(pos_weight=[1.0, -2.0]), ValueError, "pos_weight must be > 0"),
        (lambda: L.build_loss("hinge"), ValueError, r"kind must be one of \('crossentropy', 'focal', 'binary'"),
        (lambda: L.build_loss("weighted_binary", ignore_class=0), ValueError, "has no ignore_class"),
        (lambda: L.build_loss("weighted_binary", label_smoothing=0.1), ValueError, "has no label_smoothing"),
        (lambda: L.build_loss("binary", encoding="one_hot"), ValueError, r"takes 0/1 labels \(encoding='sparse'\)"),
        (lambda: L.build_loss("weighted_binary", encoding="sparse"), ValueError, "set labels=one_hot"),
        (lambda: L.LogitAdjustedCrossEntropy(PRIORS, from_logits=False), ValueError,
         r"needs from_logits=True; received from_logits=False. Set loss.from_logits=true"),
        (lambda: L.logit_adjusted_crossentropy([0], np.zeros((1, K)), priors=PRIORS, from_logits=False), ValueError,
         "Set loss.from_logits=true"),
        (lambda: L.build_loss("logit_adjusted", class_counts=[1, 2]), ValueError,
         r"loss=logit_adjusted .* needs from_logits=True; received loss.from_logits=False"),
        (lambda: L.build_loss("logit_adjusted", from_logits=True), ValueError,
         r"pass exactly one of class_counts=\[n_0, ..., n_K-1\] or priors"),
        (lambda: L.build_loss("logit_adjusted", from_logits=True, class_counts=[1], priors=[1.0]), ValueError,
         "pass exactly one of"),
        (lambda: L.LogitAdjustedCrossEntropy(PRIORS, tau=-0.5), ValueError, "tau must be >= 0; received tau=-0.5"),
        (lambda: L.LogitAdjustedCrossEntropy([0.5, 0.0]), ValueError, "priors must be > 0"),
        (lambda: L.LogitAdjustedCrossEntropy(0.5), TypeError, "priors must be a list"),
        (lambda: L.class_priors([0, 0]), ValueError, "must count at least one example"),
        (lambda: L.class_priors([3, -1]), ValueError, "class_counts must be >= 0"),
        (lambda: L.Poly1CrossEntropy(epsilon=-2), ValueError, "epsilon must be >= -1; received epsilon=-2"),
        (lambda: L.Poly1CrossEntropy(epsilon="1"), TypeError, "epsilon must be a finite number"),
    ],
)
def test_bad_arguments_say_what_was_expected(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_arguments_are_checked_once_when_a_loss_is_built_and_not_again_at_each_step(monkeypatch):
    from collections import Counter

    from xentlab.core.losses import arguments

    calls = Counter()
    for arg, check in list(arguments.ARGUMENT_CHECKS.items()):  # the real checks, counted
        monkeypatch.setitem(arguments.ARGUMENT_CHECKS, arg,
                            lambda value, arg=arg, check=check: (calls.update([arg]), check(value))[1])
    once = {arg: 1 for arg in ("encoding", "gamma", "alpha", "from_logits", "label_smoothing", "ignore_class")}
    loss = L.FocalCrossEntropy(gamma=1.0, alpha=0.5, from_logits=True, ignore_class=-1)
    assert calls == once
    rng = np.random.default_rng(0)
    pred, y = make_pred((6,), True, rng), rng.integers(0, K, 6)
    calls.clear()
    value = loss(y, pred, sample_weight=np.ones(6))
    assert not calls  # the step runs the function unchecked
    bare = L.focal_crossentropy(y, pred, gamma=1.0, alpha=0.5, from_logits=True, ignore_class=-1)  # checks on entry
    assert calls == once
    np.testing.assert_allclose(float(value), float(np.mean(bare)), rtol=1e-6)
    with pytest.raises(ValueError, match="^LogitAdjustedCrossEntropy adds tau"):  # the caller named in the message
        L.LogitAdjustedCrossEntropy(PRIORS, from_logits=False)
    with pytest.raises(ValueError, match="^logit_adjusted_crossentropy adds tau"):
        L.logit_adjusted_crossentropy([0], np.zeros((1, K)), priors=PRIORS, from_logits=False)


def test_bad_shapes_say_what_was_expected():
    pred = np.zeros((4, K), np.float32)
    with pytest.raises(ValueError, match="pass encoding='one_hot'"):
        L.crossentropy(np.eye(K)[[0, 1, 2, 3]], pred, encoding="sparse")
    with pytest.raises(ValueError, match="pass encoding='sparse'"):
        L.crossentropy(np.array([0, 1, 2, 3]), pred, encoding="one_hot")
    with pytest.raises(ValueError, match="alpha has 2 entries but y_pred has 5 classes"):
        L.focal_crossentropy(np.array([0, 1, 2, 3]), pred, alpha=[0.5, 0.5])
    with pytest.raises(ValueError, match="one sigmoid unit"):
        L.binary_crossentropy(np.array([0, 1, 0, 1]), pred)
    with pytest.raises(ValueError, match="priors has 2 entries but y_pred has 5 classes"):
        L.logit_adjusted_crossentropy(np.array([0, 1, 2, 3]), pred, priors=[0.5, 0.5])
    with pytest.raises(ValueError, match="pos_weight has 2 entries"):
        L.weighted_binary_crossentropy(np.zeros((4, K)), pred, pos_weight=[1.0, 2.0])


def test_build_loss_maps_every_kind_to_its_class():
    expected = {"crossentropy": L.CrossEntropy, "focal": L.FocalCrossEntropy, "binary": L.BinaryCrossEntropy,
                "weighted_binary": L.WeightedBinaryCrossEntropy, "logit_adjusted": L.LogitAdjustedCrossEntropy,
                "poly1": L.Poly1CrossEntropy}
    assert set(L.LOSS_KINDS) == set(expected)
    for kind, cls in expected.items():
        built = L.build_loss(kind, from_logits=L.LOSS_TABLE[kind].needs_logits, class_counts=[1, 2, 3, 4, 5])
        assert type(built) is cls
        if hasattr(built, "encoding"):  # binary and weighted_binary have one encoding each, no argument
            assert built.encoding == L.LOSS_TABLE[kind].encodings[0]
    focal = L.build_loss("focal", encoding="one_hot", from_logits=True, label_smoothing=0.1, reduction="sum",
                         ignore_class=-1, gamma=1.0, alpha=0.5)
    assert focal.get_config() == {"encoding": "one_hot", "gamma": 1.0, "alpha": 0.5, "from_logits": True,
                                  "label_smoothing": 0.1, "ignore_class": -1, "reduction": "sum", "name": "focal"}
    assert L.build_loss("weighted_binary", pos_weight=[1, 2], from_logits=True).pos_weight == [1.0, 2.0]
    adjusted = L.build_loss("logit_adjusted", encoding="one_hot", from_logits=True, label_smoothing=0.1,
                            ignore_class=-1, tau=0.5, class_counts=[10, 30, 0, 60], gamma=3.0, epsilon=5.0)
    assert adjusted.get_config() == {"priors": pytest.approx([10 / 100.5, 30 / 100.5, 0.5 / 100.5, 60 / 100.5]),
                                     "tau": 0.5, "encoding": "one_hot", "from_logits": True, "label_smoothing": 0.1,
                                     "ignore_class": -1, "reduction": "sum_over_batch_size", "name": "logit_adjusted"}
    poly = L.build_loss("poly1", from_logits=True, epsilon=-0.5, tau=9.0, class_counts=[1, 2])
    assert (poly.encoding, poly.epsilon, poly.from_logits) == ("sparse", -0.5, True)


def test_one_default_gamma_from_the_config_to_the_function():
    import inspect
    from pathlib import Path

    import yaml

    from xentlab.config.schema import FocalLossConfig
    from xentlab.core.losses.arguments import FOCAL_GAMMA

    defaults = {FocalLossConfig().gamma, inspect.signature(L.focal_crossentropy).parameters["gamma"].default,
                inspect.signature(L.FocalCrossEntropy).parameters["gamma"].default,
                inspect.signature(L.build_loss).parameters["gamma"].default,
                yaml.safe_load((Path(__file__).parents[1] / "conf" / "loss" / "focal.yaml").read_text())["gamma"]}
    assert defaults == {FOCAL_GAMMA}
