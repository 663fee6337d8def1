"""Pixel formats and colour: FFmpeg's colour numbers, the colour tags a conversion uses, format facts, luma and
alpha planes."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

__all__ = [
    "ColourTags",
    "RANGE_FULL",
    "RANGE_LIMITED",
    "SPC_BT709",
    "SPC_RGB",
    "SPC_SMPTE170M",
    "SPC_UNSPECIFIED",
    "alpha_plane",
    "format_facts",
    "has_alpha",
    "is_grey",
    "luma",
]

# FFmpeg's AVColorSpace / AVColorRange numbers (the values PyAV's ``colorspace`` and ``color_range`` carry).
SPC_RGB, SPC_BT709, SPC_UNSPECIFIED, SPC_SMPTE170M = 0, 1, 2, 6
RANGE_LIMITED, RANGE_FULL = 1, 2
# swscale's SWS_CS_* for an AVColorSpace: the numbering differs for BT.601 (5/6 -> 5) and BT.2020 (9/10 -> 9).
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


@dataclass(frozen=True)
class ColourTags:
    """Colour description of a YUV stream as FFmpeg numbers (AVColorSpace, AVColorRange, AVColorPrimaries, ...).

    ``matrix`` and ``range`` are never "unspecified" here: :meth:`resolve` fills them the way players guess,
    so decoding and encoding agree and the output states explicitly what the conversion assumed.
    """

    matrix: int
    range: int
    primaries: int
    trc: int

    @classmethod
    def resolve(cls, *, matrix: int, range_: int, primaries: int, trc: int, height: int, pix_fmt: str) -> ColourTags:
        """Fill untagged values: BT.709 for HD (height >= 720) else BT.601; limited range except yuvj formats."""
        if matrix in (SPC_UNSPECIFIED, 3) or matrix not in (*_SWS_MATRIX, SPC_RGB):
            matrix = SPC_BT709 if height >= 720 else SPC_SMPTE170M
        if range_ not in (RANGE_LIMITED, RANGE_FULL):
            range_ = RANGE_FULL if pix_fmt.startswith("yuvj") else RANGE_LIMITED
        return cls(matrix=matrix, range=range_, primaries=primaries, trc=trc)

    @property
    def sws_matrix(self) -> int:
        """The matrix as swscale's SWS_CS_* number (what ``VideoFrame.reformat`` takes)."""
        return _SWS_MATRIX.get(self.matrix, 5)

    @property
    def full_range(self) -> bool:
        return self.range == RANGE_FULL


def has_alpha(fmt: av.VideoFormat | None) -> bool:
    return fmt is not None and any(c.is_alpha for c in fmt.components)


def alpha_plane(frame: av.VideoFrame, *, deep: bool, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The frame's alpha as H x W uint8 (uint16 over 0..65535 when ``deep``), scaled to ``width`` x ``height``
    where given, through planar GBRA: swscale's packed RGBA output from YUVA loses the alpha of the last columns
    at some widths (seen at 20 pixels)."""
    planar = frame.reformat(format="gbrap16le" if deep else "gbrap", width=width, height=height)
    dtype = np.dtype("<u2") if deep else np.dtype(np.uint8)
    plane = planar.planes[3]
    rows = np.frombuffer(plane, dtype=dtype).reshape(planar.height, plane.line_size // dtype.itemsize)
    return rows[:, : planar.width].astype(dtype.newbyteorder("="), copy=True)


def format_facts(pix_fmt: str) -> tuple[int, str]:
    """(bits per component, chroma layout) of a pixel format name."""
    fmt = av.VideoFormat(pix_fmt)
    bits = max((c.bits for c in fmt.components), default=8)
    if fmt.is_rgb or pix_fmt.startswith(("gbr", "rgb", "bgr", "pal", "gray")):
        return bits, "rgb"
    cw, ch = fmt.chroma_width(64), fmt.chroma_height(64)
    return bits, {(32, 32): "420", (32, 64): "422", (64, 32): "440"}.get((cw, ch), "444")


def luma(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 (or more: the first three are RGB) uint8/uint16 -> H x W of the same dtype: the ITU-R 601 luma
    Pillow's convert("L") gives."""
    weighted = rgb[..., :3].astype(np.int64) * np.array([299, 587, 114])
    return ((weighted.sum(axis=-1) + 500) // 1000).astype(rgb.dtype)


def is_grey(pix_fmt: str) -> bool:
    return pix_fmt.startswith(("gray", "ya", "mono"))
