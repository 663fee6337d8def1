"""Training recipes as TOML files (``elan-video train --config training/x2.toml``).

A recipe holds :func:`elan_video.training.train.train`'s keyword arguments under their own names (``data_dirs``,
``scale``, ``out``, ``steps``, ``lr``, ``ema_decay``, ...; ``arch`` as a table of ELAN hyperparameters), plus
``threads``, the command line's CPU thread count. Paths are used as written: relative ones are relative to the
current directory, not to the file. Only keys and types are checked here; the values are checked by ``train``
like any caller's.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import OptionError

__all__ = ["ARCH_KEYS", "TRAIN_KEYS", "read_train_config"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What each kind of value must be, by the words the error message uses.
_KINDS: dict[str, Callable[[object], bool]] = {
    "a string": lambda v: isinstance(v, str),
    "an integer": _is_int,
    "a number": lambda v: _is_int(v) or isinstance(v, float),
    "true or false": lambda v: isinstance(v, bool),
    "a list of strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "a list of integers": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
    "a table": lambda v: isinstance(v, dict),
}

TRAIN_KEYS: dict[str, str] = {
    "data_dirs": "a list of strings",
    "scale": "an integer",
    "out": "a string",
    "steps": "an integer",
    "stop_at": "an integer",
    "init": "a string",
    "resume": "true or false",
    "arch": "a table",
    "batch": "an integer",
    "patch": "an integer",
    "degrade": "a string",
    "video": "a table",
    "lr": "a number",
    "schedule": "a string",
    "warmup": "an integer",
    "milestones": "a list of integers",
    "gamma": "a number",
    "ema_decay": "a number",
    "val_dir": "a string",
    "val_every": "an integer",
    "save_every": "an integer",
    "seed": "an integer",
    "device": "a string",
    "precision": "a string",
    "fast_shift": "true or false",
    "export": "a string",
    "anchor": "a string",
    "anchor_weight": "a number",
    "threads": "an integer",
}
"""The keys a recipe may hold and the kind of value each takes: ``train``'s parameters and ``threads``."""

ARCH_KEYS: dict[str, str] = {
    "m_elan": "an integer",
    "c_elan": "an integer",
    "n_share": "an integer",
    "r_expand": "an integer",
    "window_sizes": "a list of integers",
}
"""The keys of a recipe's ``[arch]`` table (:class:`elan_video.model.arch.ELAN`'s; unset ones keep ELAN-light's)."""

# The smallest value of integer keys whose command-line options are ranges; train() checks the rest.
_MINIMUM = {
    "steps": 1,
    "stop_at": 1,
    "batch": 1,
    "patch": 8,
    "warmup": 0,
    "val_every": 1,
    "save_every": 1,
    "threads": 1,
}


def _check(path: Path, values: Mapping[str, Any], known: Mapping[str, str], prefix: str = "") -> dict[str, Any]:
    """``values`` with lists as tuples (milestones, window sizes) and integers in float keys as floats."""
    checked: dict[str, Any] = {}
    for key, value in values.items():
        name = prefix + key
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise OptionError(f"{path}: unknown key {name!r}{hint}")
        kind = known[key]
        if not _KINDS[kind](value):
            raise OptionError(f"{path}: {name} must be {kind}, got {value!r}")
        minimum = 1 if prefix else _MINIMUM.get(key)  # every arch hyperparameter is a count
        if kind == "an integer" and minimum is not None and value < minimum:
            raise OptionError(f"{path}: {name} must be at least {minimum}, got {value}")
        if kind == "a number":
            value = float(value)
        elif kind == "a list of integers":
            value = tuple(value)
        checked[key] = value
    return checked


def read_train_config(path: str | Path) -> dict[str, Any]:
    """Read a training recipe: ``train``'s keyword arguments (``data_dirs`` a list) plus ``threads`` where set.

    Raises :class:`~elan_video.errors.OptionError` with one line naming the file (and the key) for a missing or
    unreadable file, invalid TOML, an unknown key, or a value of the wrong type.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise OptionError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise OptionError(f"{path}: is a folder, not a TOML file") from None
    except OSError as exc:
        raise OptionError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise OptionError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"{path}: not valid TOML: {exc}") from None
    config = _check(path, values, TRAIN_KEYS)
    if "data_dirs" in config and not config["data_dirs"]:
        raise OptionError(f"{path}: data_dirs must name at least one folder")
    if "arch" in config:
        config["arch"] = _check(path, config["arch"], ARCH_KEYS, prefix="arch.")
    return config
