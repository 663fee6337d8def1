"""HEIC/HEIF (a phone's photo) through pillow-heif, apart from the video stack so that reading a training
image needs Pillow alone: FFmpeg sees only one tile of a HEIF picture, so pillow-heif decodes and writes it."""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import InputError

__all__ = ["HEIF_SUFFIXES", "is_heif", "pillow_reads_heif"]

HEIF_SUFFIXES = (".heic", ".heif")


def is_heif(path: str | Path) -> bool:
    """True when the file name has a HEIC/HEIF suffix."""
    return Path(path).suffix.lower() in HEIF_SUFFIXES


@functools.cache
def pillow_reads_heif() -> None:
    """Teach Pillow HEIC/HEIF through pillow-heif (once per process; call it only when such a file is met, so
    pillow-heif is imported only then)."""
    try:
        import pillow_heif
    except ImportError:  # a dependency; only a broken install lacks it
        raise InputError("HEIC/HEIF images need pillow-heif (pip install pillow-heif)") from None
    pillow_heif.register_heif_opener()
