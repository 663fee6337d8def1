"""The writer's colours against ground truth: colour bars through the real command line to H.264 in each matrix
and range, decoded by the standards' equations with the matrix and range the output is tagged with.

The source is lossless RGB (FFV1 bgr0) tagged BT.601, BT.709 or BT.2020 and limited or full range, which the
output must keep; x264 at --crf 0 is lossless, so the planes read back are exactly what the writer's RGB -> YUV
conversion gave. The network is the bundled elan-light-x2 (fp32): at the centre of a bar, 12 source pixels from
its sides and 8 from the frame's top and bottom, it gives the flat colour back within a level. The reference
decoder below is numpy, not swscale: swscale's own YUV -> RGB rounding (its default, inexact flags) added up to a
level more, and an error the writer and FFmpeg's decoder shared could cancel out. 8-bit Y'CbCr alone is up to about
1.6 levels off in R'G'B' (a half-level step of Cb is 1 level of B' in limited range), so 3 levels leave the
writer's conversion about one.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from video_clips import make_clip, video_frames

from elan_video.cli import main

# Saturated bars (red, green, blue, cyan, magenta, yellow, white, black) and three greys. The greys are what
# shows a range mix-up in full-range output: read as limited range, the saturated bars clip back to 0 and 255.
BARS = np.array(
    [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (0, 255, 255),
        (255, 0, 255),
        (255, 255, 0),
        (255, 255, 255),
        (0, 0, 0),
        (128, 128, 128),
        (64, 64, 64),
        (192, 192, 192),
    ]
)
BAR_WIDTH, HEIGHT = 24, 16  # source pixels: the output is 528 x 32
TOLERANCE = 3  # levels of 255

# (Kr, Kb) of each AVColorSpace number used here (ITU-R BT.601, BT.709, BT.2020 non-constant luminance).
COEFFICIENTS = {6: (0.299, 0.114), 1: (0.2126, 0.0722), 9: (0.2627, 0.0593)}
MATRICES = {"bt601": 6, "bt709": 1, "bt2020": 9}
RANGES = {"limited": 1, "full": 2}  # AVColorRange


def colour_bars() -> np.ndarray:
    """HEIGHT x (len(BARS) * BAR_WIDTH) x 3 uint8: one vertical bar of each colour."""
    row = np.repeat(BARS.astype(np.uint8), BAR_WIDTH, axis=0)
    return np.ascontiguousarray(np.broadcast_to(row, (HEIGHT, *row.shape)))


def plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    """One 8-bit plane of ``frame`` as a 2-D array, without its line padding."""
    p = frame.planes[index]
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def reference_rgb(ycbcr: np.ndarray, *, matrix: int, full_range: bool) -> np.ndarray:
    """8-bit Y'CbCr (... x 3) -> R'G'B' levels (... x 3, rounded and clipped to 0..255), by the equations of
    ITU-R BT.601/709/2020 and H.273's 8-bit quantisation (limited: Y' 16..235, Cb/Cr 16..240; full: 0..255)."""
    kr, kb = COEFFICIENTS[matrix]
    y, cb, cr = (ycbcr[..., i].astype(np.float64) for i in range(3))
    if full_range:
        y, pb, pr = y / 255, (cb - 128) / 255, (cr - 128) / 255
    else:
        y, pb, pr = (y - 16) / 219, (cb - 128) / 224, (cr - 128) / 224
    r = y + 2 * (1 - kr) * pr
    b = y + 2 * (1 - kb) * pb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1) * 255), 0, 255)


def bar_centres(frame: av.VideoFrame) -> np.ndarray:
    """The Y'CbCr samples (len(BARS) x 3) at the centre of each bar of a 2x output frame, chroma subsampled or
    not: the chroma sample whose area holds the centre pixel."""
    # Bar i covers the output columns from 2 * i * BAR_WIDTH to 2 * (i + 1) * BAR_WIDTH.
    xs = (2 * np.arange(len(BARS)) + 1) * BAR_WIDTH
    y = HEIGHT  # the middle row of the 2 * HEIGHT output rows
    luma, cb, cr = plane(frame, 0), plane(frame, 1), plane(frame, 2)
    cx, cy = xs * cb.shape[1] // frame.width, y * cb.shape[0] // frame.height
    return np.stack([luma[y, xs], cb[cy, cx], cr[cy, cx]], axis=-1)


def worst_error(centres: np.ndarray, *, matrix: int, full_range: bool) -> int:
    """The largest difference, in levels, between a decoded bar centre and its source colour."""
    return int(np.abs(reference_rgb(centres, matrix=matrix, full_range=full_range) - BARS).max())


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv420p"])
@pytest.mark.parametrize("range_name", list(RANGES))
@pytest.mark.parametrize("matrix_name", list(MATRICES))
def test_colour_bars_keep_their_colours_in_each_matrix_and_range(
    tmp_path: Path, matrix_name: str, range_name: str, pix_fmt: str
) -> None:
    matrix, colour_range = MATRICES[matrix_name], RANGES[range_name]
    full = colour_range == 2
    bars = colour_bars()
    src = tmp_path / "bars.mkv"
    size = (bars.shape[1], HEIGHT)
    make_clip(
        src, frames=2, size=size, codec="ffv1", pix_fmt="bgr0", matrix=matrix, full_range=full, images=[bars, bars]
    )
    assert all(np.array_equal(image, bars) for _, image in video_frames(src))  # the source is lossless
    dst = tmp_path / "out.mp4"
    args = [src, dst, "--scale", "2", "--model", "elan-light-x2", "--device", "cpu", "--precision", "fp32"]
    args += ["--backend", "eager", "--pix-fmt", pix_fmt, "--crf", "0", "-q"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    with av.open(str(dst)) as container:
        stream = container.streams.video[0]
        tags = (stream.codec_context.name, int(stream.codec_context.colorspace), int(stream.codec_context.color_range))
        assert tags == ("h264", matrix, colour_range)
        frames = list(container.decode(stream))
    assert len(frames) == 2
    for frame in frames:
        assert (frame.width, frame.height) == (2 * bars.shape[1], 2 * HEIGHT)
        assert frame.format.name in (pix_fmt, pix_fmt.replace("yuv", "yuvj"))  # FFmpeg's H.264 decoder says yuvj
        centres = bar_centres(frame)
        assert worst_error(centres, matrix=matrix, full_range=full) <= TOLERANCE
        # Guard: the same samples read with another matrix or the other range miss by more, so the check above
        # can fail.
        for other in set(COEFFICIENTS) - {matrix}:
            assert worst_error(centres, matrix=other, full_range=full) > TOLERANCE
        assert worst_error(centres, matrix=matrix, full_range=not full) > TOLERANCE
