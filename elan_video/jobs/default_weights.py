"""Which bundled weights the command line gives a source when ``--model`` is not given: the rule of
:func:`elan_video.model.codec_weights.weights_for`, with the facts it needs probed from the file.

A video whose codec is lossy gets the codec-aware ``elan-light-x{s}-video`` weights where the scale has them:
measured on x264-coded sequences, they beat the clean weights at every quality tried, CRF 10 included
(docs/weights.md). Coarsely quantised H.264 (by the mean QP of its first 24 pictures) gets the medium or strong
x2 ones. A still image, an animation, or a losslessly coded video (FFV1, raw, Y4M, PNG, QuickTime RLE, ...) gets
the clean weights: nothing there was compressed. The library's functions and the VapourSynth filter keep the clean
weights as their default, so that code written against them does not change its output.
"""

from __future__ import annotations

from pathlib import Path

import av

from ..media.image import is_image_path
from ..media.video.probe import is_cover, mean_h264_qp
from ..model.codec_weights import by_quantiser, weights_for

__all__ = ["LOSSLESS_CODECS", "coded_lossily", "default_weights"]

# FFmpeg decoder names of lossless video codecs (and uncompressed ones).
LOSSLESS_CODECS = frozenset(
    {"ffv1", "ffvhuff", "huffyuv", "utvideo", "magicyuv", "rawvideo", "wrapped_avframe", "png", "apng", "qtrle"}
    | {"v210", "v210x", "v308", "v408", "v410", "r210", "r10k", "ayuv", "yuv4", "y41p", "zlib", "lagarith"}
    | {"bmp", "tiff", "targa", "sgi", "ppm", "pgm", "dpx", "exr", "gif", "qoi", "flashsv", "mscc", "tscc2"}
)


def coded_lossily(source: Path) -> bool:
    """Whether ``source`` is a video whose main picture stream has a lossy codec. An image file (by name), a
    file FFmpeg cannot open or one without video: False (the job itself reports what is wrong)."""
    if is_image_path(source):
        return False
    try:
        with av.open(str(source)) as container:
            streams = [s for s in container.streams.video if not is_cover(s)]
            return bool(streams) and streams[0].codec_context.name not in LOSSLESS_CODECS
    except (av.error.FFmpegError, OSError, ValueError):
        return False


def default_weights(source: Path, *, scale: int) -> str:
    """The bundled weights' name for ``source`` at ``scale`` (see :func:`~elan_video.model.codec_weights.weights_for`;
    the mean QP is measured only where it can change the answer)."""
    lossy = coded_lossily(source)
    if not lossy or not by_quantiser(scale):  # decoding for the QP would change nothing
        return weights_for(scale, lossy=lossy)
    return weights_for(scale, lossy=lossy, qp=mean_h264_qp(source))
