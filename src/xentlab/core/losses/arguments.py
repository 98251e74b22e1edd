"""Argument checks of the losses: each returns the value in a plain, JSON-friendly form (what `get_config` stores)
or raises an error that names the argument, what was expected and what was received.

`checked_arguments` is the one path through them: a loss function checks its keyword arguments by name
(`ARGUMENT_CHECKS`) when it is called, and a loss class checks them once, when it is built, with the same
function (`fn.check_arguments`), then calls the function unchecked (`fn.unchecked`) at every step.
Errors are `ConfigError` (a ValueError) and `ConfigTypeError` (a TypeError): the user's input, never a bug.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np

from xentlab.choices import Encoding, Reduction
from xentlab.errors import ConfigError, ConfigTypeError


def _check_choice(value: Any, choice: type[Encoding] | type[Reduction], arg: str, hint: str) -> str:
    if value not in choice.names():
        raise ConfigError(f"{arg} must be one of {choice.names()}; received {arg}={value!r}. {hint}")
    return choice(value).value


def check_encoding(encoding: Any) -> str:
    return _check_choice(encoding, Encoding, "encoding", "Use 'sparse' for integer class ids shaped like y_pred "
                         "without its class axis, 'one_hot' for labels shaped like y_pred.")


def check_bool(value: Any, arg: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigTypeError(f"{arg} must be True or False; received {arg}={value!r} of type {type(value).__name__}.")
    return bool(value)


def check_real(value: Any, arg: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not math.isfinite(value):
        raise ConfigTypeError(
            f"{arg} must be a finite number; received {arg}={value!r} of type {type(value).__name__}."
        )
    return float(value)


def check_label_smoothing(label_smoothing: Any) -> float:
    value = check_real(label_smoothing, "label_smoothing")
    if not 0.0 <= value < 1.0:
        raise ConfigError(
            f"label_smoothing must be in [0, 1); received label_smoothing={label_smoothing!r}. "
            f"0 disables smoothing; 0.1 is a common choice."
        )
    return value


FOCAL_GAMMA = 2.0  # the focal loss's focusing parameter unless one is given (Lin et al. 2017 found 2 best)


def check_gamma(gamma: Any) -> float:
    value = check_real(gamma, "gamma")
    if value < 0:
        raise ConfigError(f"gamma must be >= 0; received gamma={gamma!r}. Use 0 for plain cross-entropy, 2 is usual.")
    return value


def check_weights(value: Any, arg: str, *, strictly_positive: bool) -> float | list[float]:
    """A scalar or a list of per-class (per-label) weights, as plain floats so get_config() is JSON-friendly."""
    bound = "> 0" if strictly_positive else ">= 0"
    if isinstance(value, (str, bytes)) or not (isinstance(value, Real) or np.ndim(value) == 1):
        raise ConfigTypeError(
            f"{arg} must be a number or a list of numbers (one per class); received {arg}={value!r} "
            f"of type {type(value).__name__}."
        )
    values = [value] if isinstance(value, Real) else list(value)
    if not values:
        raise ConfigError(f"{arg} must not be empty; pass a number or one value per class.")
    checked = [check_real(v, arg) for v in values]
    if any(v <= 0 if strictly_positive else v < 0 for v in checked):
        raise ConfigError(f"{arg} must be {bound} (a scalar or one value per class); received {arg}={value!r}.")
    return checked[0] if isinstance(value, Real) else checked


def check_alpha(alpha: Any) -> float | list[float] | None:
    return None if alpha is None else check_weights(alpha, "alpha", strictly_positive=False)


def check_pos_weight(pos_weight: Any) -> float | list[float]:
    return check_weights(pos_weight, "pos_weight", strictly_positive=True)


def check_ignore_class(ignore_class: Any) -> int | None:
    if ignore_class is None:
        return None
    if isinstance(ignore_class, (bool, np.bool_)) or not isinstance(ignore_class, Integral):
        raise ConfigTypeError(
            f"ignore_class must be an integer class id or None; received ignore_class={ignore_class!r} of type "
            f"{type(ignore_class).__name__}. Use e.g. -1 for an n/a label outside the classes."
        )
    return int(ignore_class)


def check_reduction(reduction: Any) -> str:
    return _check_choice(reduction, Reduction, "reduction", "'sum_over_batch_size' is the mean over unmasked "
                         "elements, 'none' returns the per-element losses.")


def check_tau(tau: Any) -> float:
    value = check_real(tau, "tau")
    if value < 0:
        raise ConfigError(
            f"tau must be >= 0; received tau={tau!r}. 1 is the balanced softmax (Menon et al. 2021), 0 is plain "
            f"cross-entropy; set loss.tau to a value >= 0."
        )
    return value


def check_epsilon(epsilon: Any) -> float:
    value = check_real(epsilon, "epsilon")
    if value < -1:
        raise ConfigError(
            f"epsilon must be >= -1; received epsilon={epsilon!r}. Below -1 the loss of the true class rises "
            f"again as p_true nears 1, so training would reward doubt; 1 is the paper's default (loss.epsilon=1)."
        )
    return value


def check_needs_logits(from_logits: Any, fn: str) -> bool:
    if not check_bool(from_logits, "from_logits"):
        raise ConfigError(
            f"{fn} adds tau * log(prior) to the logits and needs from_logits=True; received from_logits=False. "
            f"Set loss.from_logits=true (a linear head), or use crossentropy for a softmax head."
        )
    return True


def check_priors(priors: Any) -> list[float]:
    """K priors > 0, normalised to sum 1 (the loss does not change: softmax ignores a shift of every logit)."""
    values = check_weights(priors, "priors", strictly_positive=True)
    if isinstance(values, float):
        raise ConfigTypeError(f"priors must be a list with one prior per class; received priors={priors!r}.")
    total = math.fsum(values)
    return [v / total for v in values]


# The check of each keyword argument of the loss functions, by its name.
ARGUMENT_CHECKS: dict[str, Callable[[Any], Any]] = {
    "encoding": check_encoding,
    "from_logits": functools.partial(check_bool, arg="from_logits"),
    "label_smoothing": check_label_smoothing,
    "ignore_class": check_ignore_class,
    "gamma": check_gamma,
    "alpha": check_alpha,
    "pos_weight": check_pos_weight,
    "tau": check_tau,
    "epsilon": check_epsilon,
    "priors": check_priors,
}


def checked_arguments(*, needs_logits: bool = False) -> Callable[[Callable], Callable]:
    """Decorates a loss function ``fn(y_true, y_pred, **arguments)`` so that its keyword arguments (defaults
    included) are checked by `ARGUMENT_CHECKS` before it runs.

    The decorated function carries `check_arguments(owner=None, **arguments)` (the checked, JSON-friendly values;
    `owner` names the caller in a message) and `unchecked`, the function itself, for a caller that checked once.

    Args:
        needs_logits: The function is defined on logits only: from_logits must be True (`check_needs_logits`).
    """

    def decorate(unchecked: Callable) -> Callable:
        signature = inspect.signature(unchecked)

        def check_arguments(owner: str | None = None, **arguments: Any) -> dict[str, Any]:
            signature.bind_partial(None, None, **arguments)  # TypeError for an argument the function does not take
            checked = {}
            for arg, value in arguments.items():
                if arg == "from_logits" and needs_logits:
                    checked[arg] = check_needs_logits(value, owner or unchecked.__name__)
                else:
                    checked[arg] = ARGUMENT_CHECKS[arg](value)
            return checked

        @functools.wraps(unchecked)
        def loss_fn(y_true, y_pred, **arguments):
            bound = signature.bind(y_true, y_pred, **arguments)
            bound.apply_defaults()
            return unchecked(y_true, y_pred, **check_arguments(**bound.kwargs))

        loss_fn.check_arguments, loss_fn.unchecked = check_arguments, unchecked
        return loss_fn

    return decorate
