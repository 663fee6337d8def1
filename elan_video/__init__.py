"""elan-video: image and video super-resolution with ELAN (Zhang et al., ECCV 2022).

Public names are imported on first use, so ``import elan_video`` (and the VapourSynth filter's import, and
``elan-video --help``) stays cheap: torch and PyAV load only when something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ELAN",
    "ElanVideoError",
    "InputError",
    "OptionError",
    "UpscaleOptions",
    "Upscaler",
    "__version__",
    "fuse",
    "load_model",
    "upscale_image",
    "upscale_video",
]

_HOMES = {
    "ELAN": "model.arch",
    "CheckpointError": "errors",
    "ElanVideoError": "errors",
    "InputError": "errors",
    "OptionError": "errors",
    "load_model": "model.checkpoint",
    "fuse": "model.fusion",
    "UpscaleOptions": "model.options",
    "Upscaler": "model.upscaler",
    "upscale_image": "model.upscaler",
    "upscale_video": "jobs.pipeline",
}

if TYPE_CHECKING:
    from .errors import CheckpointError, ElanVideoError, InputError, OptionError
    from .jobs.pipeline import upscale_video
    from .model.arch import ELAN
    from .model.checkpoint import load_model
    from .model.fusion import fuse
    from .model.options import UpscaleOptions
    from .model.upscaler import Upscaler, upscale_image


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'elan_video' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
