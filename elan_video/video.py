"""Video I/O with PyAV: probing, threaded decoding to RGB arrays, encoding, packet passthrough, colour tags.

Frames cross this module's boundary as H x W x 3 RGB numpy arrays: uint8 for 8-bit sources, uint16 scaled to the
full 0..65535 range for sources deeper than 8 bits. The YUV<->RGB conversion uses the source's colour matrix and
range (guessed from the frame size when untagged, the way players do), and the same tags are written to the output,
so colours survive the round trip. Timestamps are kept per frame: nothing assumes a constant frame rate. The
picture's geometry survives too: the sample aspect ratio and display matrix (a phone's rotation) are written to
the output. Still images are :mod:`elan_video.image`'s.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import os
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from .errors import ElanVideoError, InputError, OptionError

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

# FFmpeg's AVColorSpace / AVColorRange numbers (the values PyAV's ``colorspace`` and ``color_range`` carry).
_SPC_RGB, _SPC_BT709, _SPC_UNSPECIFIED, _SPC_BT470BG, _SPC_SMPTE170M = 0, 1, 2, 5, 6
_RANGE_UNSPECIFIED, _RANGE_LIMITED, _RANGE_FULL = 0, 1, 2
# swscale's SWS_CS_* for an AVColorSpace: the numbering differs for BT.601 (5/6 -> 5) and BT.2020 (9/10 -> 9).
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}

# (codec for 8-bit sources, codec for deeper sources) by output suffix.
_DEFAULT_CODECS = {
    ".mp4": ("libx264", "libx265"),
    ".m4v": ("libx264", "libx265"),
    ".mov": ("libx264", "libx265"),
    ".mkv": ("libx264", "libx265"),
    ".avi": ("libx264", "libx264"),
    ".webm": ("libvpx-vp9", "libvpx-vp9"),
    ".ivf": ("libvpx-vp9", "libvpx-vp9"),
    ".y4m": ("wrapped_avframe", "wrapped_avframe"),
    ".264": ("libx264", "libx264"),
    ".h264": ("libx264", "libx264"),
    ".265": ("libx265", "libx265"),
    ".hevc": ("libx265", "libx265"),
    ".nut": ("ffv1", "ffv1"),
    ".ts": ("libx264", "libx265"),
    ".m2ts": ("libx264", "libx265"),
    ".mts": ("libx264", "libx265"),
}
# Codecs (by FFmpeg's codec id name) that MPEG-TS carries and players read from it, by output suffix. That
# muxer has no codec table, so FFmpeg answers "cannot tell" (avformat_query_codec), which PyAV's
# supported_codecs counts as "no": it would otherwise take only MPEG-2 video and MP2 audio. A .m2ts is written
# as a Blu-ray (BDAV) stream, whose stream types differ (no AAC, no Opus): FFmpeg's mpegtsenc.c.
_TS_CODECS = frozenset(
    {"mpeg1video", "mpeg2video", "mpeg4", "h264", "hevc", "vc1", "mp2", "mp3", "aac", "aac_latm", "ac3", "eac3"}
    | {"dts", "truehd", "opus", "dvb_subtitle", "dvb_teletext"}
)
_M2TS_CODECS = frozenset(
    {"mpeg2video", "h264", "hevc", "vc1", "pcm_bluray", "ac3", "eac3", "dts", "truehd", "hdmv_pgs_subtitle"}
    | {"hdmv_text_subtitle"}
)
# MPEG program streams likewise: FFmpeg's mpegenc.c writes MPEG-2 and H.264 video besides MPEG-1.
_PS_CODECS = frozenset({"mpeg1video", "mpeg2video", "h264", "mp2", "mp3", "ac3", "dts", "dvd_subtitle"})
_UNDECLARED_CODECS = {".ts": _TS_CODECS, ".mts": _TS_CODECS, ".m2ts": _M2TS_CODECS}
_UNDECLARED_CODECS |= {".mpg": _PS_CODECS, ".mpeg": _PS_CODECS}
# Constant-quality defaults: visually transparent for the codec's scale.
_DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libvpx": 10, "libsvtav1": 28, "libaom-av1": 28}
_PRESET_CODECS = ("libx264", "libx265", "libsvtav1")
# FFmpeg's own DCT encoders, which take a constant quantiser (global_quality in lambda units) for quality.
_QSCALE_CODECS = ("mpeg1video", "mpeg2video", "mpeg4", "msmpeg4", "msmpeg4v2", "h263", "h263p", "flv", "mjpeg")
_QP2LAMBDA = 118
# Encoders that refuse odd frame sizes with subsampled chroma; others (VP9, FFV1, raw) accept them.
_EVEN_ONLY = ("libx264", "libx265", "libsvtav1", "mpeg4", "prores_ks", "mjpeg", "h264_nvenc", "hevc_nvenc")
# FFmpeg's display matrix (nine native-endian int32: 16.16 fixed point, 2.30 for the last column) of "no transform".
_IDENTITY_MATRIX = (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
_AVDISCARD_ALL = 48
# At output widths up to this, the x265 4.3 in PyAV's wheel writes past its CU-tree buffers (valgrind: widths
# 24-48 at any height, 8 and 10 bits; 50 and up clean) and at 48 aborts the process ("corrupted size vs.
# prev_size", 2 runs in 3 of 30 frames); with cutree=0 valgrind reports nothing and 6 runs in 6 pass.
_X265_MAX_WIDTH_WITHOUT_CUTREE = 48
# AVColorTransferCharacteristic of HDR video: SMPTE ST 2084 (PQ, HDR10) and ARIB STD-B67 (HLG).
_HDR_TRANSFERS = (16, 18)
# AVFieldOrder values of interlaced streams (TT, BB, TB, BT); 0 is unknown, 1 progressive.
_INTERLACED_FIELD_ORDERS = (2, 3, 4, 5)
# Global tags each muxer writes for itself: the source's would misdescribe the output.
_MUXER_TAGS = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands"})
# The video stream's own tags that describe the pictures' content rather than their coding. A camera's start
# timecode is one: MOV/MP4 store it as a tmcd track, which their muxer writes again from this tag.
_VIDEO_TAGS = frozenset({"timecode", "language", "title"})
# Audio codec to re-encode to when the output container refuses the source's audio codec.
_AUDIO_FALLBACK = {".webm": "libopus", ".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".avi": "libmp3lame"}
_AUDIO_FALLBACK |= {".ts": "aac", ".mts": "aac", ".m2ts": "ac3", ".mpg": "mp2", ".mpeg": "mp2"}
# Text subtitle format to convert to when the output container refuses the source's (SRT/ASS into MP4, MP4's
# mov_text into Matroska or WebM). Bitmap subtitles (DVD, PGS) have no text to convert.
_SUBTITLE_FALLBACK = {".mp4": "mov_text", ".m4v": "mov_text", ".mov": "mov_text", ".mkv": "ass", ".webm": "webvtt"}


class VideoWarning(UserWarning):
    """Something was lost or changed on the way (frames that did not decode, a dropped stream, padding)."""


class OutputError(ElanVideoError):
    """The destination cannot be written (missing folder, same as the input, exists without overwrite)."""


WarnCallback = Callable[[str], None]


def _default_warn(message: str) -> None:
    warnings.warn(message, VideoWarning, stacklevel=3)


def _fraction(value: object) -> Fraction | None:
    """AVRational/Fraction/None -> Fraction or None (PyAV's rationals are not ``Fraction``)."""
    if value is None or not value.denominator:  # type: ignore[attr-defined]
        return None  # FFmpeg's 0/0 means unknown
    frac = Fraction(value.numerator, value.denominator)  # type: ignore[attr-defined]
    return frac if frac > 0 else None


def _sample_aspect_ratio(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's sample (pixel) aspect ratio as FFmpeg guesses it from container and bitstream; None when
    unknown or square."""
    sar = stream.sample_aspect_ratio
    if sar is None or not sar.numerator or not sar.denominator:
        return None
    frac = Fraction(sar.numerator, sar.denominator)
    return None if frac == 1 else frac


def _display_matrix(stream: av.video.stream.VideoStream) -> tuple[int, ...] | None:
    """The stream's display matrix (FFmpeg's nine-integer layout), or None when it has none or it is the identity."""
    data = stream.codec_context.coded_side_data.get("display_matrix")
    if data is None or len(data) != 36:
        return None
    matrix = struct.unpack("=9i", data)
    return None if matrix == _IDENTITY_MATRIX else matrix


# -- colour ------------------------------------------------------------------------------------------------


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
        if matrix in (_SPC_UNSPECIFIED, 3) or matrix not in (*_SWS_MATRIX, _SPC_RGB):
            matrix = _SPC_BT709 if height >= 720 else _SPC_SMPTE170M
        if range_ not in (_RANGE_LIMITED, _RANGE_FULL):
            range_ = _RANGE_FULL if pix_fmt.startswith("yuvj") else _RANGE_LIMITED
        return cls(matrix=matrix, range=range_, primaries=primaries, trc=trc)

    @property
    def sws_matrix(self) -> int:
        """The matrix as swscale's SWS_CS_* number (what ``VideoFrame.reformat`` takes)."""
        return _SWS_MATRIX.get(self.matrix, 5)

    @property
    def full_range(self) -> bool:
        return self.range == _RANGE_FULL


# -- probing -----------------------------------------------------------------------------------------------


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


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"{path}: not a video or image FFmpeg can read ({reason})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from None


def _has_alpha(fmt: av.VideoFormat | None) -> bool:
    return fmt is not None and any(c.is_alpha for c in fmt.components)


def _alpha_decoder_name(stream: av.video.stream.VideoStream) -> str | None:
    """libvpx's decoder for VP8/VP9 with alpha (WebM's alpha_mode): FFmpeg's own decoders ignore the alpha
    picture that travels beside each frame."""
    if stream.metadata.get("alpha_mode") != "1":
        return None
    return {"vp9": "libvpx-vp9", "vp8": "libvpx"}.get(stream.codec_context.name)


def _alpha_decoder(stream: av.video.stream.VideoStream) -> av.VideoCodecContext | None:
    name = _alpha_decoder_name(stream)
    if name is None:
        return None
    decoder = av.CodecContext.create(name, "r")
    decoder.thread_type = "AUTO"
    return decoder


def alpha_plane(frame: av.VideoFrame, *, deep: bool, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The frame's alpha as H x W uint8 (uint16 over 0..65535 when ``deep``), scaled to ``width`` x ``height``
    where given, through planar GBRA: swscale's packed RGBA output from YUVA loses the alpha of the last columns
    at some widths (seen at 20 pixels)."""
    planar = frame.reformat(format="gbrap16le" if deep else "gbrap", width=width, height=height)
    dtype = np.dtype("<u2") if deep else np.dtype(np.uint8)
    plane = planar.planes[3]
    rows = np.frombuffer(plane, dtype=dtype).reshape(planar.height, plane.line_size // dtype.itemsize)
    return rows[:, : planar.width].astype(dtype.newbyteorder("="), copy=True)


def _format_facts(pix_fmt: str) -> tuple[int, str]:
    """(bits per component, chroma layout) of a pixel format name."""
    fmt = av.VideoFormat(pix_fmt)
    bits = max((c.bits for c in fmt.components), default=8)
    if fmt.is_rgb or pix_fmt.startswith(("gbr", "rgb", "bgr", "pal", "gray")):
        return bits, "rgb"
    cw, ch = fmt.chroma_width(64), fmt.chroma_height(64)
    return bits, {(32, 32): "420", (32, 64): "422", (64, 32): "440"}.get((cw, ch), "444")


_MILLISECOND = Fraction(1, 1000)
_CUE_UNTIL_NEXT = 2**31  # ms; longer "durations" are FFmpeg's marker for an open-ended cue


def _is_text_subtitle(stream: av.stream.Stream) -> bool:
    """Whether a subtitle stream's codec carries text (SRT, ASS, WebVTT, mov_text), not bitmaps (DVD, PGS)."""
    codec = stream.codec_context.codec if stream.codec_context is not None else None
    return codec is not None and bool(codec.text_sub)


def _is_cover(stream: av.stream.Stream) -> bool:
    """Whether the stream is an attached picture (cover art): a video stream of one untimed packet."""
    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def _main_video(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first video stream that is a moving picture: cover art (an attached picture) is not the video."""
    videos = list(container.streams.video)
    moving = [s for s in videos if not _is_cover(s)]
    if not moving:
        only = " (only a cover picture)" if videos else ""
        raise InputError(f"{path}: has no video stream{only}")
    return moving[0]


def _video_info(container: av.container.InputContainer, path: Path) -> VideoInfo:
    stream = _main_video(container, path)
    cc = stream.codec_context
    if not cc.width or not cc.height or cc.format is None:
        raise InputError(f"{path}: video stream has no decodable picture size or pixel format")
    pix_fmt = cc.format.name
    bits, chroma = _format_facts(pix_fmt)
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
        sample_aspect_ratio=_sample_aspect_ratio(stream),
        display_matrix=_display_matrix(stream),
        stream_index=stream.index,
        interlaced=int(cc.field_order) in _INTERLACED_FIELD_ORDERS,
        alpha=_alpha_decoder_name(stream) is not None or (_has_alpha(cc.format) and _transparent(path, stream.index)),
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
    deep = _format_facts(frame.format.name)[0] > 8
    alpha = alpha_plane(frame, deep=deep)
    return None if (alpha == (65535 if deep else 255)).all() else alpha


def check_outscale(outscale: float | None) -> None:
    """Validate a final-size factor (None, or above 0 and at most 8); raises OptionError."""
    if outscale is not None and not 0 < outscale <= 8:
        raise OptionError(f"outscale must be above 0 and at most 8, got {outscale}")


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
    with _open_input(p) as container:
        return _video_info(container, p)


# -- reading -----------------------------------------------------------------------------------------------


@dataclass
class DecodedFrame:
    """One decoded picture: ``image`` H x W x 3 RGB (uint8, or uint16 over 0..65535 for > 8-bit sources),
    ``pts`` in ``time_base`` units (synthesised from the frame rate when the source has no timing), ``index``
    counts from 0 in decoding output order; ``alpha`` H x W of the image's dtype when the reader was asked for
    it and the source has one, else None."""

    index: int
    pts: int
    time_base: Fraction
    image: np.ndarray
    alpha: np.ndarray | None = None

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)


class VideoReader:
    """Decode a file's video stream (the first that is not cover art) to RGB arrays with FFmpeg's frame/slice
    threads (``thread_type AUTO``).

    ``items()`` yields :class:`DecodedFrame` for the video and raw ``av.Packet`` for the streams named in
    ``passthrough`` (indices), in demux order, so one consumer can re-mux them. ``start``/``end`` (seconds)
    restrict the output to a time range of the source: the reader seeks to the keyframe before ``start``.
    ``deinterlace`` runs FFmpeg's bwdif on the frames flagged interlaced (one frame out per frame in, same
    timestamps); None does so when the stream says it is interlaced. ``alpha`` adds each frame's alpha channel
    to its :class:`DecodedFrame` where the source has one. Damaged data is skipped, not fatal:
    ``decode_errors`` counts packets the decoder refused. Use as a context manager.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        start: float | None = None,
        end: float | None = None,
        deinterlace: bool | None = False,
        alpha: bool = False,
        warn: WarnCallback | None = None,
    ) -> None:
        if start is not None and start < 0:
            raise OptionError(f"start must be >= 0 seconds, got {start}")
        if end is not None and start is not None and end <= start:
            raise OptionError(f"end must be after start, got start={start}, end={end}")
        self.path = check_source(path)
        self.start, self.end = start, end
        self._warn = warn or _default_warn
        self.container = _open_input(self.path)
        try:
            self.info = _video_info(self.container, self.path)
        except BaseException:
            self.container.close()
            raise
        self.stream = self.container.streams[self.info.stream_index]
        self.stream.thread_type = "AUTO"
        alpha_decoder = _alpha_decoder(self.stream)
        self._decoder = alpha_decoder if alpha_decoder is not None else self.stream.codec_context
        self.decode_errors = 0
        self.frames_decoded = 0
        self._span: tuple[int, int] | None = None  # first and last timestamp decoded
        self.retimed = 0
        self._rgb_format = "rgb24" if self.info.bit_depth <= 8 else "rgb48le"
        self._size_changed = False
        self.deinterlacing = self.info.interlaced if deinterlace is None else deinterlace
        self.with_alpha = alpha  # settable until items() starts
        self._deinterlacer = _Deinterlacer() if self.deinterlacing else None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    @property
    def dtype(self) -> type[np.generic]:
        return np.uint8 if self._rgb_format == "rgb24" else np.uint16

    def _frame_step(self) -> int:
        rate = self.info.rate or Fraction(25)
        return max(1, round(1 / (rate * self.info.time_base)))

    def to_array(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded frame -> H x W x 3 RGB array at the first frame's size, converted with the source's tags."""
        info = self.info
        kwargs: dict[str, object] = {"format": self._rgb_format}
        if info.chroma != "rgb":
            kwargs |= {"src_colorspace": info.colour.sws_matrix, "src_color_range": info.colour.range}
        if (frame.width, frame.height) != (info.width, info.height):
            # A mid-stream size change would break the encoder; scale back to the size the output was set up for.
            kwargs |= {"width": info.width, "height": info.height}
            if not self._size_changed:
                self._size_changed = True
                self._warn(
                    f"{self.path}: picture size changes mid-stream to {frame.width}x{frame.height}; "
                    f"scaled to {info.width}x{info.height}"
                )
        return frame.to_ndarray(**kwargs)

    def frames_expected(self) -> int | None:
        """The header's frame count, capped by the stream's duration over the spacing of the frames decoded so
        far: an AVI written on a finer clock than its frames counts clock ticks (240 "frames" for 10 pictures
        on a 1/600 s clock), which would otherwise read as frames lost."""
        frames, duration = self.info.frames, self.info.duration
        if frames is None or duration is None or self._span is None or self.frames_decoded < 2:
            return frames
        step = (self._span[1] - self._span[0]) * self.info.time_base / (self.frames_decoded - 1)
        return min(frames, round(duration / float(step))) if step > 0 else frames

    def _seek_lands_before(self, start: float) -> bool:
        """Whether seeking to the keyframe before ``start`` lands there, tried on a second opening of the file.
        An MPEG-TS has no index: FFmpeg searches it by timestamp and may land past the keyframe, after which
        nothing decodes until the next one (a GOP of frames lost), and a raw stream cannot seek at all. Those
        are decoded from the top instead and skipped up to ``start``."""
        with _open_input(self.path) as trial:
            stream = trial.streams[self.stream.index]
            try:
                trial.seek(int(start / self.info.time_base), stream=stream, backward=True, any_frame=False)
                for packet in trial.demux(stream):
                    for frame in packet.decode():
                        return frame.pts is not None and float(frame.pts * stream.time_base) <= start + 1e-9
            except av.error.FFmpegError:
                pass
        return False

    def items(self, passthrough: tuple[int, ...] = ()) -> Iterator[DecodedFrame | av.Packet]:
        """Decoded video frames and passthrough packets in demux order (see the class docstring)."""
        streams = [self.stream, *(s for s in self.container.streams if s.index in passthrough)]
        tb = self.info.time_base
        if self.start and self._seek_lands_before(self.start):
            self.container.seek(int(self.start / tb), stream=self.stream, backward=True, any_frame=False)
        step = self._frame_step()
        last_pts: int | None = None
        index = 0
        try:
            packets = self.container.demux(*streams)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.FFmpegError:
                    # A damaged container: what was demuxed so far is kept, the rest counts as lost.
                    self.decode_errors += 1
                    break
                if packet.stream.index != self.stream.index:
                    if _is_cover(packet.stream):
                        yield packet  # a cover picture has no time: it belongs to the whole file
                        continue
                    if packet.dts is None and packet.pts is None:
                        continue
                    t = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
                    if (self.start is None or t >= self.start) and (self.end is None or t < self.end):
                        yield packet
                    continue
                try:
                    frames = self._decoder.decode(packet)
                except av.error.FFmpegError:
                    self.decode_errors += 1
                    continue
                if self._deinterlacer is not None:
                    # The decoder's flush packet (size 0) ends the stream: bwdif then gives back its last frame.
                    frames = self._deinterlacer.filter(frames, final=packet.size == 0)
                for frame in frames:
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is None:
                        pts = 0 if last_pts is None else last_pts + step
                    elif frame.time_base is not None and Fraction(frame.time_base) != tb:
                        pts = round(pts * Fraction(frame.time_base) / tb)
                    if last_pts is not None and pts <= last_pts:
                        # Encoders and muxers need strictly increasing timestamps.
                        pts = last_pts + 1
                        self.retimed += 1
                    t = float(pts * tb)
                    if self.start is not None and t < self.start - 1e-9:
                        continue
                    if self.end is not None and t >= self.end - 1e-9:
                        return
                    last_pts = pts
                    self.frames_decoded += 1
                    self._span = (pts, pts) if self._span is None else (self._span[0], pts)
                    alpha = None
                    if self.with_alpha and self.info.alpha:
                        # At the size to_array gives the picture, should it change mid-stream.
                        size = {"width": self.info.width, "height": self.info.height}
                        alpha = alpha_plane(frame, deep=self.info.bit_depth > 8, **size)
                    yield DecodedFrame(index=index, pts=pts, time_base=tb, image=self.to_array(frame), alpha=alpha)
                    index += 1
        except av.error.FFmpegError:
            self.decode_errors += 1


class _Deinterlacer:
    """FFmpeg's bwdif filter over decoded frames: ``send_frame`` mode (one output frame per input frame, the
    input's timestamps), touching only frames flagged interlaced. The graph is rebuilt when the frame size or
    format changes mid-stream."""

    def __init__(self) -> None:
        self._graph: av.filter.Graph | None = None
        self._key: tuple[object, ...] | None = None

    def filter(self, frames: list[av.VideoFrame], *, final: bool = False) -> list[av.VideoFrame]:
        out: list[av.VideoFrame] = []
        for frame in frames:
            key = (frame.width, frame.height, frame.format.name, frame.time_base)
            if key != self._key:
                out += self._flush()
                self._graph, self._key = self._build(frame), key
            assert self._graph is not None
            self._graph.vpush(frame)
            out += self._drain()
        if final:
            out += self._flush()
        return out

    @staticmethod
    def _build(frame: av.VideoFrame) -> av.filter.Graph:
        import av.filter

        graph = av.filter.Graph()
        source = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base
        )
        bwdif = graph.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
        sink = graph.add("buffersink")
        source.link_to(bwdif)
        bwdif.link_to(sink)
        graph.configure()
        return graph

    def _drain(self) -> list[av.VideoFrame]:
        out: list[av.VideoFrame] = []
        while self._graph is not None:
            try:
                out.append(self._graph.vpull())
            except (av.error.BlockingIOError, av.error.EOFError):
                break
        return out

    def _flush(self) -> list[av.VideoFrame]:
        if self._graph is None:
            return []
        self._graph.vpush(None)
        out = self._drain()
        self._graph, self._key = None, None
        return out


def read_frames(path: str | Path, *, start: float | None = None, end: float | None = None) -> Iterator[DecodedFrame]:
    """Decode ``path``'s video to :class:`DecodedFrame` (RGB uint8/uint16 H x W x 3 with source timestamps)."""
    with VideoReader(path, start=start, end=end) as reader:
        for item in reader.items():
            if isinstance(item, DecodedFrame):
                yield item


# -- writing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderPlan:
    """How the output video is encoded: codec, pixel format, frame size (padded to even for 4:2:0 encoders
    that need it), constant-quality value, preset, encoder options, colour tags, time base, and the source's
    sample aspect ratio and display matrix (its translation scaled with the picture) to record."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    pad: tuple[int, int]  # (right, bottom) pixels added by repeating the edge
    crf: int | None
    preset: str | None
    options: dict[str, str]
    muxer_options: dict[str, str]
    colour: ColourTags
    time_base: Fraction
    rate: Fraction | None
    rgb_format: str  # "rgb24"/"rgb48le", or "rgba"/"rgba64le" with alpha: what the frames handed to the writer are
    sample_aspect_ratio: Fraction | None = None
    display_matrix: tuple[int, ...] | None = None
    # A grey source: frames are written with their luma in R, G and B, so that the few levels by which the
    # network's channels disagree on grey input give no colour tint.
    grey: bool = False


def luma(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 (or more: the first three are RGB) uint8/uint16 -> H x W of the same dtype: the ITU-R 601 luma
    Pillow's convert("L") gives."""
    weighted = rgb[..., :3].astype(np.int64) * np.array([299, 587, 114])
    return ((weighted.sum(axis=-1) + 500) // 1000).astype(rgb.dtype)


def _is_grey(pix_fmt: str) -> bool:
    return pix_fmt.startswith(("gray", "ya", "mono"))


@functools.cache
def _container_caps(suffix: str) -> tuple[str, frozenset[str]]:
    """(muxer name, codec names it declares) for a file suffix, asked of FFmpeg without touching the destination."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = av.open(str(Path(tmp) / f"probe{suffix}"), mode="w")
        except (ValueError, av.error.FFmpegError):
            raise OptionError(f"cannot tell the output container format from the extension {suffix!r}") from None
        try:
            return out.format.name, frozenset(out.supported_codecs)
        finally:
            out.close()


def _video_encoders(names: frozenset[str]) -> list[str]:
    """The software video encoders among codec ``names`` (hardware ones need a device this may not have)."""
    found = []
    for name in sorted(names):
        with contextlib.suppress(ValueError, av.error.FFmpegError):
            codec = av.Codec(name, "w")
            hardware = any(tag in name for tag in ("_nvenc", "_qsv", "_vaapi", "_v4l2m2m", "_amf", "_mf", "_cuvid"))
            if codec.type == "video" and not hardware and codec.name == name:
                found.append(name)
    return found


def _muxer_takes(suffix: str, declared: frozenset[str], codec: av.Codec) -> bool:
    """Whether a file with this ``suffix``, whose muxer declares the codec names ``declared``, can store
    ``codec``'s streams."""
    return codec.name in declared or codec.canonical_name in _UNDECLARED_CODECS.get(suffix, ())


def _label_like(out: av.stream.Stream, source: av.stream.Stream) -> None:
    """Give an output stream its source's tags (language, title) and disposition (default, forced, commentary,
    ...), by which players choose among several audio or subtitle tracks."""
    out.metadata.update(dict(source.metadata))
    out.disposition = source.disposition


def _header_takes(format_name: str, stream: av.stream.Stream) -> bool:
    """Whether FFmpeg's ``format_name`` muxer writes its header for a copy of ``stream``: some refuse there codecs
    they declare (FLAC and Opus in MOV)."""
    trial = av.open(io.BytesIO(), "w", format=format_name)
    try:
        trial.add_stream_from_template(stream)
        trial.start_encoding()
        return True
    except (av.error.FFmpegError, ValueError):
        return False
    finally:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            trial.close()


# FFmpeg's default layouts for channel counts whose order a file left unnamed ("2 channels").
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 4: "quad", 6: "5.1", 8: "7.1"}


def _name_unnamed_layout(audio: av.AudioCodecContext) -> None:
    """Give copied audio whose channel order is unnamed the usual one for its channel count: MP4 refuses to
    finish a file with unnamed PCM channels ("unsupported channel layout 2 channels"), and players assume it."""
    if audio.layout.name == f"{audio.channels} channels" and audio.channels in _DEFAULT_LAYOUTS:
        audio.layout = _DEFAULT_LAYOUTS[audio.channels]


def _pick_pix_fmt(codec: av.Codec, info: VideoInfo, depth: int) -> str:
    chroma = "444" if info.chroma == "rgb" else info.chroma
    if _is_grey(info.pix_fmt):
        # Grey has no colour to keep, and 4:4:4 H.264 (High 4:4:4) is what many players and browsers refuse.
        chroma = "420"
    suffix = "" if depth <= 8 else "10le"
    wanted = [f"yuv{chroma}p{suffix}", f"yuv420p{suffix}", f"yuv{chroma}p", "yuv420p"]
    supported = [f.name for f in (codec.video_formats or [])]
    if not supported:  # rawvideo and friends take anything
        return wanted[0]
    for name in wanted:
        if name in supported:
            return name
    return supported[0]


def _pick_alpha_pix_fmt(codec: av.Codec, info: VideoInfo) -> str | None:
    """A pixel format with alpha that ``codec`` takes, close to the source's layout and depth; None where it has
    none (x264, SVT-AV1) or only one that players do not read (x265's alpha layer)."""
    if codec.name == "libx265":
        return None
    if codec.name.startswith("libvpx"):  # libvpx codes alpha as a second 4:2:0 picture only
        return "yuva420p"
    chroma = "444" if info.chroma == "rgb" else info.chroma
    rgb = ["gbrap", "rgba", "bgra", "argb"]
    yuv = [f"yuva{chroma}p", "yuva420p", "yuva444p", "yuva444p10le"]  # the last: ProRes 4444's only one
    if info.bit_depth > 8:
        rgb = ["gbrap10le", "gbrap16le", "rgba64be", "rgba64le", *rgb]
        yuv = [f"yuva{chroma}p10le", "yuva444p10le", "yuva420p10le", *yuv]
    supported = {f.name for f in (codec.video_formats or [])}
    for name in (rgb + yuv) if info.chroma == "rgb" else (yuv + rgb):
        if name in supported:
            return name
    return None


def _lossless_substitute(pix_fmt: str, supported: list[str]) -> str | None:
    """A format the encoder takes that holds exactly the same RGB samples (FFV1 stores 8-bit RGB as bgr0, not
    gbrp), or None. Only RGB layouts are interchangeable without loss; YUV ones differ in subsampling."""
    wanted = av.VideoFormat(pix_fmt)
    bits, chroma = _format_facts(pix_fmt)
    if chroma != "rgb" or len(wanted.components) != 3:
        return None
    for name in supported:
        fmt = av.VideoFormat(name)
        if _format_facts(name) == (bits, "rgb") and len(fmt.components) == 3 and not fmt.has_palette:
            return name
    return None


def plan_encoder(
    dst: str | Path,
    info: VideoInfo,
    *,
    scale: int,
    codec: str | None = None,
    pix_fmt: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    outscale: float | None = None,
) -> EncoderPlan:
    """Choose and validate the encoder settings for writing ``info``'s video upscaled by ``scale`` to ``dst``.

    ``outscale``: the output is that many times the source's size instead (the writer resizes the network's
    ``scale`` times larger frames with Lanczos), rounded to even sizes for encoders that need them.

    Defaults per container: .mp4/.mov/.mkv H.264 (HEVC for > 8-bit sources; ProRes for a ProRes source in .mov
    and .mkv), .webm VP9, .y4m raw; the pixel format keeps the source's chroma layout, bit depth and alpha where
    the codec allows. Raises OptionError.
    """
    dst = Path(dst)
    suffix = dst.suffix.lower()
    deep = info.bit_depth > 8
    muxer, declared = _container_caps(suffix)
    if codec is None and info.codec == "prores" and suffix in (".mov", ".mkv"):
        # A ProRes master stays ProRes: it is an editor's intermediate, and ProRes 4444 keeps its alpha.
        codec = "prores_ks"
    if codec is None:
        codec = _DEFAULT_CODECS[suffix][deep] if suffix in _DEFAULT_CODECS else "libx264"
    try:
        enc = av.Codec(codec, "w")
    except (ValueError, av.error.FFmpegError):
        raise OptionError(f"codec {codec!r} is not an encoder this FFmpeg build has") from None
    if enc.type != "video":
        raise OptionError(f"codec {codec!r} is a {enc.type} encoder, not a video encoder")
    if not _muxer_takes(suffix, declared, enc):
        takes = ", ".join(_video_encoders(declared)) or "none of this FFmpeg's video encoders"
        raise OptionError(f"codec {enc.name} cannot be stored in a {suffix or muxer} file ({muxer}); it takes {takes}")
    if pix_fmt is None:
        pix_fmt = (info.alpha and _pick_alpha_pix_fmt(enc, info)) or _pick_pix_fmt(enc, info, info.bit_depth)
    else:
        try:
            av.VideoFormat(pix_fmt)
        except (ValueError, av.error.FFmpegError):
            raise OptionError(f"pix_fmt {pix_fmt!r} is not a pixel format FFmpeg knows") from None
        supported = [f.name for f in (enc.video_formats or [])]
        if supported and pix_fmt not in supported:
            substitute = _lossless_substitute(pix_fmt, supported)
            if substitute is None:
                raise OptionError(f"codec {codec} does not take pix_fmt {pix_fmt}; it takes {', '.join(supported)}")
            pix_fmt = substitute
    if crf is not None and not 0 <= crf <= 63:
        raise OptionError(f"crf must be between 0 and 63, got {crf}")
    if crf is not None and enc.name not in _DEFAULT_CRF:
        raise OptionError(f"crf applies to {', '.join(_DEFAULT_CRF)}, not to {enc.name}")
    crf = crf if crf is not None else _DEFAULT_CRF.get(enc.name)
    options: dict[str, str] = {}
    if crf is not None and enc.name in _DEFAULT_CRF:
        options["crf"] = str(crf)
        if enc.name in ("libvpx-vp9", "libvpx", "libaom-av1"):
            options["b"] = "0"  # constant quality rather than quality capped by the 200 kb/s default bit rate
    if enc.name in ("libvpx-vp9", "libvpx"):
        options |= {"row-mt": "1", "deadline": "good", "cpu-used": "4"}
    if enc.name in _QSCALE_CODECS:
        # Their default is a 200 kb/s bit rate: 27.6 dB for MPEG-4 Part 2 on a 352x288 clip, 37.4 dB at
        # quantiser 2, like the CRF defaults above (x264 at CRF 18: 36.3 dB).
        options |= {"flags": "+qscale", "global_quality": str(2 * _QP2LAMBDA)}
    if preset is not None:
        if enc.name not in _PRESET_CODECS:
            raise OptionError(f"preset applies to {', '.join(_PRESET_CODECS)}, not to {enc.name}")
        options["preset"] = preset
    out_fmt = av.VideoFormat(pix_fmt)
    even = (
        enc.name in _EVEN_ONLY
        and not out_fmt.is_rgb
        and (out_fmt.chroma_width(64) < 64 or out_fmt.chroma_height(64) < 64)
    )
    pad = (0, 0)
    check_outscale(outscale)
    if outscale is not None:
        step = 2 if even else 1  # resized anyway, so the size can be even without padding
        width, height = (max(step, step * round(n * outscale / step)) for n in (info.width, info.height))
    else:
        width, height = info.width * scale, info.height * scale
        if even:
            pad = (width % 2, height % 2)
    keeps_alpha = info.alpha and _has_alpha(out_fmt)
    if enc.name == "libx265":
        params = ["log-level=error", *_x265_hdr_params(info)]
        if width + pad[0] <= _X265_MAX_WIDTH_WITHOUT_CUTREE:
            params.append("cutree=0")  # a narrow picture: see _X265_MAX_WIDTH_WITHOUT_CUTREE
        options["x265-params"] = ":".join(params)
    return EncoderPlan(
        codec=enc.name,
        pix_fmt=pix_fmt,
        width=width + pad[0],
        height=height + pad[1],
        pad=pad,
        crf=crf if "crf" in options else None,
        preset=preset,
        options=options,
        # Y4M's > 8-bit layouts are an FFmpeg extension of the format, written only when asked to.
        muxer_options={"strict": "unofficial"} if muxer == "yuv4mpegpipe" else {},
        # JPEG's YUV is full range; FFmpeg's MJPEG encoder refuses limited range ("Invalid argument").
        colour=replace(info.colour, range=_RANGE_FULL) if enc.name == "mjpeg" else info.colour,
        time_base=info.time_base,
        rate=info.rate,
        rgb_format=("rgb24", "rgb48le", "rgba", "rgba64le")[(info.bit_depth > 8) + 2 * keeps_alpha],
        sample_aspect_ratio=info.sample_aspect_ratio,
        display_matrix=_scaled_matrix(info.display_matrix, outscale or scale),
        grey=_is_grey(info.pix_fmt),
    )


def _x265_hdr_params(info: VideoInfo) -> list[str]:
    """x265's master-display/max-cll parameters for the source's HDR static metadata (FFmpeg's libx265 wrapper
    takes them only from side data PyAV cannot set). Units: chromaticity in 1/50000, luminance in 1/10000 cd/m2."""
    params = []
    if info.mastering_display is not None and len(info.mastering_display) >= 88:
        # Ten AVRationals (R, G, B and white point as x, y; then min and max luminance), then two int flags.
        values = struct.unpack("=22i", info.mastering_display[:88])
        rationals = [Fraction(n, d) if d else Fraction(0) for n, d in zip(values[:20:2], values[1:20:2], strict=True)]
        (rx, ry, gx, gy, bx, by, wx, wy, lo, hi), (has_primaries, has_luminance) = rationals, values[20:22]
        if has_primaries and has_luminance:
            xy = [round(v * 50000) for v in (gx, gy, bx, by, rx, ry, wx, wy)]
            params.append(
                "master-display=G({},{})B({},{})R({},{})WP({},{})".format(*xy)
                + f"L({round(hi * 10000)},{round(lo * 10000)})"
            )
    if info.content_light is not None and len(info.content_light) >= 8:
        max_cll, max_fall = struct.unpack("=2I", info.content_light[:8])
        params.append(f"max-cll={max_cll},{max_fall}")
    return params


def _scaled_matrix(matrix: tuple[int, ...] | None, scale: float) -> tuple[int, ...] | None:
    """The display matrix of the picture ``scale`` times larger: rotation and mirroring as they were, the
    translation (entries 6 and 7, in pixels, which MP4's rotations use to move the picture back into view)
    scaled."""
    if matrix is None:
        return None
    m = list(matrix)
    m[6], m[7] = round(m[6] * scale), round(m[7] * scale)
    return tuple(m)


class VideoWriter:
    """Encode RGB frames (with their source timestamps) and mux them together with copied or re-encoded streams.

    ``plan`` fixes the encoder; the source's other streams are attached with :meth:`add_streams_from` (copy when
    the container accepts the codec, else re-encode audio / drop the rest, with a :class:`VideoWarning`).
    Frames are H x W x 3 ``plan.rgb_format`` arrays at the unpadded size. Use as a context manager; the file
    is complete only after :meth:`close` returns without error.
    """

    def __init__(
        self,
        path: str | Path,
        plan: EncoderPlan,
        *,
        metadata: dict[str, str] | None = None,
        warn: WarnCallback | None = None,
    ) -> None:
        self.path = Path(path)
        self._warn = warn or _default_warn
        self.plan = plan
        try:
            self.container = av.open(str(self.path), mode="w", options=dict(plan.muxer_options))
        except (ValueError, av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.path}: cannot be created ({exc})") from None
        try:
            self._setup_video(metadata or {})
        except BaseException:
            self.container.close()
            raise
        self._copies: dict[int, av.stream.Stream] = {}
        self._reencodes: dict[int, tuple[av.stream.Stream, av.stream.Stream, object]] = {}
        self._subtitle_conversions: dict[int, tuple[av.stream.Stream, av.stream.Stream]] = {}
        self.copied: list[int] = []
        self.reencoded: list[int] = []
        self.dropped: list[int] = []
        self.frames_written = 0
        self._closed = False

    def _setup_video(self, metadata: dict[str, str]) -> None:
        plan = self.plan
        if plan.codec == "libsvtav1":
            # SVT-AV1 writes a 20-line banner and its warnings to stderr itself; this level (errors only) is read
            # from the environment when its first encoder starts. A value the user set is kept.
            os.environ.setdefault("SVT_LOG", "1")
        stream = self.container.add_stream(plan.codec, rate=plan.rate, options=dict(plan.options))
        cc = stream.codec_context
        cc.width, cc.height, cc.pix_fmt = plan.width, plan.height, plan.pix_fmt
        cc.time_base = plan.time_base
        if plan.codec in ("mpeg1video", "mpeg2video") and plan.rate:
            # MPEG-1/2 count time in frames of one of their standard rates; the frames' stamps are rebased to it.
            cc.time_base = 1 / plan.rate
        stream.time_base = plan.time_base
        if plan.rate:
            cc.framerate = plan.rate
        cc.colorspace = plan.colour.matrix if plan.colour.matrix != _SPC_RGB else _SPC_UNSPECIFIED
        cc.color_range = plan.colour.range
        cc.color_primaries = plan.colour.primaries
        cc.color_trc = plan.colour.trc
        if plan.sample_aspect_ratio is not None:
            cc.sample_aspect_ratio = plan.sample_aspect_ratio
        if plan.display_matrix is not None:
            stream.set_display_matrix(plan.display_matrix)
        for key in ("language", "title", "handler_name"):
            if key in metadata:
                stream.metadata[key] = metadata[key]
        self.video = stream
        self._out_is_rgb = av.VideoFormat(plan.pix_fmt).is_rgb

    def add_metadata_from(self, source: av.container.InputContainer) -> None:
        """Copy the source's global tags (title, creation time, location, ...; not the muxer's own) and chapters.

        Chapters keep their times, which match the output's because every frame keeps its source timestamp.
        """
        self.container.metadata.update(
            {key: value for key, value in source.metadata.items() if key.lower() not in _MUXER_TAGS}
        )
        chapters = source.chapters()
        if chapters:
            self.container.set_chapters(chapters)

    def add_streams_from(self, source: av.container.InputContainer, *, video_index: int) -> tuple[int, ...]:
        """Attach every non-video stream of ``source``; returns the indices whose packets :meth:`mux` expects."""
        suffix = self.path.suffix.lower()
        muxer, declared = self.container.format.name, frozenset(self.container.supported_codecs)
        video_tags = {k: v for k, v in source.streams[video_index].metadata.items() if k.lower() in _VIDEO_TAGS}
        self.video.metadata.update(video_tags)
        self.video.disposition = source.streams[video_index].disposition
        timecode_kept = any(k.lower() == "timecode" for k in video_tags)

        def takes(codec: av.Codec | None) -> bool:
            return codec is not None and _muxer_takes(suffix, declared, codec)

        for s in source.streams:
            # AVDISCARD_ALL from the demuxer marks a track that is not content: MP4's chapter text track, whose
            # chapters add_metadata_from copies.
            if s.index == video_index or int(s.discard) >= _AVDISCARD_ALL:
                continue
            codec = s.codec_context.codec if s.codec_context is not None else None
            cover = _is_cover(s)
            kind = "cover picture" if cover else s.type
            what = s.name if s.type == "attachment" else codec.canonical_name if codec else "unknown"
            label = f"{kind} stream #{s.index} ({what})"
            if (s.type in ("audio", "subtitle") or cover) and takes(codec) and _header_takes(muxer, s):
                out = self.container.add_stream_from_template(s)
                if s.type == "audio":
                    _name_unnamed_layout(out.codec_context)
                _label_like(out, s)
                if cover:
                    out.disposition |= av.stream.Disposition.attached_pic
                self._copies[s.index] = out
                self.copied.append(s.index)
            elif s.type == "audio" and suffix in _AUDIO_FALLBACK and takes(av.Codec(_AUDIO_FALLBACK[suffix], "w")):
                target = _AUDIO_FALLBACK[suffix]
                rate, rates = s.codec_context.sample_rate, av.Codec(target, "w").audio_rates
                if rates and rate not in rates:  # Opus and AC-3 take only a few rates: resample up to one
                    rate = min((r for r in rates if r >= rate), default=max(rates))
                out = self.container.add_stream(target, rate=rate)
                _label_like(out, s)
                resampler = av.AudioResampler(
                    format=av.Codec(target, "w").audio_formats[0].name, layout=s.codec_context.layout, rate=rate
                )
                self._reencodes[s.index] = (s, out, resampler)
                self.reencoded.append(s.index)
                self._warn(f"{label} cannot be copied into {suffix}; re-encoded to {target}")
            elif s.type == "subtitle" and _is_text_subtitle(s) and _SUBTITLE_FALLBACK.get(suffix) in declared:
                target = _SUBTITLE_FALLBACK[suffix]
                decoder = s.codec_context
                decoder.open(strict=False)  # a text decoder states its ASS header, which the encoder needs, once open
                out = self.container.add_stream(target)
                out.codec_context.time_base = _MILLISECOND
                out.codec_context.subtitle_header = decoder.subtitle_header
                _label_like(out, s)
                self._subtitle_conversions[s.index] = (s, out)
                self.reencoded.append(s.index)
                self._warn(f"{label} cannot be copied into {suffix}; converted to {target}")
            elif s.type == "attachment" and muxer == "matroska":
                # Fonts for ASS subtitles, mostly: without them the subtitles render in another typeface.
                self.container.add_attachment(s.name, s.mimetype, s.data)
                self.copied.append(s.index)
            elif s.type == "video" and not cover:
                self.dropped.append(s.index)
                self._warn(f"{label} left out: only the first video stream is upscaled")
            elif timecode_kept and s.type == "data" and any(k.lower() == "timecode" for k in s.metadata):
                self.dropped.append(s.index)  # the timecode track: the muxer writes it again from the video's tag
            else:
                self.dropped.append(s.index)
                self._warn(f"{label} cannot be stored in {suffix}; dropped")
        return tuple(self._copies) + tuple(self._reencodes) + tuple(self._subtitle_conversions)

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode one H x W x 3 (or x 4 with alpha) RGB frame (``plan.rgb_format``) presented at ``pts``
        (``plan.time_base`` units); a frame of another size than the plan's is resized with Lanczos (outscale)."""
        plan = self.plan
        if plan.grey:
            image = image.copy()
            image[..., :3] = luma(image)[..., None]
        if plan.pad != (0, 0):
            image = np.pad(image, ((0, plan.pad[1]), (0, plan.pad[0]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=plan.rgb_format)
        options: dict[str, object] = {"format": plan.pix_fmt}
        if not self._out_is_rgb:
            options |= {"dst_colorspace": plan.colour.sws_matrix, "dst_color_range": plan.colour.range}
        if (frame.width, frame.height) != (plan.width, plan.height):
            options |= {"width": plan.width, "height": plan.height, "interpolation": "LANCZOS"}
        frame = frame.reformat(**options)
        frame.pts = pts
        frame.time_base = plan.time_base
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.frames_written += 1

    def mux(self, packet: av.Packet) -> None:
        """Copy (or re-encode) a packet of a stream attached by :meth:`add_streams_from`."""
        index = packet.stream.index
        out = self._copies.get(index)
        if out is not None:
            if packet.dts is None and packet.pts is None and not _is_cover(packet.stream):
                return
            packet.stream = out
            self.container.mux(packet)
            return
        conversion = self._subtitle_conversions.get(index)
        if conversion is not None:
            self._convert_subtitle(packet, *conversion)
            return
        entry = self._reencodes.get(index)
        if entry is None:
            return
        src, out, resampler = entry
        try:
            frames = src.codec_context.decode(packet)
        except av.error.FFmpegError:
            return
        for frame in frames:
            frame.pts = None  # the encoder numbers samples itself; the resampler keeps them gapless
            for converted in resampler.resample(frame):  # type: ignore[attr-defined]
                self.container.mux(out.encode(converted))

    def _convert_subtitle(self, packet: av.Packet, src: av.stream.Stream, out: av.stream.Stream) -> None:
        """Decode one text subtitle packet and encode it in the output's text format, at the same times."""
        if packet.pts is None or not packet.size:
            return
        try:
            cues = src.codec_context.decode2(packet)
        except av.error.FFmpegError:
            return
        if not cues:
            return
        start = packet.pts * Fraction(packet.time_base) + Fraction(cues.start_display_time, 1000)
        encoded = out.codec_context.encode_subtitle(cues)
        encoded.pts = encoded.dts = round(start / _MILLISECOND)
        shown = cues.end_display_time - cues.start_display_time
        # A cue without a known end says so with FFmpeg's UINT32_MAX; it then lasts until the next one.
        encoded.duration = shown if 0 < shown < _CUE_UNTIL_NEXT else 0
        encoded.time_base = _MILLISECOND
        encoded.stream = out
        self.container.mux(encoded)

    def close(self) -> None:
        """Flush the encoders and finish the file (idempotent); warn if the file lost the source's geometry."""
        if self._closed:
            return
        self._closed = True
        try:
            last = self.video.encode(None)
            if self.frames_written <= 2:
                # x265 takes its B-frame delay from the third picture, so for one or two its DTS are
                # uninitialised memory (muxers refused them or wrote them). Two pictures cannot be reordered.
                for packet in last:
                    packet.dts = packet.pts
            self.container.mux(last)
            for src, out, resampler in self._reencodes.values():
                for frame in src.codec_context.decode(None):
                    frame.pts = None
                    for converted in resampler.resample(frame):  # type: ignore[attr-defined]
                        self.container.mux(out.encode(converted))
                for converted in resampler.resample(None):  # type: ignore[attr-defined]
                    self.container.mux(out.encode(converted))
                self.container.mux(out.encode(None))
        finally:
            self.container.close()
        self._check_geometry()

    def _check_geometry(self) -> None:
        """Read the finished file back: whether a container/codec pair records the aspect ratio or the display
        matrix depends on both (and on the FFmpeg build), so ask the file rather than a table."""
        plan = self.plan
        if plan.sample_aspect_ratio is None and plan.display_matrix is None:
            return
        with contextlib.suppress(av.error.FFmpegError, OSError), av.open(str(self.path)) as written:
            stream = written.streams.video[0]
            where = f"{self.path.suffix or 'this container'} with {plan.codec}"
            sar = plan.sample_aspect_ratio
            if sar is not None and _sample_aspect_ratio(stream) != sar:
                self._warn(
                    f"{where} does not record the source's sample aspect ratio {sar.numerator}:{sar.denominator}; "
                    "players will show the output with square pixels"
                )
            if plan.display_matrix is not None and _display_matrix(stream) is None:
                self._warn(f"{where} does not record the source's display rotation; players will show it unrotated")

    def abort(self) -> None:
        """Close without flushing (the caller deletes the file)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(av.error.FFmpegError, OSError, ValueError):
                self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
