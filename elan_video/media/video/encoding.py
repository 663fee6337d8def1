"""Encoder planning: which codec, pixel format, frame size, quality and options an output file gets, from its
suffix, the source and the user's choices, validated before anything is written."""

from __future__ import annotations

import contextlib
import functools
import io
import struct
import tempfile
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.error

from ...errors import OptionError
from .pixels import RANGE_FULL, ColourTags, format_facts, has_alpha, is_grey
from .probe import VideoInfo

__all__ = ["VIDEO_SUFFIXES", "EncoderPlan", "check_outscale", "muxer_takes", "plan_encoder"]

# (codec for 8-bit sources, codec for deeper sources) by output suffix.
_DEFAULT_CODECS = {
    ".mp4": ("libx264", "libx265"),
    ".m4v": ("libx264", "libx265"),
    ".mov": ("libx264", "libx265"),
    ".mkv": ("libx264", "libx265"),
    ".avi": ("libx264", "libx264"),
    ".webm": ("libvpx-vp9", "libvpx-vp9"),
    ".ivf": ("libvpx-vp9", "libvpx-vp9"),
    ".ogv": ("libvpx", "libvpx"),  # Ogg takes Theora or VP8, and this FFmpeg has no Theora encoder
    ".y4m": ("wrapped_avframe", "wrapped_avframe"),
    ".264": ("libx264", "libx264"),
    ".h264": ("libx264", "libx264"),
    ".265": ("libx265", "libx265"),
    ".hevc": ("libx265", "libx265"),
    ".nut": ("ffv1", "ffv1"),
    ".ts": ("libx264", "libx265"),
    ".m2ts": ("libx264", "libx265"),
    ".mts": ("libx264", "libx265"),
    ".mxf": ("mpeg2video", "prores_ks"),  # broadcast MXF: MPEG-2 (8 bits only) or ProRes 4:2:2 10-bit
    # A program stream is what DVD tools and players expect MPEG-2 in (H.264 in one is rarely read right).
    ".mpg": ("mpeg2video", "mpeg2video"),
    ".mpeg": ("mpeg2video", "mpeg2video"),
    ".3gp": ("libx264", "libx264"),  # older phones' MP4 variant: H.264 and AAC there too
}
# The video files a folder job upscales: those whose suffix names a container the writer picks a codec for.
VIDEO_SUFFIXES = tuple(_DEFAULT_CODECS)
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
# Ogg likewise declares only its default codecs, but oggenc.c writes Opus, Vorbis, FLAC and Speex audio too.
_OGG_CODECS = frozenset({"theora", "vp8", "opus", "vorbis", "flac", "speex"})
# MXF likewise: mxfenc.c writes these essences too (H.264 only in some profiles, so it is not offered).
_MXF_CODECS = frozenset({"mpeg2video", "prores", "dnxhd", "ffv1", "jpeg2000", "dvvideo", "pcm_s16le", "pcm_s24le"})
_UNDECLARED_CODECS = {".ts": _TS_CODECS, ".mts": _TS_CODECS, ".m2ts": _M2TS_CODECS, ".ogv": _OGG_CODECS}
_UNDECLARED_CODECS |= {".mpg": _PS_CODECS, ".mpeg": _PS_CODECS, ".mxf": _MXF_CODECS}
# Constant-quality defaults: visually transparent for the codec's scale.
_DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libvpx": 10, "libsvtav1": 28, "libaom-av1": 28}
_PRESET_CODECS = ("libx264", "libx265", "libsvtav1")
# FFmpeg's own DCT encoders, which take a constant quantiser (global_quality in lambda units) for quality.
_QSCALE_CODECS = ("mpeg1video", "mpeg2video", "mpeg4", "msmpeg4", "msmpeg4v2", "h263", "h263p", "flv", "mjpeg")
_QP2LAMBDA = 118
# Encoders whose streams count time in whole frames of a rate their header names.
MPEG12_CODECS = ("mpeg1video", "mpeg2video")
# Encoders that refuse odd frame sizes with subsampled chroma; others (VP9, FFV1, raw) accept them.
_EVEN_ONLY = ("libx264", "libx265", "libsvtav1", "mpeg4", "prores_ks", "mjpeg", "h264_nvenc", "hevc_nvenc")
# At output widths up to this, the x265 4.3 in PyAV's wheel writes past its CU-tree buffers (valgrind: widths
# 24-48 at any height, 8 and 10 bits; 50 and up clean) and at 48 aborts the process ("corrupted size vs.
# prev_size", 2 runs in 3 of 30 frames); with cutree=0 valgrind reports nothing and 6 runs in 6 pass.
_X265_MAX_WIDTH_WITHOUT_CUTREE = 48


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
    # FFmpeg's muxer for the output file ("mp4", "matroska", ...): an encoder made for a segment of the video
    # is set up for it (global headers or in-band ones) although it writes no file of that kind itself.
    muxer: str | None = None

    @property
    def alpha(self) -> bool:
        """Whether the frames handed to the writer carry an alpha channel (``rgba``/``rgba64le``) it keeps."""
        return self.rgb_format.startswith("rgba")


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


@functools.cache
def _refuses_rate(codec: str, rate: Fraction) -> bool:
    """Whether FFmpeg's ``codec`` encoder refuses to open at ``rate`` frames per second."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = 16, 16, "yuv420p"
    ctx.time_base, ctx.framerate = 1 / rate, rate
    try:
        ctx.open()
    except av.error.FFmpegError:
        return True
    return False


@functools.cache
def _muxer_refuses_rate(muxer: str, rate: Fraction) -> bool:
    """Whether FFmpeg's ``muxer`` refuses to write a video stream of ``rate`` frames per second (MXF's edit
    rates are a fixed list)."""
    trial = av.open(io.BytesIO(), "w", format=muxer)
    try:
        stream = trial.add_stream("mpeg2video", rate=rate, options={"strict": "experimental"})
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        trial.start_encoding()
    except (av.error.FFmpegError, ValueError):
        return True
    finally:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            trial.close()
    return False


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


def muxer_takes(suffix: str, declared: frozenset[str], codec: av.Codec) -> bool:
    """Whether a file with this ``suffix``, whose muxer declares the codec names ``declared``, can store
    ``codec``'s streams."""
    return codec.name in declared or codec.canonical_name in _UNDECLARED_CODECS.get(suffix, ())


def _pick_pix_fmt(codec: av.Codec, info: VideoInfo, depth: int) -> str:
    chroma = "444" if info.chroma == "rgb" else info.chroma
    if is_grey(info.pix_fmt):
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
    bits, chroma = format_facts(pix_fmt)
    if chroma != "rgb" or len(wanted.components) != 3:
        return None
    for name in supported:
        fmt = av.VideoFormat(name)
        if format_facts(name) == (bits, "rgb") and len(fmt.components) == 3 and not fmt.has_palette:
            return name
    return None


def check_outscale(outscale: float | None) -> None:
    """Validate a final-size factor (None, or above 0 and at most 8); raises OptionError."""
    if outscale is not None and not 0 < outscale <= 8:
        raise OptionError(f"outscale must be above 0 and at most 8, got {outscale}")


def _quality_options(enc: av.Codec, *, crf: int | None, preset: str | None) -> tuple[dict[str, str], int | None]:
    """The encoder options that set quality and speed (CRF or quantiser, preset, libvpx's threading), and the
    CRF in effect (the codec's default where none is given; None for codecs without one). Raises OptionError."""
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
        # quantiser 2, like the _DEFAULT_CRF values (x264 at CRF 18: 36.3 dB).
        options |= {"flags": "+qscale", "global_quality": str(2 * _QP2LAMBDA)}
    if preset is not None:
        if enc.name not in _PRESET_CODECS:
            raise OptionError(f"preset applies to {', '.join(_PRESET_CODECS)}, not to {enc.name}")
        options["preset"] = preset
    return options, crf


def _output_size(
    info: VideoInfo, *, scale: int, outscale: float | None, even: bool
) -> tuple[int, int, tuple[int, int]]:
    """(width, height, (right, bottom) padding) of the encoded picture: ``scale`` times the source, padded by
    an edge pixel to even sizes where the encoder needs them, or ``outscale`` times it, rounded to even there."""
    check_outscale(outscale)
    if outscale is not None:
        step = 2 if even else 1  # resized anyway, so the size can be even without padding
        width, height = (max(step, step * round(n * outscale / step)) for n in (info.width, info.height))
        return width, height, (0, 0)
    width, height = info.width * scale, info.height * scale
    return width, height, (width % 2, height % 2) if even else (0, 0)


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
    and .mkv), .webm VP9, .ogv VP8, .mxf MPEG-2 (ProRes 4:2:2 10-bit for > 8-bit sources), .mpg MPEG-2, .y4m
    raw; the pixel format keeps the source's chroma layout, bit depth and alpha where the codec allows. Raises
    OptionError.
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
    if not muxer_takes(suffix, declared, enc):
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
    options, crf = _quality_options(enc, crf=crf, preset=preset)
    if enc.name in MPEG12_CODECS and info.rate and _refuses_rate(enc.name, info.rate):
        # MPEG-1/2 headers hold only a few standard rates; FFmpeg refuses others (a phone's 30.02 fps) unless
        # told to write the nearest one. The frames keep their own timestamps on the source's frame clock.
        options["strict"] = "experimental"
    muxer_options = {}
    # Y4M's > 8-bit layouts and MXF's edit rates off its list (a phone's 30.02 fps) are FFmpeg extensions of
    # those formats, written only when asked to.
    if muxer == "yuv4mpegpipe" or (muxer == "mxf" and info.rate and _muxer_refuses_rate(muxer, info.rate)):
        muxer_options["strict"] = "unofficial"
    out_fmt = av.VideoFormat(pix_fmt)
    even = (
        enc.name in _EVEN_ONLY
        and not out_fmt.is_rgb
        and (out_fmt.chroma_width(64) < 64 or out_fmt.chroma_height(64) < 64)
    )
    width, height, pad = _output_size(info, scale=scale, outscale=outscale, even=even)
    keeps_alpha = info.alpha and has_alpha(out_fmt)
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
        muxer_options=muxer_options,
        # JPEG's YUV is full range; FFmpeg's MJPEG encoder refuses limited range ("Invalid argument").
        colour=replace(info.colour, range=RANGE_FULL) if enc.name == "mjpeg" else info.colour,
        time_base=info.time_base,
        rate=info.rate,
        rgb_format=("rgb24", "rgb48le", "rgba", "rgba64le")[(info.bit_depth > 8) + 2 * keeps_alpha],
        sample_aspect_ratio=info.sample_aspect_ratio,
        display_matrix=_scaled_matrix(info.display_matrix, outscale or scale),
        grey=is_grey(info.pix_fmt),
        muxer=muxer,
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
