"""Segments of a long video: where to cut it (at keyframes) and how one segment is upscaled and encoded on its own.

A segment is a time range [start, end) of the source whose start is a keyframe's presentation time (the first
segment's start is the job's, the last one's end the job's). It is decoded from the keyframe at or before its
start (:class:`~elan_video.media.video.reader.VideoReader` seeks there) and keeps exactly the frames whose
timestamps fall in the range. Decoders give frames in presentation order, so B-frames reordered across a cut, and
an open GOP's leading pictures (decoded after the next segment's keyframe but shown before it), land in the
segment their timestamps say; where decoding starts at a keyframe, its leading pictures (which reference the
previous GOP) are shown before the start and dropped. Adjacent segments share the cut's time as a float computed
the same way on both sides, so no frame is kept twice or lost; with variable frame rates nothing assumes a step.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import torch

from ..errors import ElanVideoError, WarnCallback
from ..media.video.encoding import EncoderPlan
from ..media.video.probe import VideoInfo, main_video, open_input
from ..media.video.reader import VideoReader, read_frames
from ..media.video.writer import VideoWriter
from ..model.upscaler import Upscaler
from .segment_file import SegmentFileWriter
from .streaming import ProgressCallback, run_stream

__all__ = [
    "DEFAULT_SEGMENT_SECONDS",
    "Segment",
    "SegmentCounts",
    "SegmentResult",
    "encode_segment",
    "plan_segments",
    "segment_plan",
    "settle_network",
    "worker_plan",
]

DEFAULT_SEGMENT_SECONDS = 60.0
"""About a minute: a crash costs at most that much video again (about 6 minutes of an H100 at 1080p -> 4K, the
slowest common case), while the cost of a cut (one more keyframe, a decoder restart from the keyframe before,
an encoder's lookahead warming up) stays far below 1 % of a segment; a two-hour film gives 120 segments, enough
to keep 8 to 16 workers busy to the end."""


@dataclass(frozen=True)
class Segment:
    """Frames with timestamps in [start, end) seconds of the source (None: from the top / to the end);
    ``frames``: the video packets presented in it, an estimate for progress (damage may lose some)."""

    index: int
    start: float | None
    end: float | None
    frames: int


def plan_segments(
    path: Path, *, seconds: float, start: float | None = None, end: float | None = None
) -> tuple[Segment, ...]:
    """Cut ``path``'s video (the range ``start``-``end`` of it, seconds) at keyframes into segments of at least
    ``seconds`` each (the last may be shorter). Reads the packets' timestamps and keyframe flags only; decodes
    nothing. A source whose packets carry no timestamps (a raw elementary stream) is one segment."""
    times: list[float] = []  # presentation time of every video packet
    keys: list[float] = []
    with open_input(path) as container:
        stream = main_video(container, path)
        tb = Fraction(stream.time_base) if stream.time_base else None
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None or tb is None:
                    return (Segment(0, start, end, len(times)),)
                t = float(packet.pts * tb)
                times.append(t)
                if packet.is_keyframe:
                    keys.append(t)
        except av.error.FFmpegError:
            pass  # a damaged tail: cut what was read, the reader decodes what it can
    first = start if start is not None else -math.inf
    last = end if end is not None else math.inf
    cuts: list[float] = []
    previous = start if start is not None else min(times, default=0.0)
    for t in sorted(set(keys)):
        if first < t < last and t - previous >= seconds:
            cuts.append(t)
            previous = t
    bounds = [start, *cuts, end]
    segments = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        low, high = (a if a is not None else -math.inf), (b if b is not None else math.inf)
        segments.append(Segment(i, a, b, sum(1 for t in times if low - 1e-9 <= t < high - 1e-9)))
    return tuple(segments)


def segment_plan(plan: EncoderPlan) -> EncoderPlan:
    """The plan a segmented job encodes with: ``plan``, but for x265 without its encoder-information SEI (it names
    the CPU's features and the thread counts, and x265 puts it in the global header that the stitcher compares
    across segments) and with wavefront parallelism on whatever the thread pool (the picture parameter set
    records it). Then every x265 segment has the same header on any worker with any threads; the other encoders'
    global headers do not depend on threads."""
    if plan.codec != "libx265":
        return plan
    params = plan.options.get("x265-params", "")
    pinned = "info=0:wpp=1"
    return replace(plan, options=plan.options | {"x265-params": f"{params}:{pinned}" if params else pinned})


def settle_network(up: Upscaler, pictures: Sequence[Path], *, threads: int) -> None:
    """Settle ``up``'s "auto" backend and precision now, on its own device, measured on the first frame of the
    first of ``pictures`` that decodes with ``threads`` PyTorch threads (as the frames will run); nothing to do
    when neither is "auto" or none decodes (each file's job reports it).

    A segmented job keys its work folder by what the network runs with, so "auto" must be a choice by then:
    segments made with one choice are never joined to segments made with another."""
    if "auto" not in (up.backend, up.precision):
        return
    for path in pictures:
        try:
            with contextlib.closing(read_frames(path)) as frames:
                frame = next(frames, None)
        except (ElanVideoError, av.error.FFmpegError, OSError):
            continue
        if frame is not None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                up.settle(frame.image)
            finally:
                torch.set_num_threads(before)
            return


def worker_plan(plan: EncoderPlan, threads: int) -> EncoderPlan:
    """``plan`` (from :func:`segment_plan`) for a worker given ``threads`` CPU threads: x264 and x265 use that
    many (by default each takes every core of the machine, once per worker)."""
    if plan.codec == "libx264":
        return replace(plan, options=plan.options | {"threads": str(threads)})
    if plan.codec == "libx265":
        frame_threads = 1 if threads < 4 else 2 if threads < 8 else 3 if threads < 16 else 4  # x265's own ladder
        params = f"{plan.options['x265-params']}:pools={threads}:frame-threads={frame_threads}"
        return replace(plan, options=plan.options | {"x265-params": params})
    return plan


@dataclass(frozen=True)
class SegmentCounts:
    """A segmented job's segments: in all, taken over finished from an earlier run, and processed by this one."""

    total: int
    resumed: int
    processed: int


@dataclass(frozen=True)
class SegmentResult:
    """What encoding one segment did: frames written, and the reader's frames decoded, damaged packets and
    retimed frames; ``network``: the (backend, precision) a Ray worker ran it with (None: the job's own)."""

    frames: int
    decode_errors: int
    retimed: int
    frames_decoded: int
    network: tuple[str, str] | None = None


def encode_segment(
    source: Path,
    segment: Segment,
    plan: EncoderPlan,
    up: Upscaler,
    out: BinaryIO,
    *,
    deinterlace: bool | None,
    queue_size: int,
    cpu_threads: int | None,
    progress: ProgressCallback | None = None,
    warn: WarnCallback | None = None,
    info: VideoInfo | None = None,
    opener: Callable[[], BinaryIO] | None = None,
) -> SegmentResult:
    """Decode ``segment`` of ``source``, upscale it with ``up`` and encode it with ``plan`` into the segment file
    ``out`` (see :mod:`~elan_video.jobs.segment_file`; complete only when this returns). Frames keep their source
    timestamps; no other stream is read (the stitch copies them once). ``info``/``opener``: see
    :class:`~elan_video.media.video.reader.VideoReader` (a Ray worker reads the bytes it was sent)."""
    file = SegmentFileWriter(out)
    with VideoReader(
        source, start=segment.start, end=segment.end, deinterlace=deinterlace, warn=warn, info=info, opener=opener
    ) as reader:
        reader.with_alpha = plan.alpha
        writer = VideoWriter(f"segment {segment.index}", plan, packets=file.add, warn=warn)
        try:
            run_stream(
                reader,
                writer,
                up,
                passthrough=(),
                batch=up.batch,
                size=queue_size,
                progress=progress,
                total=segment.frames,
                cpu_threads=cpu_threads,
            )
        except BaseException:
            writer.abort()
            raise
        writer.close()
        file.finish(codec_context=writer.video.codec_context, frames=writer.frames_written)
        return SegmentResult(
            frames=writer.frames_written,
            decode_errors=reader.decode_errors,
            retimed=reader.retimed,
            frames_decoded=reader.frames_decoded,
        )
