"""Stitching: segment files joined into the output without re-encoding, with the source's other streams copied once.

The output's video stream is set up exactly as the single-stream job sets it up (same encoder settings, so the same
global header: checked against every segment's), and the segments' packets are muxed into it in order. Each segment
was encoded on its own, so its first packets' decode timestamps were made up by its encoder from nothing before
them; across a cut they may not increase. The stitched stream's decode timestamps are therefore recomputed the way
the encoders compute them within a segment: packet i's dts is the (i - D)-th smallest presentation timestamp of the
whole stream, D the encoders' reorder delay (0 without B-frames). For a constant frame rate this reproduces the
encoder's own values; in every case it is strictly increasing and never after the packet's pts, because every
segment's frames come after all of the previous segment's.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from ..errors import OutputError, WarnCallback
from ..media.video.encoding import EncoderPlan
from ..media.video.probe import is_cover, main_video, open_input
from ..media.video.writer import VideoWriter
from .segment_file import SegmentFile

__all__ = ["StitchResult", "stitch"]

# Merge keys are (seconds, kind, count, packet): at equal times video goes first, and (kind, count) is unique so
# that packets are never compared.
_VIDEO, _OTHER = 0, 1


@dataclass(frozen=True)
class StitchResult:
    """Frames written, and the source's other streams copied, re-encoded and dropped (their indices)."""

    frames: int
    copied: tuple[int, ...]
    reencoded: tuple[int, ...]
    dropped: tuple[int, ...]


def stitch(
    segments: Sequence[SegmentFile],
    source: Path,
    destination: Path,
    plan: EncoderPlan,
    *,
    start: float | None,
    end: float | None,
    warn: WarnCallback | None = None,
) -> StitchResult:
    """Write ``destination``: the video packets of ``segments`` (in order, as encoded for ``plan``) and the
    non-video streams, chapters and tags of ``source`` in the time range ``start``-``end`` (seconds), handled as
    :class:`~elan_video.media.video.writer.VideoWriter` handles them for the single stream. Raises OutputError
    when a segment was encoded with other codec headers than ``plan`` gives here."""
    with open_input(source) as container:
        video = main_video(container, source)
        writer = VideoWriter(destination, plan, metadata=dict(video.metadata), warn=warn)
        try:
            writer.add_metadata_from(container)
            passthrough = writer.add_streams_from(container, video_index=video.index)
            writer.container.start_encoding()
            header = bytes(writer.video.codec_context.extradata or b"")
            for segment in segments:
                if segment.codec != plan.codec or segment.extradata != header:
                    raise OutputError(
                        f"{destination}: segment {segment.path.name} was encoded with other {plan.codec} settings "
                        "than this job's; its parameter sets would not decode in the joined stream (start over "
                        "with --no-resume)"
                    )
            rate = 1 / plan.rate if plan.rate else Fraction(0)
            for _, kind, _, packet in heapq.merge(
                _video_packets(segments), _other_packets(container, passthrough, start=start, end=end)
            ):
                if kind == _VIDEO:
                    frame_end = packet.pts * packet.time_base + rate if packet.pts is not None else None
                    writer.write_encoded(packet, frame_end=frame_end)
                else:
                    writer.mux(packet)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return StitchResult(
            frames=writer.frames_written,
            copied=tuple(writer.copied),
            reencoded=tuple(writer.reencoded),
            dropped=tuple(writer.dropped),
        )


def _reorder_delay(stamps: list[tuple[int | None, int | None]]) -> int:
    """How many packets an encoder sent before the first one it presents: those whose dts precede every pts."""
    first = min((pts for pts, _ in stamps if pts is not None), default=None)
    if first is None:
        return 0
    return sum(1 for _, dts in stamps if dts is not None and dts < first)


def _video_packets(segments: Sequence[SegmentFile]) -> Iterator[tuple[float, int, int, av.Packet]]:
    """(dts in seconds, kind, order, packet) of every segment's packets, with the joined stream's dts (module doc)."""
    stamps = [segment.timestamps() for segment in segments]
    delay = max((_reorder_delay(s) for s in stamps), default=0)
    presented: list[int] = []  # the stream's pts so far, ascending: each segment's come after the previous one's
    emitted = 0
    for segment, seg_stamps in zip(segments, stamps, strict=True):
        if any(pts is None for pts, _ in seg_stamps):
            raise OutputError(f"{segment.path}: a segment packet without a timestamp cannot be joined")
        own_delay = _reorder_delay(seg_stamps)
        presented.extend(sorted(pts for pts, _ in seg_stamps))  # type: ignore[type-var]
        for packet in segment.packets():
            if emitted >= delay:
                packet.dts = presented[emitted - delay]
            elif own_delay == delay:
                pass  # the stream's very first packets: the first segment's encoder dated them before any pts
            else:
                packet.dts = presented[0] - (delay - emitted)
            emitted += 1
            yield float(packet.dts * segment.time_base), _VIDEO, emitted, packet


def _other_packets(
    container: av.container.InputContainer, passthrough: tuple[int, ...], *, start: float | None, end: float | None
) -> Iterator[tuple[float, int, int, av.Packet]]:
    """(time in seconds, kind, order, packet) of the streams ``passthrough`` names, in demux order, kept by the rules
    :meth:`~elan_video.media.video.reader.VideoReader.items` applies to them: a cover picture always, a packet
    without timestamps never, others where their time falls in [start, end)."""
    if not passthrough:
        return
    streams = [s for s in container.streams if s.index in passthrough]
    order = 0
    for packet in container.demux(*streams):
        order += 1
        if is_cover(packet.stream):
            yield -math.inf, _OTHER, order, packet
            continue
        if packet.dts is None and packet.pts is None:
            continue
        t = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
        if (end is not None and t >= end) or (start is not None and t < start):
            continue
        when = packet.dts if packet.dts is not None else packet.pts
        yield float(when * packet.time_base), _OTHER, order, packet
