"""The streaming engine behind ``elan-video IN OUT``: decode, upscale and encode overlap in three stages.

    reader thread --(bounded queue)--> inference (calling thread) --(bounded queue)--> writer thread

Memory stays bounded by the queue sizes (plus the encoder's own lookahead), whatever the length of the video.
Non-video packets travel through the same queues so that one thread muxes everything. On CUDA the inference
stage double-buffers through pinned host memory with separate copy and compute streams (see ``_CudaRunner``).
The output is written to a hidden temporary file beside the destination and renamed into place only when
complete; an error or Ctrl-C removes it.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from .animation import ANIMATION_SUFFIXES, Animation, read_animation, write_animation
from .arch import ELAN
from .errors import InputError, OptionError, OutputError, VideoWarning
from .image import (
    ALPHA_SUFFIXES,
    frame_count,
    is_image_path,
    read_alpha,
    read_image,
    read_photo_tags,
    resize,
    write_image,
)
from .upscaler import Upscaler
from .video.encoding import check_outscale, plan_encoder
from .video.pixels import format_facts
from .video.probe import check_source
from .video.reader import DecodedFrame, VideoReader
from .video.writer import VideoWriter

__all__ = ["ProgressCallback", "VideoSummary", "upscale_video"]

ProgressCallback = Callable[[int, int | None], None]
"""Called after each written frame with (frames written, estimated total or None)."""

_END = object()
_POLL_S = 0.1


@dataclass(frozen=True)
class VideoSummary:
    """What :func:`upscale_video` did.

    frames: frames written; frames_lost: frames the container announced that could not be decoded (None when
    the source does not say how many it has); sizes are (width, height); codec/pix_fmt of the output video
    (None for still images); seconds: wall time of the whole job; warnings: the messages also sent through
    ``warnings.warn`` (category :class:`~elan_video.errors.VideoWarning`).
    """

    source: Path
    destination: Path
    frames: int
    frames_lost: int | None
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    codec: str | None
    pix_fmt: str | None
    seconds: float
    streams_copied: int = 0
    streams_reencoded: int = 0
    streams_dropped: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Stopped(Exception):
    """Another stage failed or the job was interrupted; unwind quietly."""


class _Channel:
    """A bounded queue whose blocking calls give up once ``stop`` is set (so no stage waits forever)."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item: object) -> None:
        while True:
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if self._stop.is_set():
                    raise _Stopped from None

    def get(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    raise _Stopped from None


# -- inference stage ----------------------------------------------------------------------------------------


class _CpuRunner:
    """Synchronous inference: each submitted batch comes back at once."""

    def __init__(self, upscaler: Upscaler) -> None:
        self.upscaler = upscaler

    def submit(self, frames: list[DecodedFrame]) -> list[tuple[int, np.ndarray]]:
        out = self.upscaler.upscale_batch(np.stack([f.image for f in frames]))
        return [(f.pts, image) for f, image in zip(frames, out, strict=True)]

    def flush(self) -> list[tuple[int, np.ndarray]]:
        return []


class _CudaRunner:
    """Overlap host<->device copies with compute: two pinned host buffers per direction, two device buffers,
    a copy stream and a compute stream ordered by events.

    Batch k: the host fills pinned slot k%2, the copy stream uploads it, the compute stream runs the network
    into device slot k%2, and only then (at submit k+1) is its download queued on the copy stream. So while
    batch k computes, the copy stream downloads batch k-1 and uploads batch k+1. ``submit`` returns the
    batch before the previous one, whose download has had a whole compute to finish.
    """

    def __init__(self, upscaler: Upscaler, *, batch: int, height: int, width: int, dtype: np.dtype) -> None:
        self.up = upscaler
        dev = upscaler.device
        s = upscaler.scale
        self.peak = 255.0 if dtype == np.uint8 else 65535.0
        self.np_dtype = dtype
        # torch has no uint16 arithmetic on every build; 16-bit frames travel as int32 on the device side.
        host_dtype = torch.uint8 if dtype == np.uint8 else torch.int32
        self.host_in = [torch.empty((batch, height, width, 3), dtype=host_dtype, pin_memory=True) for _ in range(2)]
        self.host_out = [
            torch.empty((batch, height * s, width * s, 3), dtype=host_dtype, pin_memory=True) for _ in range(2)
        ]
        self.dev_in = [torch.empty_like(t, device=dev) for t in self.host_in]
        self.dev_out = [torch.empty_like(t, device=dev) for t in self.host_out]
        self.copy = torch.cuda.Stream(device=dev)
        self.compute = torch.cuda.Stream(device=dev)
        self.uploaded = [torch.cuda.Event() for _ in range(2)]
        self.computed = [torch.cuda.Event() for _ in range(2)]
        self.downloaded = [torch.cuda.Event() for _ in range(2)]
        self.in_flight: deque[tuple[int, list[int]]] = deque()  # (slot, pts) computed, download not collected
        self.to_download: tuple[int, int] | None = None  # (slot, n) computed, download not yet queued
        self.count = 0

    def _queue_download(self) -> None:
        if self.to_download is None:
            return
        slot, n = self.to_download
        with torch.cuda.stream(self.copy):
            self.copy.wait_event(self.computed[slot])
            self.host_out[slot][:n].copy_(self.dev_out[slot][:n], non_blocking=True)
            self.downloaded[slot].record(self.copy)
        self.to_download = None

    def _collect(self) -> list[tuple[int, np.ndarray]]:
        slot, pts = self.in_flight.popleft()
        self.downloaded[slot].synchronize()
        arrays = self.host_out[slot][: len(pts)].numpy().astype(self.np_dtype)  # a copy: the slot is reused
        return list(zip(pts, arrays, strict=True))

    def submit(self, frames: list[DecodedFrame]) -> list[tuple[int, np.ndarray]]:
        slot, n = self.count % 2, len(frames)
        self.count += 1
        ready: list[tuple[int, np.ndarray]] = []
        # The slot's previous batch (k-2) must be fully downloaded before its buffers are reused.
        if len(self.in_flight) == 2:
            ready += self._collect()
        self.uploaded[slot].synchronize()
        host = self.host_in[slot][:n].numpy()
        for i, f in enumerate(frames):
            host[i] = f.image
        with torch.cuda.stream(self.copy):
            # Device input slot: compute of batch k-2 read it.
            self.copy.wait_event(self.computed[slot])
            self.dev_in[slot][:n].copy_(self.host_in[slot][:n], non_blocking=True)
            self.uploaded[slot].record(self.copy)
        with torch.cuda.stream(self.compute):
            self.compute.wait_event(self.uploaded[slot])
            self.compute.wait_event(self.downloaded[slot])  # device output slot: download of batch k-2
            x = self.dev_in[slot][:n].permute(0, 3, 1, 2).float()
            if self.peak != 255.0:
                x = x * (255.0 / self.peak)
            y = self.up.forward_tensor(x).clamp(0, 255)
            if self.peak != 255.0:
                y = y * (self.peak / 255.0)
            self.dev_out[slot][:n].copy_(y.round().permute(0, 2, 3, 1))
            self.computed[slot].record(self.compute)
        # Batch k-1's download goes on the copy stream after batch k's upload, so it overlaps batch k's compute.
        self._queue_download()
        self.to_download = (slot, n)
        self.in_flight.append((slot, [f.pts for f in frames]))
        return ready

    def flush(self) -> list[tuple[int, np.ndarray]]:
        self._queue_download()
        ready: list[tuple[int, np.ndarray]] = []
        while self.in_flight:
            ready += self._collect()
        return ready


# -- the job ------------------------------------------------------------------------------------------------


def _check_destination(src: Path, dst: Path, *, overwrite: bool) -> None:
    folder = dst.parent if str(dst.parent) else Path(".")
    if dst.is_dir():
        raise OutputError(f"{dst}: is a folder; give an output file name")
    if not folder.is_dir():
        raise OutputError(f"{dst}: output folder {folder} does not exist")
    same = dst.resolve() == src.resolve()
    if not same and dst.exists():
        with contextlib.suppress(OSError):
            same = os.path.samefile(src, dst)
    if same:
        raise OutputError(f"{dst}: output is the input file; choose another output name")
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst}: already exists (pass --overwrite / -y, or overwrite=True, to replace it)")
    src_image = is_image_path(src) or (is_image_path(dst) and _sniffs_as_image(src))
    if src_image != is_image_path(dst) and not (src_image and _plays_as_video(src)):
        kind = ("an image", "a video") if src_image else ("a video", "an image")
        raise OptionError(f"{src} is {kind[0]} but {dst} names {kind[1]}; use matching file types")


def _sniffs_as_image(src: Path) -> bool:
    """Whether FFmpeg reads ``src``, whose name has no image suffix (a download saved without one), with a
    still-image demuxer (png_pipe, jpeg_pipe, ...)."""
    try:
        with av.open(str(src)) as container:
            name = container.format.name
    except (av.error.FFmpegError, OSError):
        return False
    return name == "image2" or name.endswith("_pipe")


def _plays_as_video(src: Path) -> bool:
    """Whether FFmpeg decodes the image file ``src`` as a video with timestamps, so that it may be written to one:
    any GIF, and an animated PNG or WebP (FFmpeg reads only the first picture of an AVIF sequence)."""
    suffix = src.suffix.lower()
    return suffix == ".gif" or (suffix in (".png", ".webp") and frame_count(src) > 1)


def check_image_options(source: Path, **video_options: object) -> None:
    """Refuse options that only mean something for a video (an encoder's settings, a time range,
    deinterlacing) when ``source`` is a still image or a folder of them, rather than ignore them; a value of
    None means not given."""
    given = [name for name, value in video_options.items() if value is not None]
    if given:
        what = "a folder of images" if source.is_dir() else "an image"
        verb = "applies" if len(given) == 1 else "apply"
        raise OptionError(f"{source}: {what}; {', '.join(given)} {verb} to videos only")


@contextlib.contextmanager
def _temporary_output(dst: Path) -> Iterator[Path]:
    """A hidden file beside ``dst`` (same suffix, so the muxer is chosen the same way), renamed over ``dst``
    only when the body completes; removed on any error or interruption."""
    tmp = dst.with_name(f".{dst.stem}.partial-{uuid.uuid4().hex[:8]}{dst.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{dst}: cannot be written ({exc.strerror or exc})") from None


def _as_from(dst: Path, tmp: Path, warn: Callable[[str], None]) -> Callable[[str], None]:
    """``warn`` for a writer given ``tmp``: its messages name the destination the user asked for instead."""
    return lambda message: warn(message.replace(tmp.name, dst.name))


@contextlib.contextmanager
def _refusals_named(dst: Path) -> Iterator[None]:
    """Turn an FFmpeg or OS error while the output is written (disk full, file too large, an encoder refusing
    its settings) into one OutputError naming ``dst`` and the short cause."""
    try:
        yield
    except (av.error.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise OutputError(f"{dst}: could not be written ({reason})") from None


def _as_grey_picture(alpha: np.ndarray) -> np.ndarray:
    """H x W alpha -> H x W x 3 grey picture: alpha is upscaled by the network, whose edges are sharper than an
    interpolation's."""
    return np.repeat(alpha[..., None], 3, axis=2)


def _grey(picture: np.ndarray) -> np.ndarray:
    """The upscaled grey picture back to one channel, same dtype."""
    return np.rint(picture.mean(axis=2, dtype=np.float64)).astype(picture.dtype)


def _upscale_alpha(up: Upscaler, alpha: np.ndarray) -> np.ndarray:
    """An H x W alpha channel upscaled by the network as a grey picture."""
    return _grey(up(_as_grey_picture(alpha)))


def _upscale_still(
    src: Path, dst: Path, up: Upscaler, image: np.ndarray, *, outscale: float | None, warn: Callable[[str], None]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Upscale ``image`` (read from ``src``; with its alpha, ICC profile and EXIF) into ``dst``; ((w, h) in,
    (w, h) out)."""
    result = up(image)
    alpha = read_alpha(src)
    if alpha is not None and dst.suffix.lower() in ALPHA_SUFFIXES:
        result = np.dstack([result, _upscale_alpha(up, alpha)])
    elif alpha is not None:
        warn(f"{dst.name}: {dst.suffix} has no alpha channel; the transparency of {src} is dropped")
    result = _outscaled(result, image.shape, outscale)
    with _temporary_output(dst) as tmp, _refusals_named(dst):
        write_image(tmp, result, tags=read_photo_tags(src), warn=_as_from(dst, tmp, warn))
    return (image.shape[1], image.shape[0]), (result.shape[1], result.shape[0])


def _upscale_animation(
    src: Path,
    dst: Path,
    up: Upscaler,
    animation: Animation,
    *,
    outscale: float | None,
    progress: ProgressCallback | None,
    warn: Callable[[str], None],
) -> tuple[tuple[tuple[int, int], tuple[int, int]], int]:
    """Upscale every picture of ``animation`` (read from ``src``) into the animation ``dst``, keeping each one's
    duration, the loop count and the ICC profile; (((w, h) in, (w, h) out), pictures)."""
    results = []
    for done, picture in enumerate(animation.frames, start=1):
        result = up(np.ascontiguousarray(picture[..., :3]))
        if picture.shape[2] == 4:
            result = np.dstack([result, _upscale_alpha(up, picture[..., 3])])
        results.append(_outscaled(result, picture.shape, outscale))
        if progress is not None:
            progress(done, len(animation.frames))
    icc_profile = read_photo_tags(src).icc_profile
    with _temporary_output(dst) as tmp, _refusals_named(dst):
        write_animation(
            tmp,
            results,
            durations_ms=animation.durations_ms,
            loop=animation.loop,
            icc_profile=icc_profile,
            warn=_as_from(dst, tmp, warn),
        )
    shape, out = animation.frames[0].shape, results[0].shape
    return ((shape[1], shape[0]), (out[1], out[0])), len(results)


def _outscaled(result: np.ndarray, source_shape: tuple[int, ...], outscale: float | None) -> np.ndarray:
    """The network's output resized to ``outscale`` times the source's size (unchanged without outscale)."""
    if outscale is None:
        return result
    h, w = source_shape[:2]
    return resize(result, width=max(1, round(w * outscale)), height=max(1, round(h * outscale)))


def make_upscaler(model: ELAN | str | Path | Upscaler | None, *, scale: int, **options: object) -> Upscaler:
    """``model`` as an :class:`Upscaler` for ``scale`` (checked, or built with ``options``)."""
    if isinstance(model, Upscaler):
        if model.scale != scale:
            raise OptionError(f"scale {scale} does not match the upscaler, which upscales x{model.scale}")
        return model
    return Upscaler(model, scale=scale, **options)  # type: ignore[arg-type]


def upscale_video(
    src: str | Path,
    dst: str | Path,
    *,
    scale: int = 2,
    model: ELAN | str | Path | Upscaler | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    backend: str = "eager",
    tile: int | None = None,
    tile_overlap: int = 32,
    batch: int = 1,
    codec: str | None = None,
    pix_fmt: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    overwrite: bool = False,
    start: float | None = None,
    end: float | None = None,
    deinterlace: bool | None = None,
    outscale: float | None = None,
    progress: ProgressCallback | None = None,
    queue_size: int = 8,
    cpu_threads: int | None = None,
) -> VideoSummary:
    """Upscale the video (or still image) ``src`` by ``scale`` into ``dst``.

    Every frame is decoded to RGB (uint8, or uint16 for > 8-bit sources) with the source's colour matrix and
    range, upscaled by ELAN, and encoded with its source timestamp; audio and subtitle packets are copied
    (re-encoded or dropped with a warning when the output container refuses the codec). An animated GIF, APNG,
    WebP or AVIF written to .gif, .png, .webp or .avif has every picture upscaled, with its timing (see
    :mod:`elan_video.animation`); to other image formats, only its first; to a video (GIF, APNG and WebP
    only), every picture at its timestamp, through FFmpeg.

    model: an :class:`ELAN`, checkpoint path, bundled name, a ready :class:`Upscaler`, or None for
    ``elan-light-x{scale}``. device/precision/backend/tile/tile_overlap/batch: see :class:`Upscaler`.
    codec/pix_fmt/crf/preset: encoder settings (defaults per container: H.264 for .mp4/.mkv/.mov, HEVC for
    > 8-bit sources, VP9 for .webm); ``codec="ffv1", pix_fmt="gbrp"`` is lossless RGB. overwrite: replace an
    existing ``dst``. start/end: seconds, process only that time range of the source (timestamps are kept).
    deinterlace: run FFmpeg's bwdif on interlaced frames before upscaling, one output frame per input frame
    (None: when the source says it is interlaced; ELAN on woven fields would enlarge the combing).
    outscale: make the output that many times the source's size (0 < outscale <= 8): the network upscales by
    ``scale`` (pick one at least ``outscale``) and Lanczos resizes the result, e.g. 1.5 for 720p -> 1080p.
    progress: called after each frame with (frames written, estimated total or None). queue_size: frames
    buffered between stages. cpu_threads: PyTorch threads for CPU inference while the job runs (default: all
    cores on machines with fewer than 4, else all but one, left to decoding and encoding; the caller's setting
    is restored afterwards).

    Raises InputError (missing, empty, unreadable input, no video, nothing decodable), OutputError (missing
    folder, ``dst`` is ``src``, ``dst`` exists without ``overwrite``) and OptionError (bad options) before
    any output is written; ``dst`` appears only once complete.
    """
    began = time.perf_counter()
    if scale not in (2, 3, 4):
        raise OptionError(f"scale must be 2, 3 or 4, got {scale}")
    check_outscale(outscale)
    if queue_size < 1:
        raise OptionError(f"queue_size must be at least 1, got {queue_size}")
    if cpu_threads is not None and cpu_threads < 1:
        raise OptionError(f"cpu_threads must be at least 1, got {cpu_threads}")
    src_path, dst_path = check_source(src), Path(dst)
    _check_destination(src_path, dst_path, overwrite=overwrite)
    messages: list[str] = []

    def warn(message: str) -> None:
        messages.append(message)
        warnings.warn(message, VideoWarning, stacklevel=2)

    model_options = {
        "device": device,
        "precision": precision,
        "backend": backend,
        "tile": tile,
        "tile_overlap": tile_overlap,
        "batch": batch,
    }
    if is_image_path(dst_path):  # an animated image may also go to a video: FFmpeg reads it as one
        check_image_options(
            src_path,
            codec=codec,
            pix_fmt=pix_fmt,
            crf=crf,
            preset=preset,
            start=start,
            end=end,
            deinterlace=deinterlace,
        )
        frames = frame_count(src_path)
        # Decoded before the model loads, so that an unreadable file fails at once.
        if frames > 1 and dst_path.suffix.lower() in ANIMATION_SUFFIXES:
            animation = read_animation(src_path)
            up = make_upscaler(model, scale=scale, **model_options)
            shapes, count = _upscale_animation(
                src_path, dst_path, up, animation, outscale=outscale, progress=progress, warn=warn
            )
        else:
            if frames > 1:
                warn(
                    f"{src_path}: an animation of {frames} pictures; only the first is upscaled"
                    f" ({', '.join(ANIMATION_SUFFIXES)} outputs keep them all)"
                )
            image = read_image(src_path)
            up = make_upscaler(model, scale=scale, **model_options)
            shapes, count = _upscale_still(src_path, dst_path, up, image, outscale=outscale, warn=warn), 1
            if progress is not None:
                progress(1, 1)
        return VideoSummary(
            source=src_path,
            destination=dst_path,
            frames=count,
            frames_lost=0,
            input_size=shapes[0],
            output_size=shapes[1],
            codec=None,
            pix_fmt=None,
            seconds=time.perf_counter() - began,
            warnings=tuple(messages),
        )

    with VideoReader(src_path, start=start, end=end, deinterlace=deinterlace, warn=warn) as reader:
        info = reader.info
        if info.interlaced:
            warn(
                f"{src_path}: interlaced; deinterlaced with FFmpeg's bwdif before upscaling (one frame per frame)"
                if reader.deinterlacing
                else f"{src_path}: interlaced; upscaled without deinterlacing, which enlarges the combing"
            )
        plan = plan_encoder(
            dst_path, info, scale=scale, codec=codec, pix_fmt=pix_fmt, crf=crf, preset=preset, outscale=outscale
        )
        up = make_upscaler(model, scale=scale, **model_options)
        if (info.mastering_display or info.content_light) and plan.codec != "libx265":
            warn(
                f"{plan.codec} does not take the source's HDR10 mastering display and light level metadata "
                "(only libx265 does here); the output keeps the PQ/HLG colour tags without it"
            )
        reader.with_alpha = plan.rgb_format.startswith("rgba")
        if info.alpha and not reader.with_alpha:
            warn(
                f"{plan.codec} {plan.pix_fmt} has no alpha channel; the transparency of {src_path} is dropped "
                "(FFV1 in .mkv, ProRes 4444 or PNG in .mov, VP9 in .webm keep it)"
            )
        out_bits, _ = format_facts(plan.pix_fmt)
        if pix_fmt is None and info.bit_depth > 8 and out_bits < info.bit_depth:
            hint = " (HEVC in .mp4, .mkv or .mov keeps 10)" if out_bits < 10 else ""
            warn(
                f"{plan.codec} takes no {info.bit_depth}-bit format here; {src_path} is written with {out_bits} "
                f"bits{hint}"
            )
        if plan.pad != (0, 0):
            warn(
                f"{plan.codec} needs an even frame size: {plan.width - plan.pad[0]}x{plan.height - plan.pad[1]} "
                f"padded to {plan.width}x{plan.height} by repeating the edge"
            )
        total = info.estimated_frames
        if (start is not None or end is not None) and info.rate:
            stop_at = end if end is not None else info.duration
            # Frames at start, start + 1/rate, ... before the end (exclusive): 0.3 s of 30.02 fps holds 10.
            total = math.ceil((stop_at - (start or 0.0)) * info.rate - 1e-6) if stop_at is not None else None
        metadata = dict(reader.stream.metadata)
        with _temporary_output(dst_path) as tmp, _refusals_named(dst_path):
            writer = VideoWriter(tmp, plan, metadata=metadata, warn=warn)
            try:
                writer.add_metadata_from(reader.container)
                passthrough = writer.add_streams_from(reader.container, video_index=reader.stream.index)
                _stream(
                    reader,
                    writer,
                    up,
                    passthrough=passthrough,
                    batch=batch,
                    size=queue_size,
                    progress=progress,
                    total=total,
                    cpu_threads=cpu_threads,
                )
            except BaseException:
                writer.abort()
                raise
            if writer.frames_written == 0:
                writer.abort()
                if reader.decode_errors == 0 and (start is not None or end is not None):
                    span = f"{start or 0:g} s" + (f" to {end:g} s" if end is not None else " on")
                    raise InputError(
                        f"{src_path}: no video frame from {span} (the video lasts {info.duration or 0:.3g} s)"
                    )
                raise InputError(f"{src_path}: no video frame could be decoded")
            writer.close()
        lost = None
        expected = reader.frames_expected()
        if expected is not None and start is None and end is None:
            lost = max(0, expected - reader.frames_decoded)
        if lost:
            warn(
                f"{src_path}: {lost} of {expected} frames could not be decoded (damaged or truncated input); "
                f"wrote the {reader.frames_decoded} that could"
            )
        elif reader.decode_errors and lost is None:
            warn(f"{src_path}: {reader.decode_errors} damaged packets could not be decoded; their frames are missing")
        if reader.retimed:
            warn(f"{src_path}: {reader.retimed} frames had out-of-order timestamps and were moved forward")
        return VideoSummary(
            source=src_path,
            destination=dst_path,
            frames=writer.frames_written,
            frames_lost=lost,
            input_size=(info.width, info.height),
            output_size=(plan.width - plan.pad[0], plan.height - plan.pad[1]),
            codec=plan.codec,
            pix_fmt=plan.pix_fmt,
            seconds=time.perf_counter() - began,
            streams_copied=len(writer.copied),
            streams_reencoded=len(writer.reencoded),
            streams_dropped=len(writer.dropped),
            warnings=tuple(messages),
        )


def default_cpu_threads() -> int:
    """Intra-op threads for CPU inference inside the pipeline.

    From 4 cores up, all but one, which decoding and encoding use. Below that every core: the network is
    ~99 % of the work, and on a quiet 2-core machine ELAN-light at 320x180 ran the whole pipeline at
    0.317 fps with 2 threads against 0.233 fps with 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    spare = 1 if cores >= 4 else 0
    return max(1, min(torch.get_num_threads(), cores - spare))


def _stream(
    reader: VideoReader,
    writer: VideoWriter,
    up: Upscaler,
    *,
    passthrough: tuple[int, ...],
    batch: int,
    size: int,
    progress: ProgressCallback | None,
    total: int | None,
    cpu_threads: int | None,
) -> None:
    """Run reader -> inference -> writer with bounded queues until the input ends; re-raises the first failure."""
    stop = threading.Event()
    inbox, outbox = _Channel(size, stop), _Channel(size, stop)
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for item in reader.items(passthrough):
                inbox.put(item)
            inbox.put(_END)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the calling thread
            failures.append(exc)
            stop.set()

    def write() -> None:
        done = 0
        try:
            while True:
                item = outbox.get()
                if item is _END:
                    return
                if isinstance(item, av.Packet):
                    writer.mux(item)
                    continue
                pts, image = item  # type: ignore[misc]
                writer.write(image, pts)
                done += 1
                if progress is not None:
                    progress(done, total)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the calling thread
            failures.append(exc)
            stop.set()

    torch_threads = torch.get_num_threads()
    if up.device.type == "cuda":
        info = reader.info
        runner: _CpuRunner | _CudaRunner = _CudaRunner(
            up, batch=batch, height=info.height, width=info.width, dtype=np.dtype(reader.dtype)
        )
    else:
        runner = _CpuRunner(up)
        # PyTorch's OpenMP workers spin between operators; with every core taken they starve the decode and
        # encode threads (measured on 2 cores: 25 frames took 7.5 s with 2 threads, 0.26 s with 1).
        torch.set_num_threads(cpu_threads or default_cpu_threads())
    threads = [threading.Thread(target=read, name="elan-decode"), threading.Thread(target=write, name="elan-encode")]
    for t in threads:
        t.start()
    try:
        pending: list[DecodedFrame] = []
        held: list[av.Packet] = []
        # What each submitted picture is, in order: a frame, a frame whose alpha follows, or that alpha (run
        # through the network as a grey picture of its own, so batching and the CUDA buffers stay RGB).
        kinds: deque[str] = deque()
        colour: list[tuple[int, np.ndarray]] = []  # a frame's result waiting for its alpha's

        def emit(results: list[tuple[int, np.ndarray]]) -> None:
            for pts, image in results:
                kind = kinds.popleft()
                if kind == "colour":
                    colour.append((pts, image))
                elif kind == "alpha":
                    rgb_pts, rgb = colour.pop()
                    outbox.put((rgb_pts, np.dstack([rgb, _grey(image)])))
                else:
                    outbox.put((pts, image))
            while held:
                outbox.put(held.pop(0))

        while True:
            item = inbox.get()
            if item is _END:
                break
            if isinstance(item, DecodedFrame):
                pictures = [(item, "frame")]
                if item.alpha is not None:
                    companion = DecodedFrame(item.index, item.pts, item.time_base, _as_grey_picture(item.alpha))
                    pictures = [(item, "colour"), (companion, "alpha")]
                for picture, kind in pictures:
                    pending.append(picture)
                    kinds.append(kind)
                    if len(pending) == batch:
                        emit(runner.submit(pending))
                        pending = []
            else:
                held.append(item)  # type: ignore[arg-type]
                if len(held) > 4 * size and not pending:
                    emit([])
        if pending:
            emit(runner.submit(pending))
        emit(runner.flush())
        outbox.put(_END)
        # Join in short waits so that Ctrl-C still reaches this thread.
        while threads[1].is_alive():
            threads[1].join(_POLL_S)
    except _Stopped:
        pass
    finally:
        stop.set()
        for t in threads:
            while t.is_alive():
                t.join(_POLL_S)
        torch.set_num_threads(torch_threads)
    if failures:
        raise failures[0]
