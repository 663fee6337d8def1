"""The project's exception hierarchy: every error the library raises on purpose derives from ElanVideoError."""

from __future__ import annotations

__all__ = ["CheckpointError", "ElanVideoError", "InputError", "OptionError", "MissingDependencyError"]


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
