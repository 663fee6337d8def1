"""Reading: threaded decoding of a video stream to RGB arrays with its timestamps, time ranges,
deinterlacing and alpha, passing other streams' packets through in demux order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import numpy as np

from ...errors import OptionError, WarnCallback, default_warn
from .pixels import alpha_plane
from .probe import VideoInfo, alpha_decoder, check_source, is_cover, open_input, video_info

__all__ = ["DecodedFrame", "VideoReader", "read_frames"]

# Seconds of video past ``end`` within which every other stream's packets up to ``end`` are expected: muxers
# interleave in chunks of about a second at most.
_END_READ_ON = 10.0


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
    ``decode_errors`` counts packets the decoder refused. ``info``: the stream's :class:`VideoInfo` as probed
    already (not probed again); ``opener``: gives the file object to read instead of ``path`` (a Ray worker's
    bytes of the source). Use as a context manager.
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
        info: VideoInfo | None = None,
        opener: Callable[[], BinaryIO] | None = None,
    ) -> None:
        if start is not None and start < 0:
            raise OptionError(f"start must be >= 0 seconds, got {start}")
        if end is not None and start is not None and end <= start:
            raise OptionError(f"end must be after start, got start={start}, end={end}")
        self.path = check_source(path) if opener is None else Path(path)
        self.start, self.end = start, end
        self._warn = warn or default_warn
        self._opener = opener
        self.container = open_input(self.path, opener)
        try:
            self.info = info if info is not None else video_info(self.container, self.path)
        except BaseException:
            self.container.close()
            raise
        self.stream = self.container.streams[self.info.stream_index]
        self.stream.thread_type = "AUTO"
        separate = alpha_decoder(self.stream)
        self._decoder = separate if separate is not None else self.stream.codec_context
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
        with open_input(self.path, self._opener) as trial:
            stream = trial.streams[self.stream.index]
            try:
                trial.seek(round(start / self.info.time_base), stream=stream, backward=True, any_frame=False)
                for packet in trial.demux(stream):
                    for frame in packet.decode():
                        return frame.pts is not None and float(frame.pts * stream.time_base) <= start + 1e-9
            except av.error.FFmpegError:
                pass
        return False

    def seek_to_start(self) -> None:
        """Seek to the keyframe at or before ``start`` where that lands right (else decoding starts at the top)."""
        if self.start and self._seek_lands_before(self.start):
            # Rounded, not truncated: a start that is a keyframe's own time (a segment's) lands on that keyframe
            # rather than one tick before it, on the keyframe before.
            tb = self.info.time_base
            self.container.seek(round(self.start / tb), stream=self.stream, backward=True, any_frame=False)

    def items(self, passthrough: tuple[int, ...] = ()) -> Iterator[DecodedFrame | av.Packet]:
        """Decoded video frames and passthrough packets in demux order (see the class docstring)."""
        streams = [self.stream, *(s for s in self.container.streams if s.index in passthrough)]
        tb = self.info.time_base
        self.seek_to_start()
        step = self._frame_step()
        last_pts: int | None = None
        index = 0
        # With an ``end``, the other streams are read on past the video's last frame until each reaches it:
        # a file interleaved in chunks (an MP4's second of video, then its second of audio) stores their
        # packets for the range after the video's.
        behind = {s.index for s in streams[1:] if not is_cover(s)}
        video_done = False
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
                    if is_cover(packet.stream):
                        yield packet  # a cover picture has no time: it belongs to the whole file
                        continue
                    if packet.dts is None and packet.pts is None:
                        continue
                    t = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
                    if self.end is not None and t >= self.end:
                        behind.discard(packet.stream.index)
                        if video_done and not behind:
                            return
                    elif self.start is None or t >= self.start:
                        yield packet
                    continue
                if video_done:
                    if packet.dts is not None and float(packet.dts * packet.time_base) >= self.end + _END_READ_ON:
                        return  # a stream that has nothing more (a last subtitle) is not waited for to the end
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
                        video_done = True
                        if not behind:
                            return
                        break
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
