"""The project's exception hierarchy (every error the library raises on purpose derives from ElanVideoError) and
its warning category for media that lose something on the way."""

from __future__ import annotations

import warnings
from collections.abc import Callable

__all__ = [
    "CheckpointError",
    "ElanVideoError",
    "InputError",
    "MissingDependencyError",
    "OptionError",
    "OutputError",
    "VideoWarning",
    "WarnCallback",
    "default_warn",
    "first_line",
]


class ElanVideoError(Exception):
    """Base class; the CLI turns these into one-line messages."""


class OptionError(ElanVideoError, ValueError):
    """An option has a value outside its allowed set ("scale must be 2, 3 or 4, got 5")."""


class CheckpointError(ElanVideoError):
    """A checkpoint cannot be read or does not match the ELAN network (names the file and key)."""


class InputError(ElanVideoError):
    """An input file or array cannot be used (missing, empty, undecodable, wrong shape or dtype)."""


class MissingDependencyError(ElanVideoError, ImportError):
    """An optional dependency is needed for the requested feature; the message carries an install hint."""


class OutputError(ElanVideoError):
    """The destination cannot be written (missing folder, same as the input, exists without overwrite)."""


class VideoWarning(UserWarning):
    """Something was lost or changed on the way (frames that did not decode, a dropped stream, padding)."""


WarnCallback = Callable[[str], None]


def default_warn(message: str) -> None:
    """Issue ``message`` as a :class:`VideoWarning` attributed to the caller's caller."""
    warnings.warn(message, VideoWarning, stacklevel=3)


def first_line(exc: BaseException) -> str:
    """A foreign exception's message in one line (its type's name where it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
