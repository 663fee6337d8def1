"""Writing: encode RGB frames at their source timestamps and mux them with the source's other streams, copied,
re-encoded or converted where the container refuses them."""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from ...errors import OutputError, WarnCallback, default_warn
from .encoding import MPEG12_CODECS, EncoderPlan, muxer_takes
from .pixels import SPC_RGB, SPC_UNSPECIFIED, luma
from .probe import is_cover, is_text_subtitle, stream_display_matrix, stream_sar

__all__ = ["VideoWriter"]

# FFmpeg's AVDISCARD_ALL: what a demuxer sets on a stream that is not content (see add_streams_from).
_AVDISCARD_ALL = 48
# Global tags each muxer writes for itself: the source's would misdescribe the output.
_MUXER_TAGS = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands"})
# The video stream's own tags that describe the pictures' content rather than their coding. A camera's start
# timecode is one: MOV/MP4 store it as a tmcd track, which their muxer writes again from this tag.
_VIDEO_TAGS = frozenset({"timecode", "language", "title"})
# The suffix whose rules a muxer writing to a pipe (standard output, no file name) follows.
_PIPE_SUFFIXES = {"yuv4mpegpipe": ".y4m"}
# Audio codec to re-encode to when the output container refuses the source's audio codec.
_AUDIO_FALLBACK = {".webm": "libopus", ".ogv": "libopus", ".mp4": "aac", ".m4v": "aac", ".mov": "aac"}
_AUDIO_FALLBACK |= {".avi": "libmp3lame", ".ts": "aac", ".mts": "aac", ".m2ts": "ac3", ".mpg": "mp2", ".mpeg": "mp2"}
_AUDIO_FALLBACK |= {".mxf": "pcm_s24le", ".3gp": "aac"}
# Sample rates a container takes, where it takes only some: MXF's muxer writes 48 kHz audio only.
_AUDIO_RATES = {".mxf": (48000,)}
# Text subtitle format to convert to when the output container refuses the source's (SRT/ASS into MP4, MP4's
# mov_text into Matroska or WebM). Bitmap subtitles (DVD, PGS) have no text to convert.
_SUBTITLE_FALLBACK = {".mp4": "mov_text", ".m4v": "mov_text", ".mov": "mov_text", ".mkv": "ass", ".webm": "webvtt"}

_MILLISECOND = Fraction(1, 1000)
_CUE_UNTIL_NEXT = 2**31  # ms; longer "durations" are FFmpeg's marker for an open-ended cue


def _label_like(out: av.stream.Stream, source: av.stream.Stream) -> None:
    """Give an output stream its source's tags (language, title) and disposition (default, forced, commentary,
    ...), by which players choose among several audio or subtitle tracks."""
    out.metadata.update(dict(source.metadata))
    out.disposition = source.disposition


@functools.cache
def _encoder_takes_layout(codec: str, layout: str, rate: int) -> bool:
    """Whether FFmpeg's audio encoder ``codec`` opens for ``layout`` channels at ``rate`` Hz."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.sample_rate, ctx.format = rate, av.Codec(codec, "w").audio_formats[0].name
    try:
        ctx.layout = layout
        ctx.open()
    except (av.error.FFmpegError, ValueError):
        return False
    return True


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


def _usual_layout(audio: av.AudioCodecContext) -> str:
    """The name of ``audio``'s channel layout, or where its channel order is unnamed ("2 channels") the usual one
    for its channel count, which players assume."""
    name = audio.layout.name
    return _DEFAULT_LAYOUTS.get(audio.channels, name) if name == f"{audio.channels} channels" else name


def _name_unnamed_layout(audio: av.AudioCodecContext) -> None:
    """Give copied audio whose channel order is unnamed the usual one for its channel count: MP4 refuses to
    finish a file with unnamed PCM channels ("unsupported channel layout 2 channels")."""
    usual = _usual_layout(audio)
    if usual != audio.layout.name:
        audio.layout = usual


class VideoWriter:
    """Encode RGB frames (with their source timestamps) and mux them together with copied or re-encoded streams.

    ``plan`` fixes the encoder; the source's other streams are attached with :meth:`add_streams_from` (copy when
    the container accepts the codec, else re-encode audio / drop the rest, with a :class:`VideoWarning`).
    Frames are H x W x 3 ``plan.rgb_format`` arrays at the unpadded size. Use as a context manager; the file
    is complete only after :meth:`close` returns without error.

    ``packets``: encode one segment of a longer job. No file is written: the encoded video packets (in the
    encoder's time base) go to this callable, from an encoder set up as one for ``plan.muxer`` would be (global
    headers where that muxer takes them), so that segments stitched by :meth:`write_encoded` into a file of
    that kind decode as one stream.
    """

    def __init__(
        self,
        path: str | Path,
        plan: EncoderPlan,
        *,
        metadata: dict[str, str] | None = None,
        warn: WarnCallback | None = None,
        packets: Callable[[av.Packet], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._warn = warn or default_warn
        self.plan = plan
        self._packets = packets
        try:
            if packets is None:
                # The plan's muxer by name: a pipe ("pipe:1", standard output) has no suffix to tell it by.
                options = dict(plan.muxer_options)
                self.container = av.open(str(self.path), mode="w", format=plan.muxer, options=options)
            else:
                # Never started, so never written: it only gives the encoder the muxer's flags.
                self.container = av.open(io.BytesIO(), mode="w", format=plan.muxer)
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
        self._video_end = Fraction(0)  # seconds: the last frame written's end
        self._next_sample: dict[int, int] = {}  # re-encoded audio, by output stream index: where the next frame goes
        self._closed = False
        # Y4M has no timestamps: frame i plays at i / rate, whatever the source said. MPEG-1/2 count time in whole
        # frames of the rate: a variable-rate source's frames that share one are moved to the next free one.
        self._sequential = bool(plan.rate) and plan.muxer == "yuv4mpegpipe"
        self._frame_ticks = bool(plan.rate) and plan.codec in MPEG12_CODECS
        self._first_time: Fraction | None = None
        self._last_tick: int | None = None
        self._off_time = 0  # frames shown more than half a frame away from their source time

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
        if plan.codec in MPEG12_CODECS and plan.rate:
            # MPEG-1/2 count time in whole frames: the frames' stamps are rebased to the source's frame clock.
            cc.time_base = 1 / plan.rate
        stream.time_base = plan.time_base
        if plan.rate and self.container.format.name in ("ogv", "yuv4mpegpipe"):
            # Ogg's VP8 header records the stream's time base as the frame rate, and its demuxer dates the first
            # frame one such tick before the second: with a finer time base the first frame comes back late. Y4M
            # has no timestamps at all: its header's rate (the time base, too) is all a player has.
            stream.time_base = 1 / plan.rate
        if plan.rate:
            cc.framerate = plan.rate
        cc.colorspace = plan.colour.matrix if plan.colour.matrix != SPC_RGB else SPC_UNSPECIFIED
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
        muxer, declared = self.container.format.name, frozenset(self.container.supported_codecs)
        suffix = self.path.suffix.lower() or _PIPE_SUFFIXES.get(muxer, "")
        video_tags = {k: v for k, v in source.streams[video_index].metadata.items() if k.lower() in _VIDEO_TAGS}
        self.video.metadata.update(video_tags)
        self.video.disposition = source.streams[video_index].disposition
        timecode_kept = any(k.lower() == "timecode" for k in video_tags)

        def takes(codec: av.Codec | None) -> bool:
            return codec is not None and muxer_takes(suffix, declared, codec)

        for s in source.streams:
            # AVDISCARD_ALL from the demuxer marks a track that is not content: MP4's chapter text track, whose
            # chapters add_metadata_from copies.
            if s.index == video_index or int(s.discard) >= _AVDISCARD_ALL:
                continue
            codec = s.codec_context.codec if s.codec_context is not None else None
            cover = is_cover(s)
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
                self._add_reencoded_audio(s, _AUDIO_FALLBACK[suffix], rates=_AUDIO_RATES.get(suffix))
                self._warn(f"{label} cannot be copied into {suffix}; re-encoded to {_AUDIO_FALLBACK[suffix]}")
            elif s.type == "subtitle" and is_text_subtitle(s) and _SUBTITLE_FALLBACK.get(suffix) in declared:
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

    def _add_reencoded_audio(self, s: av.stream.Stream, target: str, *, rates: tuple[int, ...] | None) -> None:
        """An output stream of ``target`` audio for the source's audio stream ``s``, which :meth:`mux` fills."""
        codec = av.Codec(target, "w")
        rate, rates = s.codec_context.sample_rate, rates or codec.audio_rates
        if rates and rate not in rates:  # Opus, AC-3 and MXF take only a few rates: resample up to one
            rate = min((r for r in rates if r >= rate), default=max(rates))
        # The source's channels (the usual order where it left theirs unnamed) where the encoder takes them (MP2
        # and MP3 take one or two), else stereo.
        layout = _usual_layout(s.codec_context)
        layout = layout if _encoder_takes_layout(target, layout, rate) else "stereo"
        out = self.container.add_stream(target, rate=rate, layout=layout)
        _label_like(out, s)
        resampler = av.AudioResampler(format=codec.audio_formats[0].name, layout=layout, rate=rate)
        self._reencodes[s.index] = (s, out, resampler)
        self.reencoded.append(s.index)

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
        frame.pts, frame.time_base = pts, plan.time_base
        if self._sequential or self._frame_ticks:
            frame.pts, frame.time_base = self._frame_tick(pts * plan.time_base), 1 / plan.rate
        self._send(self.video.encode(frame))
        self.frames_written += 1
        self._video_end = pts * plan.time_base + (1 / plan.rate if plan.rate else 0)

    def _frame_tick(self, time: Fraction) -> int:
        """The frame (in 1 / rate) at which a frame-clocked output shows the frame whose source time is ``time``
        (seconds): the next in order for Y4M (from its first frame), the nearest still free for MPEG-1/2 (whose
        timestamps keep the source's); counts those more than half a frame off their time."""
        assert self.plan.rate is not None
        if self._first_time is None:
            self._first_time = time if self._sequential else Fraction(0)
        wanted = (time - self._first_time) * self.plan.rate
        if self._sequential:
            tick = self.frames_written
        else:
            tick = round(wanted)
            if self._last_tick is not None and tick <= self._last_tick:
                tick = self._last_tick + 1
        self._last_tick = tick
        if abs(tick - wanted) > Fraction(1, 2):
            self._off_time += 1
        return tick

    def _send(self, packets: list[av.Packet]) -> None:
        if self._packets is None:
            self.container.mux(packets)
        else:
            for packet in packets:
                self._packets(packet)

    def write_encoded(self, packet: av.Packet, *, frame_end: Fraction | None = None) -> None:
        """Mux one already encoded video packet (from a :class:`VideoWriter` made with ``packets`` and this
        writer's plan; ``packet.time_base`` set) as one frame of the output. ``frame_end``: seconds, where the
        frames written so far end, for re-encoded audio that must reach it (MXF)."""
        packet.stream = self.video
        self.container.mux(packet)
        self.frames_written += 1
        if frame_end is not None:
            self._video_end = max(self._video_end, frame_end)

    def mux(self, packet: av.Packet) -> None:
        """Copy (or re-encode) a packet of a stream attached by :meth:`add_streams_from`."""
        index = packet.stream.index
        out = self._copies.get(index)
        if out is not None:
            if packet.dts is None and packet.pts is None and not is_cover(packet.stream):
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
            if out.index not in self._next_sample and frame.pts is not None:
                # Anchored at the source's time of its first sound (with --start, not at 0), gapless after it.
                start = max(Fraction(0), frame.pts * frame.time_base)
                self._next_sample[out.index] = round(start * out.codec_context.sample_rate)
            frame.pts = None
            self._encode_audio(out, resampler.resample(frame))  # type: ignore[attr-defined]

    def _encode_audio(self, out: av.stream.Stream, frames: list[av.AudioFrame]) -> None:
        """Encode and mux resampled ``frames`` of a re-encoded stream, numbering their samples on from its start."""
        for frame in frames:
            frame.pts = self._next_sample.get(out.index, 0)
            frame.time_base = Fraction(1, out.codec_context.sample_rate)
            self.container.mux(out.encode(frame))
            self._next_sample[out.index] = frame.pts + frame.samples

    def _silence_to_video_end(self, out: av.stream.Stream) -> list[av.AudioFrame]:
        """Silence from the end of ``out``'s audio to the end of the video: MXF's muxer writes only the frames
        whose edit unit its audio fills, so audio a few ms short of the video (AAC's last packet) costs the
        last frame."""
        missing = round(self._video_end * out.codec_context.sample_rate) - self._next_sample.get(out.index, 0)
        if missing <= 0:
            return []
        cc = out.codec_context
        silence = av.AudioFrame(format=cc.format.name, layout=cc.layout, samples=missing)
        for plane in silence.planes:
            plane.update(bytes(plane.buffer_size))
        silence.sample_rate = cc.sample_rate
        return [silence]

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
            self._send(last)
            for src, out, resampler in self._reencodes.values():
                for frame in src.codec_context.decode(None):
                    frame.pts = None
                    self._encode_audio(out, resampler.resample(frame))  # type: ignore[attr-defined]
                self._encode_audio(out, resampler.resample(None))  # type: ignore[attr-defined]
                if self.container.format.name == "mxf":
                    self._encode_audio(out, self._silence_to_video_end(out))
                self.container.mux(out.encode(None))
        finally:
            self.container.close()
        if self._off_time:
            rate = float(self.plan.rate or 0)
            how = (
                f"Y4M keeps no timestamps: {self._off_time} of {self.frames_written} frames of this variable-rate "
                f"video play off their time, all evenly at {rate:.3f} fps"
                if self._sequential
                else f"{self.plan.codec} counts time in whole frames of {rate:.3f} fps: {self._off_time} of "
                f"{self.frames_written} frames of this variable-rate video moved to the next free frame time"
            )
            self._warn(how)
        self._check_geometry()

    def _check_geometry(self) -> None:
        """Read the finished file back: whether a container/codec pair records the aspect ratio or the display
        matrix depends on both (and on the FFmpeg build), so ask the file rather than a table."""
        plan = self.plan
        if self._packets is not None or (plan.sample_aspect_ratio is None and plan.display_matrix is None):
            return
        if str(self.path).startswith("pipe:"):
            # Nothing to read back; Y4M's muxer takes both from the stream, which PyAV cannot set: never recorded.
            self._warn_geometry_lost("standard output's Y4M", sar=None, matrix=None)
            return
        with contextlib.suppress(av.error.FFmpegError, OSError), av.open(str(self.path)) as written:
            stream = written.streams.video[0]
            where = f"{self.path.suffix or 'this container'} with {plan.codec}"
            self._warn_geometry_lost(where, sar=stream_sar(stream), matrix=stream_display_matrix(stream))

    def _warn_geometry_lost(self, where: str, *, sar: Fraction | None, matrix: tuple[int, ...] | None) -> None:
        """Warn where the output's recorded aspect ratio (``sar``) or display matrix is not the source's."""
        want = self.plan.sample_aspect_ratio
        if want is not None and sar != want:
            self._warn(
                f"{where} does not record the source's sample aspect ratio {want.numerator}:{want.denominator}; "
                "players will show the output with square pixels"
            )
        if self.plan.display_matrix is not None and matrix is None:
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
