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


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (a driver's own message, without the SQL and help
    links SQLAlchemy appends on further lines); the type's name for an empty one.

    A wrapped driver error (SQLAlchemy's ``.orig``) speaks for itself.
    """
    exc = getattr(exc, "orig", None) or exc
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out: Python's MemoryError, torch's
    ``OutOfMemoryError`` (CUDA) or the RuntimeError of torch's CPU allocator.

    Matched by type name, so that callers need not import torch.
    """
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
