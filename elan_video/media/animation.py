"""Animated images (GIF, APNG, animated WebP and AVIF) as whole pictures with their timing, through Pillow.

Pillow composes every frame onto the full canvas (disposal and blending applied), so each picture can be
upscaled alone; writing them back as full frames lets Pillow choose its own frame differences.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OptionError, WarnCallback, default_warn

__all__ = ["ANIMATION_SUFFIXES", "Animation", "read_animation", "write_animation"]

# Image formats that hold more than one picture and that Pillow writes as an animation.
ANIMATION_SUFFIXES = (".gif", ".png", ".webp", ".avif")
_FORMATS = {".gif": "GIF", ".png": "PNG", ".webp": "WEBP", ".avif": "AVIF"}


@dataclass(frozen=True)
class Animation:
    """The pictures of an animated image and how they play.

    frames: full-canvas pictures, each H x W x 3 (RGB) or, when any frame has transparency, all H x W x 4
    (RGBA), uint8. durations_ms: how long each is shown, in milliseconds. loop: how many times the animation
    plays again after the first (0: forever, Pillow's convention), None where the file says nothing (a GIF
    without a loop extension plays once).
    """

    frames: list[np.ndarray]
    durations_ms: list[int]
    loop: int | None


def read_animation(path: str | Path) -> Animation:
    """Every picture of an animated GIF, APNG, WebP or AVIF, composed onto the canvas; see :class:`Animation`."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decoded on purpose, frame by frame
            with Image.open(path) as image:
                loop = image.info.get("loop")
                pictures, durations = [], []
                for frame in ImageSequence.Iterator(image):
                    pictures.append(np.asarray(frame.convert("RGBA")))
                    durations.append(round(float(frame.info.get("duration") or 0)))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: the animation cannot be decoded ({exc})") from None
    if any(int(p[..., 3].min()) < 255 for p in pictures):
        frames = [np.ascontiguousarray(p) for p in pictures]
    else:
        frames = [np.ascontiguousarray(p[..., :3]) for p in pictures]
    return Animation(frames=frames, durations_ms=durations, loop=None if loop is None else int(loop))


def write_animation(
    path: str | Path,
    frames: Sequence[np.ndarray],
    *,
    durations_ms: Sequence[int],
    loop: int | None,
    icc_profile: bytes | None = None,
    warn: WarnCallback | None = None,
) -> None:
    """Write equal-sized H x W x 3 or x 4 uint8 pictures as an animated GIF, PNG (APNG), WebP or AVIF.

    durations_ms and loop as in :class:`Animation`. GIF's transparency is one bit: alpha below 128 becomes
    transparent, the rest opaque, and its 256-colour palette is chosen per frame by Pillow. WebP and AVIF are
    lossy at quality 95, as for still images; ``icc_profile`` is written where the format has room, and ``warn``
    hears where it has none (GIF).
    """
    from PIL import Image

    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise OptionError(f"{path}: animations are written as {', '.join(ANIMATION_SUFFIXES)}, not {suffix}")
    if not frames or len(frames) != len(durations_ms):
        raise OptionError(f"{len(frames)} pictures need as many durations, got {len(durations_ms)}")
    first = frames[0]
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.shape != first.shape:
            raise OptionError(
                f"animation pictures must all be H x W x 3 or x 4 uint8 of one size; got {frame.dtype} {frame.shape}"
                f" beside {first.dtype} {first.shape}"
            )
    fmt = _FORMATS[suffix]
    pictures = []
    for frame in frames:
        if fmt == "GIF" and frame.shape[2] == 4:
            frame = frame.copy()
            frame[..., 3] = np.where(frame[..., 3] >= 128, 255, 0)
        pictures.append(Image.fromarray(np.ascontiguousarray(frame)))
    options: dict[str, object] = {"save_all": True, "append_images": pictures[1:], "duration": list(durations_ms)}
    if loop is not None:
        options["loop"] = loop
    if fmt in ("WEBP", "AVIF"):
        options["quality"] = 95
    if fmt == "GIF" and frames[0].shape[2] == 4:
        # Each frame is the whole canvas: clear the previous one first, or its pixels show through where this
        # one is transparent; and Pillow's palette optimisation loses the transparent entry.
        options.update(disposal=2, optimize=False)
    if icc_profile and fmt == "GIF":
        (warn or default_warn)(f"{Path(path).name}: GIF cannot hold the source's ICC profile; not written")
    elif icc_profile:
        options["icc_profile"] = icc_profile
    pictures[0].save(path, format=fmt, **options)
