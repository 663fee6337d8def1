"""elan-video: image and video super-resolution with ELAN (Zhang et al., ECCV 2022).

Heavy submodules are imported on first use so that ``import elan_video`` stays cheap and side-effect free.
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
    "Upscaler",
    "__version__",
    "fuse",
    "load_model",
    "upscale_image",
    "upscale_video",
]

_LOCATIONS = {
    "ELAN": "arch",
    "CheckpointError": "errors",
    "ElanVideoError": "errors",
    "InputError": "errors",
    "OptionError": "errors",
    "load_model": "checkpoint",
    "fuse": "fuse",
    "Upscaler": "upscaler",
    "upscale_image": "upscaler",
    "upscale_video": "pipeline",
}

if TYPE_CHECKING:
    from .arch import ELAN
    from .checkpoint import load_model
    from .errors import CheckpointError, ElanVideoError, InputError, OptionError
    from .fuse import fuse
    from .pipeline import upscale_video
    from .upscaler import Upscaler, upscale_image


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(f".{_LOCATIONS[name]}", __name__), name)
    raise AttributeError(f"module 'elan_video' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
