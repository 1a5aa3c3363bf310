"""Errors that reach the user as one line and exit status 2."""

from __future__ import annotations


class ScotsearchError(Exception):
    """Bad input (missing file, malformed annotation, impossible parameter).

    The CLI prints ``scotsearch: error: <message>`` and exits with status 2; nothing
    half-written is left behind by the command that raised it.
    """


class DataError(ScotsearchError):
    """A dataset file is missing, unreadable or malformed."""


class ConfigError(ScotsearchError):
    """A parameter or configuration value is impossible."""
