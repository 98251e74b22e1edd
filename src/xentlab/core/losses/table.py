"""`LOSS_TABLE`: for each loss kind, the head and the labels it needs, and the combinations it refuses.

The one place these rules are stated: the head builder (`xentlab.core.models.head_spec`), the config checks
(`xentlab.config.checks.check_loss_and_labels`) and `build_loss` all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xentlab.choices import Encoding
from xentlab.core.losses.arguments import check_encoding
from xentlab.errors import ConfigError


@dataclass(frozen=True)
class LossSpec:
    """What one loss kind needs from the model head and from the labels.

    `LOSS_TABLE` is the one place these rules are stated: the head builder (`xentlab.core.models.head_spec`), the
    config checks (`xentlab.config.checks.check_loss_and_labels`, through `check_loss_combination`) and `build_loss`
    all read it.

    Attributes:
        single_unit: One sigmoid unit for 2-class data (True) or one unit per class (False).
        activation: The head's activation when the loss takes probabilities (``from_logits=False``);
            with logits the head is linear.
        encodings: The label encodings (``labels.encoding``) the loss accepts; the first is `build_loss`'s
            default.
        label_form: How the loss reads its labels, in words, for error messages.
        needs_logits: The loss changes the logits themselves, so it needs ``from_logits=True`` (a linear head).
        binary_only: The loss is defined for 2-class data only.
        masks: The loss honours ``ignore_class`` (labels.ignore_class).
        smooths: The loss honours ``label_smoothing``.
        one_unit_kind: The kind ``model.head=sigmoid1`` turns this loss into; None when it has no one-unit form.
    """

    single_unit: bool
    activation: str
    encodings: tuple[str, ...]
    label_form: str
    needs_logits: bool = False
    binary_only: bool = False
    masks: bool = True
    smooths: bool = True
    one_unit_kind: str | None = None

    def head_units(self, num_classes: int) -> int:
        """Units of the output layer for `num_classes` classes."""
        return 1 if self.single_unit else num_classes

    def head_activation(self, from_logits: bool) -> str | None:
        """The output layer's activation: None (linear) for logits, else `activation`."""
        return None if from_logits else self.activation


_IDS = "integer class ids or their one-hot view"
_BOTH = Encoding.names()
LOSS_TABLE: dict[str, LossSpec] = {
    "crossentropy": LossSpec(False, "softmax", _BOTH, _IDS, one_unit_kind="binary"),
    "focal": LossSpec(False, "softmax", _BOTH, _IDS),
    "binary": LossSpec(True, "sigmoid", ("sparse",), "0/1 labels", binary_only=True, one_unit_kind="binary"),
    "weighted_binary": LossSpec(False, "sigmoid", ("one_hot",), "the one-hot view, each class its own sigmoid label",
                                masks=False, smooths=False),
    "logit_adjusted": LossSpec(False, "softmax", _BOTH, _IDS, needs_logits=True),
    "poly1": LossSpec(False, "softmax", _BOTH, _IDS),
}
LOSS_KINDS = tuple(LOSS_TABLE)


def loss_spec(kind: Any) -> LossSpec:
    """The `LOSS_TABLE` row of `kind`.

    Raises:
        ConfigError: (a ValueError) For a kind that is not in the table.
    """
    if kind not in LOSS_TABLE:
        raise ConfigError(
            f"kind must be one of {LOSS_KINDS}; received kind={kind!r}. Pick one of these names (loss=NAME), or "
            f"pass your own Keras loss object instead of calling build_loss."
        )
    return LOSS_TABLE[kind]


def _kinds_where(rule) -> str:
    return ", ".join(k for k, spec in LOSS_TABLE.items() if rule(spec))


def check_loss_combination(
    kind: Any, *, encoding: Any = None, from_logits: Any = None, num_classes: int | None = None,
    ignore_class: Any = None, label_smoothing: Any = None,
) -> LossSpec:
    """Refuses what `LOSS_TABLE` forbids for `kind`; arguments left at None are not known yet and not checked.

    Messages name the config key, the value received and the override that fixes it.

    Returns:
        The kind's `LossSpec`.

    Raises:
        ConfigError: (a ValueError) For an unknown kind, 2-class-only losses on other data, a label encoding the
            loss cannot read, probabilities for a loss that needs logits, or a mask or smoothing the loss cannot honour.
    """
    spec = loss_spec(kind)
    if spec.binary_only and num_classes is not None and num_classes != 2:
        head = "one sigmoid unit" if spec.single_unit else "2 classes"
        raise ConfigError(
            f"loss={kind} ({head}) needs 2 classes, the data has {num_classes}; use loss=crossentropy "
            f"(softmax over {num_classes} classes)"
        )
    if encoding is not None and check_encoding(encoding) not in spec.encodings:
        allowed = " or ".join(f"encoding={e!r}" for e in spec.encodings)
        others = _kinds_where(lambda s: encoding in s.encodings)
        raise ConfigError(
            f"loss={kind} takes {spec.label_form} ({allowed}); received encoding={encoding!r}: set "
            f"labels={spec.encodings[0]}, or use a loss that takes labels={encoding}: {others}"
        )
    if spec.needs_logits and from_logits is not None and not from_logits:
        raise ConfigError(
            f"loss={kind} works on the logits (the head's raw outputs) and needs from_logits=True; received "
            f"loss.from_logits={from_logits!r}. Set loss.from_logits=true (the model head becomes linear)"
        )
    if not spec.masks and ignore_class is not None:
        raise ConfigError(
            f"loss={kind} has no ignore_class; received labels.ignore_class={ignore_class!r}. Unset it, drop the "
            f"n/a examples from the data (data.drop_na=true), or use a loss that masks them: "
            f"{_kinds_where(lambda s: s.masks)}"
        )
    if not spec.smooths and label_smoothing:
        raise ConfigError(
            f"loss={kind} has no label_smoothing; received loss.label_smoothing={label_smoothing!r}. Set "
            f"loss.label_smoothing=0"
        )
    return spec
