"""Video I/O with PyAV: probing, threaded decoding to RGB arrays, encoding, packet passthrough, colour tags.

Frames cross this package's boundary as H x W x 3 RGB numpy arrays: uint8 for 8-bit sources, uint16 scaled to the
full 0..65535 range for sources deeper than 8 bits. The YUV<->RGB conversion uses the source's colour matrix and
range (guessed from the frame size when untagged, the way players do), and the same tags are written to the output,
so colours survive the round trip. Timestamps are kept per frame: nothing assumes a constant frame rate. The
picture's geometry survives too: the sample aspect ratio and display matrix (a phone's rotation) are written to
the output. Still images are :mod:`elan_video.media.image`'s.

Modules: :mod:`.probe` (what a file holds), :mod:`.reader` (decoding), :mod:`.encoding` (choosing the encoder),
:mod:`.writer` (encoding and muxing), :mod:`.pixels` (colour tags and pixel formats).
"""

from __future__ import annotations

from ...errors import OutputError, VideoWarning
from .encoding import EncoderPlan, plan_encoder
from .pixels import ColourTags, luma
from .probe import VideoInfo, check_source, probe
from .reader import DecodedFrame, VideoReader, read_frames
from .writer import VideoWriter

__all__ = [
    "ColourTags",
    "DecodedFrame",
    "EncoderPlan",
    "OutputError",
    "VideoInfo",
    "VideoReader",
    "VideoWarning",
    "VideoWriter",
    "check_source",
    "luma",
    "plan_encoder",
    "probe",
    "read_frames",
]
