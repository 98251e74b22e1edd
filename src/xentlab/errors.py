"""The error types that describe a bad input rather than a bug: the console prints them as a message, not a
traceback, and the run is marked FAILED with that message."""

from __future__ import annotations


class ExpectedError(Exception):
    """Base of every error about the user's input: config, data, hardware, tracking store."""


class ConfigError(ExpectedError, ValueError):
    """A config value outside its allowed range, or a combination that cannot work."""
