"""Model builders and the head a loss implies: the closed choices (model.head, model.heads) they read are the
config's own, and what they refuse is the user's error, said with the fix."""

from __future__ import annotations

import numpy as np
import pytest

from xentlab.choices import Head, HeadLayout
from xentlab.core.losses import LOSS_TABLE
from xentlab.core.models import capabilities, multi_head, resolve_loss_kind
from xentlab.errors import ConfigError, ExpectedError


@pytest.mark.parametrize("head", Head.names())
@pytest.mark.parametrize("loss", list(LOSS_TABLE))
def test_every_head_and_loss_pair_resolves_to_a_kind_of_the_table_or_names_the_fix(head, loss):
    spec = LOSS_TABLE[loss]
    try:
        kind = resolve_loss_kind(loss, Head(head), num_classes=2)
    except ConfigError as err:
        # Refused exactly where the table has no form of the loss for that head.
        assert head == "sigmoid1" and spec.one_unit_kind is None or head == "softmax2" and (
            spec.single_unit or spec.activation != "softmax")
        assert "set model.head=auto" in str(err) or "use loss=crossentropy" in str(err)
        return
    expected = {"auto": loss, "softmax2": loss, "sigmoid1": spec.one_unit_kind}[head]
    assert kind == expected and kind in LOSS_TABLE
    assert resolve_loss_kind(loss, head, num_classes=2) == kind  # a plain string from a script works the same


def test_a_wrong_head_is_a_config_error_with_the_allowed_values_and_the_fix():
    with pytest.raises(ConfigError, match=r"model.head must be one of \['auto', 'softmax2', 'sigmoid1'\], got 'sig'"):
        resolve_loss_kind("crossentropy", "sig", num_classes=2)
    with pytest.raises(ConfigError, match="model.head=sigmoid1 is for 2-class data, the data has 5 classes") as raised:
        resolve_loss_kind("crossentropy", "sigmoid1", num_classes=5)
    assert isinstance(raised.value, ExpectedError) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize("layout", HeadLayout.names())
def test_both_head_layouts_give_one_distribution_per_head(layout):
    model = multi_head((12,), 6, "softmax", num_heads=3, vocab_size=50, heads=HeadLayout(layout))
    assert model.name == f"multi_head_{layout}" and tuple(model.output_shape) == (None, 3, 6)
    out = np.asarray(model(np.zeros((2, 12), "int32")))
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    assert capabilities("multi_head").separate_heads and not capabilities("mlp").separate_heads


def test_an_unknown_head_layout_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model.heads must be one of \['shared', 'separate'\], got 'split'"):
        multi_head((12,), 6, None, num_heads=3, heads="split")
