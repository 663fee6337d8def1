"""elan-video: image and video super-resolution with ELAN (Zhang et al., ECCV 2022).

The network, checkpoint and upscaler names are imported here; the video pipeline (PyAV) is imported
on first use of ``upscale_video`` so that ``import elan_video`` needs no FFmpeg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .arch import ELAN
from .checkpoint import load_model
from .errors import CheckpointError, ElanVideoError, InputError, OptionError
from .fuse import fuse
from .upscaler import Upscaler, upscale_image

if TYPE_CHECKING:
    from .pipeline import upscale_video

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


def __getattr__(name: str) -> Any:
    if name == "upscale_video":
        from .pipeline import upscale_video

        return upscale_video
    raise AttributeError(f"module 'elan_video' has no attribute {name!r}")
