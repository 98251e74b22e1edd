"""The error types that describe a bad input rather than a bug: the console prints them as a message, not a
traceback, and the run is marked FAILED with that message.

Every error about the user's input subclasses `ExpectedError`; nothing else is treated as the user's. Each also
subclasses the built-in type a plain Python or Keras user expects (`ValueError`, `TypeError`, ...), so library
code called from a script can be caught the usual way.
"""

from __future__ import annotations


class ExpectedError(Exception):
    """Base of every error about the user's input: config, data, hardware, tracking store."""


class ConfigError(ExpectedError, ValueError):
    """A config value outside its allowed range, or a combination that cannot work."""


class ConfigTypeError(ExpectedError, TypeError):
    """A config value or argument of the wrong type (a string where a number belongs, say)."""


class LabelError(ExpectedError, ValueError):
    """Labels that break the run's label contract or do not fit the model's outputs."""


class ReportError(ExpectedError, ValueError):
    """A sweep's report cannot be made as asked: no such sweep, baseline or metric, or no run to compare."""
