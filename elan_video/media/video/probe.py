"""Probing: what a file's video stream is (size, format, rate, colour, geometry, alpha, HDR metadata, its other
streams), read from the container and, where headers say too little, its first packets."""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import numpy as np

from ...errors import InputError
from .pixels import ColourTags, alpha_plane, format_facts, has_alpha

__all__ = [
    "StreamInfo",
    "VideoInfo",
    "alpha_decoder",
    "check_source",
    "first_frame_alpha",
    "is_cover",
    "is_text_subtitle",
    "main_video",
    "mean_h264_qp",
    "open_input",
    "probe",
    "stream_display_matrix",
    "stream_sar",
    "video_info",
]

# FFmpeg's display matrix (nine native-endian int32: 16.16 fixed point, 2.30 for the last column) of "no transform".
_IDENTITY_MATRIX = (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
# AVColorTransferCharacteristic of HDR video: SMPTE ST 2084 (PQ, HDR10) and ARIB STD-B67 (HLG).
_HDR_TRANSFERS = (16, 18)
# AVFieldOrder values of interlaced streams (TT, BB, TB, BT); 0 is unknown, 1 progressive.
_INTERLACED_FIELD_ORDERS = (2, 3, 4, 5)


def _fraction(value: object) -> Fraction | None:
    """AVRational/Fraction/None -> Fraction or None (PyAV's rationals are not ``Fraction``)."""
    if value is None or not value.denominator:  # type: ignore[attr-defined]
        return None  # FFmpeg's 0/0 means unknown
    frac = Fraction(value.numerator, value.denominator)  # type: ignore[attr-defined]
    return frac if frac > 0 else None


def stream_sar(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's sample (pixel) aspect ratio as FFmpeg guesses it from container and bitstream; None when
    unknown or square."""
    sar = stream.sample_aspect_ratio
    if sar is None or not sar.numerator or not sar.denominator:
        return None
    frac = Fraction(sar.numerator, sar.denominator)
    return None if frac == 1 else frac


def stream_display_matrix(stream: av.video.stream.VideoStream) -> tuple[int, ...] | None:
    """The stream's display matrix (FFmpeg's nine-integer layout), or None when it has none or it is the identity."""
    data = stream.codec_context.coded_side_data.get("display_matrix")
    if data is None or len(data) != 36:
        return None
    matrix = struct.unpack("=9i", data)
    return None if matrix == _IDENTITY_MATRIX else matrix


@dataclass(frozen=True)
class StreamInfo:
    """A non-video stream of the source: index, type ("audio", "subtitle", "data", ...), codec, language, title."""

    index: int
    type: str
    codec: str
    language: str | None
    title: str | None


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about a source before decoding it.

    frames: the container's frame count (None when the header does not say); estimated_frames: that count or
    duration x rate (None when neither is known); rate: average frame rate (None when unknown); time_base: the
    video stream's; bit_depth: bits per component of the decoded format; colour: resolved colour tags;
    sample_aspect_ratio: pixel width over height (None when square or unknown); display_matrix: how players turn
    or mirror the picture for display, FFmpeg's nine integers (None when they show it as stored).
    """

    path: Path
    format_name: str
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    chroma: str  # "420", "422", "440", "444" or "rgb"
    frames: int | None
    estimated_frames: int | None
    duration: float | None
    rate: Fraction | None
    time_base: Fraction
    colour: ColourTags
    others: tuple[StreamInfo, ...] = field(default_factory=tuple)
    sample_aspect_ratio: Fraction | None = None
    display_matrix: tuple[int, ...] | None = None
    stream_index: int = 0  # the video stream's index among all the file's streams
    interlaced: bool = False  # FFmpeg's field order names a field order (not progressive or unknown)
    # The video has an alpha channel that is used: its format has one (ProRes 4444, FFV1, PNG, QuickTime RLE, VP9
    # with alpha) and the first frame is not fully opaque (GIF always decodes with alpha, mostly unused).
    alpha: bool = False
    # HDR static metadata of PQ/HLG sources, as FFmpeg's structs: AVMasteringDisplayMetadata (SMPTE ST 2086)
    # and AVContentLightMetadata (MaxCLL, MaxFALL); None where absent.
    mastering_display: bytes | None = None
    content_light: bytes | None = None


def check_source(path: str | Path) -> Path:
    """Validate that ``path`` names a readable, non-empty file; returns it as a Path (raises InputError)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a video or image file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    return p


def open_input(path: Path, opener: Callable[[], BinaryIO] | None = None) -> av.container.InputContainer:
    """``path`` opened by FFmpeg; with ``opener``, the file object it gives instead (the bytes of ``path`` that a
    worker machine was sent), ``path`` then only naming it."""
    try:
        return av.open(opener() if opener is not None else str(path), mode="r")
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"{path}: not a video or image FFmpeg can read ({reason})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from None


def _alpha_decoder_name(stream: av.video.stream.VideoStream) -> str | None:
    """libvpx's decoder for VP8/VP9 with alpha (WebM's alpha_mode): FFmpeg's own decoders ignore the alpha
    picture that travels beside each frame."""
    if stream.metadata.get("alpha_mode") != "1":
        return None
    return {"vp9": "libvpx-vp9", "vp8": "libvpx"}.get(stream.codec_context.name)


def alpha_decoder(stream: av.video.stream.VideoStream) -> av.VideoCodecContext | None:
    name = _alpha_decoder_name(stream)
    if name is None:
        return None
    decoder = av.CodecContext.create(name, "r")
    decoder.thread_type = "AUTO"
    return decoder


def is_text_subtitle(stream: av.stream.Stream) -> bool:
    """Whether a subtitle stream's codec carries text (SRT, ASS, WebVTT, mov_text), not bitmaps (DVD, PGS)."""
    codec = stream.codec_context.codec if stream.codec_context is not None else None
    return codec is not None and bool(codec.text_sub)


def is_cover(stream: av.stream.Stream) -> bool:
    """Whether the stream is an attached picture (cover art): a video stream of one untimed packet."""
    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def main_video(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first video stream that is a moving picture: cover art (an attached picture) is not the video."""
    videos = list(container.streams.video)
    moving = [s for s in videos if not is_cover(s)]
    if not moving:
        only = " (only a cover picture)" if videos else ""
        raise InputError(f"{path}: has no video stream{only}")
    return moving[0]


def mean_h264_qp(source: Path | BinaryIO, *, frames: int = 24) -> float | None:
    """How coarsely an H.264 video was quantised: the mean quantisation parameter (QP, 0..51; x264's default CRF 23
    gives about 23-32 depending on the picture) of the first ``frames`` pictures of ``source``'s main video
    stream, averaged over every macroblock of each, as its decoder reports them (FFmpeg's exported encoding
    parameters), on the 8-bit scale whatever the bit depth. ``source``: a file, or a binary stream of a file's
    bytes. None for another codec (their scales differ, and most decoders report nothing), a file without video
    or one FFmpeg cannot read."""
    path = source if isinstance(source, Path) else Path("stream")
    try:
        with av.open(str(source) if isinstance(source, Path) else source) as container:
            stream = main_video(container, path)
            if stream.codec_context.name != "h264":
                return None
            stream.codec_context.options = {"export_side_data": "venc_params"}
            means = []
            for frame in itertools.islice(container.decode(stream), frames):
                params = frame.side_data.get(av.sidedata.sidedata.Type.VIDEO_ENC_PARAMS)
                if params is not None and params.nb_blocks:
                    # High-bit-depth streams report QP'Y, the QP plus 6 per bit over 8: back to the 8-bit scale.
                    offset = 6 * (frame.format.components[0].bits - 8)
                    means.append(float(np.mean(params.qp_map())) - offset)
    except (av.error.FFmpegError, OSError, ValueError, InputError):
        return None
    return float(np.mean(means)) if means else None


def video_info(container: av.container.InputContainer, path: Path) -> VideoInfo:
    stream = main_video(container, path)
    cc = stream.codec_context
    if not cc.width or not cc.height or cc.format is None:
        raise InputError(f"{path}: video stream has no decodable picture size or pixel format")
    pix_fmt = cc.format.name
    bits, chroma = format_facts(pix_fmt)
    time_base = _fraction(stream.time_base) or Fraction(1, 90000)
    rate = _fraction(stream.average_rate) or _fraction(stream.guessed_rate)
    measured = rate is not None and rate * time_base >= 1
    if measured:
        # A rate of one frame per clock tick or more is the clock's, not the pictures' (an AVI on a 1/600 s
        # clock holding 25 fps), or impossible (2500 fps on a 1 ms Matroska clock, left by a remux; VP9 refused
        # it: "Invalid parameter"). The timestamps say how far apart the frames are.
        rate = _rate_from_timestamps(path, stream.index, time_base) or 1 / time_base
    frames = int(stream.frames) if stream.frames and stream.frames > 0 else None
    duration = None
    if stream.duration:
        duration = float(stream.duration * time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    by_duration = round(duration * rate) if duration and rate else None
    # Such a header counts clock ticks as frames too (240 for 10 pictures).
    estimated = min(frames, by_duration) if measured and frames and by_duration else frames or by_duration
    if estimated is None:
        estimated = _estimate_frames(path, stream.index, rate)
    colour = ColourTags.resolve(
        matrix=int(cc.colorspace),
        range_=int(cc.color_range),
        primaries=int(cc.color_primaries),
        trc=int(cc.color_trc),
        height=cc.height,
        pix_fmt=pix_fmt,
    )
    mastering_display, content_light = (
        _hdr_metadata(path, stream.index) if int(cc.color_trc) in _HDR_TRANSFERS else (None, None)
    )
    others = tuple(
        StreamInfo(
            index=s.index,
            type=s.type,
            codec=s.codec_context.name if s.codec_context is not None else "unknown",
            language=s.metadata.get("language"),
            title=s.metadata.get("title"),
        )
        for s in container.streams
        if s is not stream
    )
    return VideoInfo(
        path=path,
        format_name=container.format.name,
        codec=cc.name,
        width=cc.width,
        height=cc.height,
        pix_fmt=pix_fmt,
        bit_depth=bits,
        chroma=chroma,
        frames=frames,
        estimated_frames=estimated,
        duration=duration,
        rate=rate,
        time_base=time_base,
        colour=colour,
        others=others,
        sample_aspect_ratio=stream_sar(stream),
        display_matrix=stream_display_matrix(stream),
        stream_index=stream.index,
        interlaced=int(cc.field_order) in _INTERLACED_FIELD_ORDERS,
        alpha=_alpha_decoder_name(stream) is not None or (has_alpha(cc.format) and _transparent(path, stream.index)),
        mastering_display=mastering_display,
        content_light=content_light,
    )


def _transparent(path: Path, index: int) -> bool:
    """Whether the stream's first frame has a pixel that is not fully opaque (decoded through a second handle)."""
    with contextlib.suppress(av.error.FFmpegError, OSError), av.open(str(path)) as container:
        return first_frame_alpha(container, container.streams[index]) is not None
    return False


def first_frame_alpha(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> np.ndarray | None:
    """The alpha plane (H x W, uint8 or uint16 like :func:`alpha_plane`) of ``stream``'s next decoded frame;
    None when every pixel is fully opaque or nothing decodes. Advances ``container``."""
    try:
        frame = next(container.decode(stream))
    except (av.error.FFmpegError, StopIteration):
        return None
    deep = format_facts(frame.format.name)[0] > 8
    alpha = alpha_plane(frame, deep=deep)
    return None if (alpha == (65535 if deep else 255)).all() else alpha


def _hdr_metadata(path: Path, index: int) -> tuple[bytes | None, bytes | None]:
    """(mastering display, content light level) side data of the stream's first frame. FFmpeg attaches them to
    frames whether they come from the bitstream's SEI or the container, so one frame is decoded, through a
    second handle to leave the caller's demuxer where it is."""
    from av.sidedata.sidedata import Type

    with contextlib.suppress(av.error.FFmpegError, OSError, StopIteration), av.open(str(path)) as container:
        frame = next(container.decode(container.streams[index]))
        found = {kind: bytes(data) for kind, data in frame.side_data.items()}
        return found.get(Type.MASTERING_DISPLAY_METADATA), found.get(Type.CONTENT_LIGHT_LEVEL)
    return None, None


def _rate_from_timestamps(path: Path, index: int, time_base: Fraction) -> Fraction | None:
    """The frame rate the first few dozen timestamps of stream ``index`` keep (their median spacing), or None."""
    stamps: list[int] = []
    with contextlib.suppress(av.error.FFmpegError, OSError), av.open(str(path)) as container:
        for packet in container.demux(container.streams[index]):
            if packet.pts is not None:
                stamps.append(packet.pts)
            if len(stamps) == 33:
                break
    steps = sorted(b - a for a, b in itertools.pairwise(sorted(stamps)) if b > a)
    return 1 / (steps[len(steps) // 2] * time_base) if steps else None


def _estimate_frames(path: Path, index: int, rate: Fraction | None) -> int | None:
    """Frame count for a progress bar when the header does not say: the last timestamp found by seeking to
    the end, or else the file size over the mean size of the first packets. Approximate by design."""
    with contextlib.suppress(av.error.FFmpegError, OSError), av.open(str(path)) as container:
        stream = container.streams[index]
        time_base = _fraction(stream.time_base)
        if rate and time_base:
            container.seek(2**62, stream=stream, backward=True, any_frame=False)
            last = max((p.pts for p in container.demux(stream) if p.pts is not None), default=None)
            if last:
                return round(last * time_base * rate) + 1
    with contextlib.suppress(av.error.FFmpegError, OSError), av.open(str(path)) as container:
        sizes: list[int] = []
        for packet in container.demux(container.streams[index]):
            if packet.size:
                sizes.append(packet.size)
            if len(sizes) == 60:
                break
        if sizes:
            return max(1, round(path.stat().st_size / (sum(sizes) / len(sizes))))
    return None


def probe(path: str | Path) -> VideoInfo:
    """Describe the first video stream of ``path`` (raises InputError: missing, empty, unreadable, no video)."""
    p = check_source(path)
    with open_input(p) as container:
        return video_info(container, p)
