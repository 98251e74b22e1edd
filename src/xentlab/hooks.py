"""A user's function named by a dotted path (`data._target_`, `model._target_`): found, then called with the
arguments it declares. Plain Python: every layer may import it."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from xentlab.errors import ExpectedError


def _importable_from_launch_folder() -> None:
    """The folder a command runs in is searched last, as `python -c` would search it first: a user's module beside
    the command is found, an installed package of the same name still wins."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def locate(target: str, *, key: str, error: type[ExpectedError]) -> Callable:
    """The callable a dotted path names (`package.module.function`, or `package.module.Class.method`).

    Args:
        target: the dotted path.
        key: the config key that holds it (`model._target_`), for messages.
        error: the expected-error type to raise (a `ValueError` subclass).
    """
    parts = target.split(".")
    if len(parts) < 2 or not all(parts):
        raise error(f"{key}={target} is not a dotted path; expected package.module.function")
    _importable_from_launch_folder()
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and not f"{module_name}.".startswith(f"{err.name}."):  # the module's own import failed
                raise error(f"{key}={target}: importing {module_name} failed: {err}") from err
            continue  # a shorter prefix may be the module
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError as err:
            raise error(f"{key}={target}: module {module_name} has no {'.'.join(parts[cut:])}") from err
        if not callable(obj):
            raise error(f"{key}={target} is a {type(obj).__name__}, not a function")
        return obj
    raise error(
        f"{key}={target}: no module {parts[0]} found; put the folder holding it on PYTHONPATH (or run from that folder)"
    )


def call_with_declared(
    fn: Callable, target: str, base: Mapping[str, Any], options: Mapping[str, Any], *, options_key: str,
    error: type[ExpectedError],
) -> Any:
    """Calls `fn` with the entries of `base` and `options` it declares (all of them when it takes **kwargs).

    An option `fn` does not take, or a required parameter nobody gives, is an `error` naming `options_key`.
    """
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    available = {**base, **options}
    unused = sorted(k for k in options if k not in params and not takes_any)
    if unused:
        raise error(f"{options_key} has {unused}, which {target} does not take; its parameters are {list(params)}")
    kwargs = available if takes_any else {k: v for k, v in available.items() if k in params}
    required = [
        name for name, p in params.items()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and name not in kwargs
    ]
    if required:
        raise error(
            f"{target} needs {required}; pass them as {options_key}={{{', '.join(f'{r}: ...' for r in required)}}}"
        )
    return fn(**kwargs)
