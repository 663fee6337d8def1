"""The job behind ``elan-video IN OUT``: options and destination checked before any work, then a still image,
an animation or a video upscaled (videos through :mod:`elan_video.jobs.streaming`'s overlapped stages), as one
stream or, with ``segment``, in keyframe-aligned segments kept in a work folder that a rerun resumes from
(:mod:`~elan_video.jobs.segments`, :mod:`~elan_video.jobs.workdir`, :mod:`~elan_video.jobs.stitch`). The output
is written to a hidden temporary file and renamed into place only when complete; an error or Ctrl-C removes it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import av
import numpy as np
import torch

from ..errors import ElanVideoError, InputError, OptionError, OutputError, VideoWarning
from ..media.animation import ANIMATION_SUFFIXES, Animation, read_animation, write_animation
from ..media.image import (
    ALPHA_SUFFIXES,
    eight_bit,
    frame_count,
    is_image_path,
    read_alpha,
    read_image,
    read_photo_tags,
    resize,
    write_image,
)
from ..media.video.encoding import EncoderPlan, check_outscale, plan_encoder
from ..media.video.pixels import format_facts
from ..media.video.probe import VideoInfo, check_source
from ..media.video.reader import DecodedFrame, VideoReader
from ..media.video.writer import VideoWriter
from ..model.arch import ELAN
from ..model.checkpoint import BUNDLED, load_model
from ..model.options import SCALES, UpscaleOptions
from ..model.upscaler import Upscaler, upscaler_for
from .segment_file import read_segment_file
from .segments import (
    DEFAULT_SEGMENT_SECONDS,
    SegmentCounts,
    encode_segment,
    plan_segments,
    segment_plan,
    settle_network,
)
from .stitch import stitch
from .streaming import ProgressCallback, as_grey_picture, grey_channel, run_stream
from .workdir import WorkFolder, earlier_choice, model_hash, source_fingerprint, work_folder_for

if TYPE_CHECKING:
    from .distributed import ScaleOut, WorkerPool

__all__ = ["ProgressCallback", "VideoSummary", "upscale_video"]

# What a video may be written to besides a video: an animation of its frames. Not .png: for a video, one picture
# or a numbered sequence is as likely meant as an APNG.
VIDEO_ANIMATION_SUFFIXES = (".gif", ".webp")
# The destination that means standard output: the video as raw Y4M frames, for a player or another encoder.
STDOUT = "-"
_STDOUT_PIPE = Path("pipe:1")
# Bytes of upscaled pictures a video-to-animation job may hold (Pillow writes an animation at once): a minute of
# 640x360 at 25 fps is 1 GiB.
ANIMATION_MEMORY = 4 << 30


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
    segments: SegmentCounts | None = None  # a segmented job's (None for one stream)
    backend: str | None = None  # how the network ran, "auto" resolved (None where it never ran)
    precision: str | None = None
    weights: str | None = None  # the bundled name or checkpoint file name (None for a network given as an object)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# -- the job ------------------------------------------------------------------------------------------------


def _check_destination(src: Path, dst: Path, *, overwrite: bool) -> bool:
    """Refuse a destination that cannot be written, or whose kind does not fit the source's; returns whether
    ``src`` is read as an image (by its suffix, or where ``dst`` names an image, by its content)."""
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
    if src_image == is_image_path(dst) or (src_image and _plays_as_video(src)):
        return src_image
    if src_image:
        raise OptionError(f"{src} is an image but {dst} names a video; use matching file types")
    if dst.suffix.lower() not in VIDEO_ANIMATION_SUFFIXES:
        animation = " or ".join(VIDEO_ANIMATION_SUFFIXES)
        raise OptionError(f"{src} is a video but {dst} names an image; use a video file type, or {animation}")
    return src_image


def _check_stdout_job(src: Path, *, codec: str | None, crf: int | None, preset: str | None, distributed: bool) -> None:
    """Refuse what a job writing raw Y4M frames to standard output cannot do."""
    if os.isatty(1):
        # As gzip does: megabytes of raw frames would flood the terminal.
        raise OptionError(f"standard output ({STDOUT}) is a terminal; pipe it into a player or an encoder (| mpv -)")
    if is_image_path(src) and not _plays_as_video(src):
        raise OptionError(f"{src} is an image; standard output ({STDOUT}) takes a video, as Y4M frames")
    given = [name for name, value in (("codec", codec), ("crf", crf), ("preset", preset)) if value is not None]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise OptionError(f"standard output ({STDOUT}) carries raw Y4M frames; {', '.join(given)} {verb} to files")
    if distributed:
        raise OptionError(f"standard output ({STDOUT}) is written here, in one stream; workers need a file")


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


def check_image_options(source: Path, *, what: str | None = None, **video_options: object) -> None:
    """Refuse options that only mean something for a video (an encoder's settings, a time range,
    deinterlacing) when ``source`` is a still image or a folder of them (or ``what`` the message says), rather
    than ignore them; a value of None means not given."""
    given = [name for name, value in video_options.items() if value is not None]
    if given:
        what = what or ("a folder of images" if source.is_dir() else "an image")
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


def _upscale_picture(up: Upscaler, rgb: np.ndarray, alpha: np.ndarray | None, outscale: float | None) -> np.ndarray:
    """H x W x 3 ``rgb`` upscaled, with its H x W ``alpha`` (upscaled by the network as a grey picture, whose edges
    are sharper than an interpolation's) as a fourth channel where given, then resized to ``outscale``."""
    result = up(np.ascontiguousarray(rgb))
    if alpha is not None:
        result = np.dstack([result, grey_channel(up(as_grey_picture(alpha)))])
    return _outscaled(result, rgb.shape, outscale)


def _upscale_still(
    src: Path, dst: Path, up: Upscaler, image: np.ndarray, *, outscale: float | None, warn: Callable[[str], None]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Upscale ``image`` (read from ``src``; with its alpha, ICC profile and EXIF) into ``dst``; ((w, h) in,
    (w, h) out)."""
    alpha = read_alpha(src)
    if alpha is not None and dst.suffix.lower() not in ALPHA_SUFFIXES:
        warn(f"{dst.name}: {dst.suffix} has no alpha channel; the transparency of {src} is dropped")
        alpha = None
    result = _upscale_picture(up, image, alpha, outscale)
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
        alpha = picture[..., 3] if picture.shape[2] == 4 else None
        results.append(_upscale_picture(up, picture[..., :3], alpha, outscale))
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


def with_scale(options: UpscaleOptions, outscale: float | None) -> UpscaleOptions:
    """``options`` with the network's factor filled in: as given, else the model's (a checkpoint is loaded here,
    once, to learn it), else 2 for the bundled weights, or with ``outscale`` the smallest of 2, 3, 4 at least
    that."""
    if options.scale is not None:
        return options
    model = options.model
    if model is None:
        scale = 2 if outscale is None else next((s for s in SCALES if s >= outscale), SCALES[-1])
        return UpscaleOptions.of(options, scale=scale)
    if not isinstance(model, (ELAN, Upscaler)):
        model = load_model(model)
    return UpscaleOptions.of(options, model=model, scale=model.scale)


def upscale_video(
    src: str | Path,
    dst: str | Path,
    *,
    options: UpscaleOptions | None = None,
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
    segment: float | None = None,
    resume: bool = True,
    notify: Callable[[str], None] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    pool: WorkerPool | None = None,
    **settings: Any,
) -> VideoSummary:
    """Upscale the video (or still image) ``src`` into ``dst``.

    Every frame is decoded to RGB (uint8, or uint16 for > 8-bit sources) with the source's colour matrix and
    range, upscaled by ELAN, and encoded with its source timestamp; audio and subtitle packets are copied
    (re-encoded or dropped with a warning when the output container refuses the codec). An animated GIF, APNG,
    WebP or AVIF written to .gif, .png, .webp or .avif has every picture upscaled, with its timing (see
    :mod:`elan_video.media.animation`); to other image formats, only its first; to a video (GIF, APNG and WebP
    only), every picture at its timestamp, through FFmpeg. A video written to .gif or .webp becomes an animation
    of its frames, each shown until the next one's timestamp (8 bits; sound not kept; held in memory, so at
    most :data:`ANIMATION_MEMORY` bytes of pictures). ``dst`` "-" (:data:`STDOUT`): the frames go to standard
    output (file descriptor 1) as Y4M as they are made, in one stream (no segments, no workers, no encoder
    options; sound left out).

    options, or ``settings`` (its fields as keywords: model, scale, device, precision, backend, tile,
    tile_overlap, batch, max_memory): how the network runs, see :class:`~elan_video.model.options.UpscaleOptions`;
    the model may also be a ready :class:`Upscaler`. Without a scale the model's is used (2 for the bundled
    weights, or with ``outscale`` the smallest of 2, 3, 4 at least ``outscale``).
    codec/pix_fmt/crf/preset: encoder settings (defaults per container: H.264 for .mp4/.mkv/.mov, HEVC for
    > 8-bit sources, VP9 for .webm); ``codec="ffv1", pix_fmt="gbrp"`` is lossless RGB. overwrite: replace an
    existing ``dst``. start/end: seconds, process only that time range of the source (timestamps are kept).
    deinterlace: run FFmpeg's bwdif on interlaced frames before upscaling, one output frame per input frame
    (None: when the source says it is interlaced; ELAN on woven fields would enlarge the combing).
    outscale: make the output that many times the source's size (0 < outscale <= 8): the network upscales by
    the scale and Lanczos resizes the result, e.g. 1.5 for 720p -> 1080p.
    progress: called after each frame with (frames written, estimated total or None). queue_size: frames
    buffered between stages. cpu_threads: PyTorch threads for CPU inference while the job runs (default: all
    cores on machines with fewer than 4, else all but one, left to decoding and encoding; the caller's setting
    is restored afterwards).

    segment: seconds; process the video in keyframe-aligned segments of about that length (see
    :data:`~elan_video.jobs.segments.DEFAULT_SEGMENT_SECONDS`), each encoded on its own and kept in the work
    folder ``.DST.elan-work`` beside ``dst`` until the output is stitched from them without re-encoding (same
    frames, timestamps and other streams as one stream gives). None: one stream, no work folder. Outputs that
    cannot be stitched (raw elementary streams, Y4M, VP8/VP9 with alpha) are written as one stream.
    resume: reuse the finished segments an earlier run of the same job left (checked: complete, decodable, the
    frames recorded); a different source, model or output-changing option starts over with a warning.
    notify: called with notes for the user that are not warnings ("resuming: 5 of 12 segments done").
    workers: segments processed at once by that many Ray actors (``pip install 'elan-video[ray]'``), on a Ray
    started for the job on this machine, or on the cluster at ``ray_address`` (there None means one per GPU of
    the cluster, else one per node; here None and 1 mean no Ray); see :mod:`~elan_video.jobs.distributed`.
    Either implies ``segment`` (:data:`~elan_video.jobs.segments.DEFAULT_SEGMENT_SECONDS` when None). A
    process already connected to Ray (``ray.init()``) keeps its connection. pool: instead of those two, a
    running :class:`~elan_video.jobs.distributed.WorkerPool` shared with other jobs (the folder job's); the
    model must then be the pool's Upscaler.

    Raises InputError (missing, empty, unreadable input, no video, nothing decodable), OutputError (missing
    folder, ``dst`` is ``src``, ``dst`` exists without ``overwrite``) and OptionError (bad options) before
    any output is written; ``dst`` appears only once complete.
    """
    began = time.perf_counter()
    options = UpscaleOptions.of(options, **settings)
    check_outscale(outscale)
    if queue_size < 1:
        raise OptionError(f"queue_size must be at least 1, got {queue_size}")
    if cpu_threads is not None and cpu_threads < 1:
        raise OptionError(f"cpu_threads must be at least 1, got {cpu_threads}")
    if segment is not None and not segment > 0:
        raise OptionError(f"segment must be a positive number of seconds, got {segment}")
    if workers is not None and workers < 1:
        raise OptionError(f"workers must be at least 1, got {workers}")
    scale_out = None
    if pool is not None:
        if (workers or 1) > 1 or ray_address is not None:
            raise OptionError("give either a worker pool or workers/ray_address, not both")
        if options.model is not pool.up:
            raise OptionError("a job on a worker pool must use the pool's Upscaler as its model")
        segment = segment if segment is not None else DEFAULT_SEGMENT_SECONDS
    elif (workers or 1) > 1 or ray_address is not None:
        from .distributed import ScaleOut, require_ray

        require_ray(workers, ray_address)
        scale_out = ScaleOut(workers, ray_address, options.device)
        segment = segment if segment is not None else DEFAULT_SEGMENT_SECONDS
    distributed = scale_out is not None or pool is not None
    src_path, dst_path = check_source(src), Path(dst)
    to_stdout = str(dst) == STDOUT
    if to_stdout:
        _check_stdout_job(src_path, codec=codec, crf=crf, preset=preset, distributed=distributed)
        segment = None  # a pipe cannot be resumed or stitched
        src_image = False  # read as a video: standard output takes no still image
    else:
        src_image = _check_destination(src_path, dst_path, overwrite=overwrite)
    given = options.model
    options = with_scale(options, outscale)
    job = _Job(src_path, dst_path, began=began, progress=progress, outscale=outscale)
    job.weights = weights_name(given, options.scale)
    load = functools.partial(job.load, options)
    if is_image_path(dst_path) and not src_image:  # a video to an animation
        animated = {"codec": codec, "pix_fmt": pix_fmt, "crf": crf, "preset": preset}
        workers_given = workers if scale_out is not None else None
        check_image_options(dst_path, what="an animated image", workers=workers_given, **animated)
        with VideoReader(src_path, start=start, end=end, deinterlace=deinterlace, warn=job.warn) as reader:
            return _animation_job(job, reader, load)
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
            workers=workers if scale_out is not None else None,
        )
        return _image_job(job, load)
    with VideoReader(src_path, start=start, end=end, deinterlace=deinterlace, warn=job.warn) as reader:
        plan = plan_encoder(
            Path("stdout.y4m") if to_stdout else dst_path,
            reader.info,
            scale=options.scale,
            codec=codec,
            pix_fmt=pix_fmt,
            crf=crf,
            preset=preset,
            outscale=outscale,
        )
        if distributed and not _stitchable(plan):
            job.warn(f"{dst_path.name}: this output cannot be joined from segments; written as one stream here")
        if segment is not None and _stitchable(plan):
            up = load()
            with _settled(
                up,
                src_path,
                dst_path,
                resume=resume,
                scale_out=scale_out,
                pool=pool,
                queue_size=queue_size,
                cpu_threads=cpu_threads,
            ) as ready_pool:
                return _segmented_job(
                    job,
                    reader,
                    plan,
                    up,
                    seconds=segment,
                    resume=resume,
                    notify=notify,
                    pix_fmt_given=pix_fmt is not None,
                    queue_size=queue_size,
                    cpu_threads=cpu_threads,
                    pool=ready_pool,
                )
        return _video_job(
            job, reader, plan, load(), pix_fmt_given=pix_fmt is not None, queue_size=queue_size, cpu_threads=cpu_threads
        )


def weights_name(model: object, scale: int | None) -> str | None:
    """How the summary names the weights: the bundled name, the checkpoint's file name, or None (an object)."""
    if model is None:
        return f"elan-light-x{scale}"
    if isinstance(model, (str, Path)):
        return str(model) if str(model) in BUNDLED else Path(model).name
    return None


@dataclass
class _Job:
    """One call of :func:`upscale_video`: where from and to, and the warnings it gave so far."""

    src: Path
    dst: Path
    began: float
    progress: ProgressCallback | None
    outscale: float | None
    messages: list[str] = field(default_factory=list)
    upscaler: Upscaler | None = None
    weights: str | None = None
    ran: set[tuple[str, str]] = field(default_factory=set)  # (backend, precision) Ray workers reported

    def load(self, options: UpscaleOptions) -> Upscaler:
        """The job's network (kept, so that the summary can say which weights, backend and precision it ran
        with)."""
        self.upscaler = upscaler_for(options)
        return self.upscaler

    def warn(self, message: str) -> None:
        self.messages.append(message)
        warnings.warn(message, VideoWarning, stacklevel=2)

    def _network(self, which: int) -> str | None:
        """The backend (0) or precision (1) the frames ran with: the job's, or where its network left "auto" to
        Ray workers that decided on their own machines, what they reported (several joined by "+")."""
        if self.upscaler is None:
            return None
        mine = (self.upscaler.backend, self.upscaler.precision)[which]
        theirs = sorted({network[which] for network in self.ran})
        return "+".join(theirs) if mine == "auto" and theirs else mine

    def summary(self, **facts: Any) -> VideoSummary:
        return VideoSummary(
            source=self.src,
            destination=self.dst,
            seconds=time.perf_counter() - self.began,
            warnings=tuple(self.messages),
            backend=self._network(0),
            precision=self._network(1),
            weights=self.weights,
            **facts,
        )


def _image_job(job: _Job, load: Callable[[], Upscaler]) -> VideoSummary:
    """A still image, or an animation to an animation (``load`` gives the network once the source decoded, so
    that an unreadable file fails at once)."""
    src, dst = job.src, job.dst
    frames = frame_count(src)
    if frames > 1 and dst.suffix.lower() in ANIMATION_SUFFIXES:
        animation = read_animation(src)
        shapes, count = _upscale_animation(
            src, dst, load(), animation, outscale=job.outscale, progress=job.progress, warn=job.warn
        )
    else:
        if frames > 1:
            job.warn(
                f"{src}: an animation of {frames} pictures; only the first is upscaled"
                f" ({', '.join(ANIMATION_SUFFIXES)} outputs keep them all)"
            )
        image = read_image(src)
        shapes, count = _upscale_still(src, dst, load(), image, outscale=job.outscale, warn=job.warn), 1
        if job.progress is not None:
            job.progress(1, 1)
    return job.summary(
        frames=count, frames_lost=0, input_size=shapes[0], output_size=shapes[1], codec=None, pix_fmt=None
    )


def _animation_job(job: _Job, reader: VideoReader, load: Callable[[], Upscaler]) -> VideoSummary:
    """A video (or its time range) to an animated GIF or WebP: every frame upscaled, 8 bits, with its alpha where
    it has one, shown until the next frame's timestamp (the last for one frame interval), looping forever. Pillow
    writes an animation at once, so the pictures are held in memory: more than :data:`ANIMATION_MEMORY` bytes of
    them is refused, before decoding where the length is known. Sound and subtitles are not kept (warned)."""
    info, dst = reader.info, job.dst
    up = load()
    factor = job.outscale or up.scale
    picture_bytes = round(info.width * factor) * round(info.height * factor) * (4 if info.alpha else 3)
    frames = _frames_to_write(reader)
    if frames is not None:
        _check_animation_memory(job, frames, picture_bytes)
    if info.others:
        job.warn(f"{dst.name}: an animation holds pictures only; the sound and subtitles of {job.src} are not kept")
    if info.sample_aspect_ratio is not None or info.display_matrix is not None:
        job.warn(f"{dst.name}: an animation has square pixels and no rotation; shown as the video's pixels are stored")
    reader.with_alpha = info.alpha
    pictures: list[np.ndarray] = []
    times: list[float] = []
    for item in reader.items():
        if not isinstance(item, DecodedFrame):
            continue
        pictures.append(eight_bit(_upscale_picture(up, item.image, item.alpha, job.outscale)))
        times.append(item.time)
        _check_animation_memory(job, len(pictures), pictures[0].nbytes)
        if job.progress is not None:
            job.progress(len(pictures), frames)
    if not pictures:
        _no_frames(job, info, start=reader.start, end=reader.end, damaged=reader.decode_errors > 0)
    lost = _report_losses(job, reader)
    # Durations from the rounded timestamps, so that they add up to the clip's length without drifting; GIF
    # counts in hundredths of a second (30 fps: 30, 40, 30 ms... rather than 30 ms each, 10 % fast).
    interval = float(1 / info.rate) if info.rate else (times[-1] - times[0]) / max(1, len(times) - 1) or 0.04
    quantum = 10 if dst.suffix.lower() == ".gif" else 1
    stamps = [quantum * round(1000 * t / quantum) for t in [*times, times[-1] + interval]]
    durations = [max(quantum, b - a) for a, b in itertools.pairwise(stamps)]
    with _temporary_output(dst) as tmp, _refusals_named(dst):
        write_animation(tmp, pictures, durations_ms=durations, loop=0, warn=_as_from(dst, tmp, job.warn))
    height, width = pictures[0].shape[:2]
    return job.summary(
        frames=len(pictures),
        frames_lost=lost,
        input_size=(info.width, info.height),
        output_size=(width, height),
        codec=None,
        pix_fmt=None,
    )


def _check_animation_memory(job: _Job, frames: int, picture_bytes: int) -> None:
    if frames * picture_bytes > ANIMATION_MEMORY:
        raise OptionError(
            f"{job.src}: {frames} upscaled pictures need {frames * picture_bytes / 2**30:.1f} GiB of memory as an"
            f" animation (at most {ANIMATION_MEMORY / 2**30:g} GiB); choose a shorter --start/--end range or a"
            " video output"
        )


def _video_job(
    job: _Job,
    reader: VideoReader,
    plan: EncoderPlan,
    up: Upscaler,
    *,
    pix_fmt_given: bool,
    queue_size: int,
    cpu_threads: int | None,
) -> VideoSummary:
    """Stream ``reader``'s video through ``up`` into ``plan``'s encoder, with the source's other streams."""
    info = reader.info
    _warn_about_plan(job, reader, plan, pix_fmt_given=pix_fmt_given)
    reader.with_alpha = plan.alpha
    # Standard output is written as it goes: a reader may be playing it already.
    output = contextlib.nullcontext(_STDOUT_PIPE) if str(job.dst) == STDOUT else _temporary_output(job.dst)
    with output as tmp, _refusals_named(job.dst):
        writer = VideoWriter(tmp, plan, metadata=dict(reader.stream.metadata), warn=_as_from(job.dst, tmp, job.warn))
        try:
            writer.add_metadata_from(reader.container)
            passthrough = writer.add_streams_from(reader.container, video_index=reader.stream.index)
            run_stream(
                reader,
                writer,
                up,
                passthrough=passthrough,
                batch=up.batch,
                size=queue_size,
                progress=job.progress,
                total=_frames_to_write(reader),
                cpu_threads=cpu_threads,
            )
        except BaseException:
            writer.abort()
            raise
        if writer.frames_written == 0:
            writer.abort()
            _no_frames(job, info, start=reader.start, end=reader.end, damaged=reader.decode_errors > 0)
        writer.close()
    return _video_summary(job, info, plan, writer, frames=writer.frames_written, lost=_report_losses(job, reader))


def _video_summary(
    job: _Job, info: VideoInfo, plan: EncoderPlan, streams: Any, *, frames: int, lost: int | None, **facts: Any
) -> VideoSummary:
    """A video job's summary; ``streams`` (the writer, or the stitch's result) lists the other streams it copied,
    re-encoded and dropped."""
    return job.summary(
        frames=frames,
        frames_lost=lost,
        input_size=(info.width, info.height),
        output_size=(plan.width - plan.pad[0], plan.height - plan.pad[1]),
        codec=plan.codec,
        pix_fmt=plan.pix_fmt,
        streams_copied=len(streams.copied),
        streams_reencoded=len(streams.reencoded),
        streams_dropped=len(streams.dropped),
        **facts,
    )


# FFmpeg's AVFMT_NOTIMESTAMPS: a raw elementary stream's muxer, which keeps no timestamps to stitch by.
_NO_TIMESTAMPS = 0x80


def _stitchable(plan: EncoderPlan) -> bool:
    """Whether segments encoded for ``plan`` can be joined into its output: not for raw streams without
    timestamps, Y4M's wrapped frames (no packets), or VP8/VP9 with alpha (the alpha travels in packet side data,
    which the segment files do not keep)."""
    if plan.codec == "wrapped_avframe" or (plan.alpha and plan.codec.startswith("libvpx")):
        return False
    return plan.muxer is not None and not av.ContainerFormat(plan.muxer).flags & _NO_TIMESTAMPS


def adopt_earlier_choice(up: Upscaler, src: Path, dst: Path) -> bool:
    """Give ``up``'s "auto" options the (backend, precision) that the finished segments of an unfinished job from
    ``src`` to ``dst`` with the same network were made with, where ``up`` could choose them (see
    :meth:`~elan_video.model.upscaler.Upscaler.adopt`); returns whether it did. For a job that runs here: a
    cluster's workers settle "auto" each on its own machine."""
    if "auto" not in (up.backend, up.precision) or not work_folder_for(dst).is_dir():
        return False
    try:
        source = source_fingerprint(src)
    except OSError:
        return False  # the job itself reports an unreadable source
    earlier = earlier_choice(dst, source=source, model=model_hash(up.model.state_dict()))
    return earlier is not None and up.adopt(*earlier)


@contextlib.contextmanager
def _settled(
    up: Upscaler,
    src: Path,
    dst: Path,
    *,
    resume: bool,
    scale_out: ScaleOut | None,
    pool: WorkerPool | None,
    queue_size: int,
    cpu_threads: int | None,
) -> Iterator[WorkerPool | None]:
    """The pool a segmented job runs on (``pool``, one started for ``scale_out``, or None: here), with ``up``'s
    "auto" choices settled on ``src``'s first frame wherever this machine runs the network (here, or in a pool of
    its CPUs), before the work folder is keyed by them: segments made with one choice are never resumed under
    another. A job resumed takes the choice its finished segments were made with where it runs here (so another
    ``--workers``, thus threads per worker, or a cleared choice cache still resumes). A cluster's workers settle
    "auto" each on its own machine."""
    if resume and pool is None and (scale_out is None or scale_out.address is None):
        adopt_earlier_choice(up, src, dst)
    if pool is not None or scale_out is None:
        if pool is None:
            settle_network(up, [src], threads=cpu_threads or torch.get_num_threads())
        yield pool
        return
    from .distributed import WorkerPool

    with WorkerPool(scale_out, up, queue_size=queue_size, cpu_threads=cpu_threads, pictures=[src]) as started:
        yield started


def _job_key(job: _Job, reader: VideoReader, plan: EncoderPlan, up: Upscaler, seconds: float) -> dict[str, Any]:
    """What a segmented job's segments are made from (see :mod:`~elan_video.jobs.workdir`): two runs with equal
    keys make equal segments. Device and batch are left out: they change how fast, not what."""
    colour = plan.colour
    options = {
        "scale": up.scale,
        "precision": up.precision,
        "backend": up.backend,
        "tile": up.tile,
        "tile_overlap": up.tile_overlap,
        "max_memory": up.max_memory,
        "outscale": job.outscale,
        "start": reader.start,
        "end": reader.end,
        "deinterlace": reader.deinterlacing,
        "segment": seconds,
        "codec": plan.codec,
        "pix_fmt": plan.pix_fmt,
        "size": [plan.width, plan.height],
        "crf": plan.crf,
        "preset": plan.preset,
        "encoder_options": plan.options,
        "colour": [colour.matrix, colour.range, colour.primaries, colour.trc],
        "time_base": str(plan.time_base),
        "rate": str(plan.rate),
        "pixels": plan.rgb_format,
        "container": plan.muxer,
    }
    return {"source": source_fingerprint(job.src), "model": model_hash(up.model.state_dict()), "options": options}


def _segmented_job(
    job: _Job,
    reader: VideoReader,
    plan: EncoderPlan,
    up: Upscaler,
    *,
    seconds: float,
    resume: bool,
    notify: Callable[[str], None] | None,
    pix_fmt_given: bool,
    queue_size: int,
    cpu_threads: int | None,
    pool: WorkerPool | None,
) -> VideoSummary:
    """``reader``'s video in segments (see :func:`upscale_video`'s ``segment``), finished ones taken over from an
    earlier run, then stitched into the output; on ``pool``'s workers when given. ``up``'s "auto" choices are
    settled by now where this machine runs it (:func:`_settled`)."""
    info, src = reader.info, job.src
    _warn_about_plan(job, reader, plan, pix_fmt_given=pix_fmt_given)
    start, end, deinterlace = reader.start, reader.end, reader.deinterlacing
    plan = segment_plan(plan)
    segments = plan_segments(src, seconds=seconds, start=start, end=end)
    key = _job_key(job, reader, plan, up, seconds)
    folder = WorkFolder.open(job.dst, key, resume=resume, total=len(segments), warn=job.warn)
    try:  # from here on, an interrupt leaves no work folder without finished segments
        resumed = len(folder.done)
        if resumed and notify is not None:
            notify(f"resuming: {resumed} of {len(segments)} segments done")
        total = sum(s.frames for s in segments)
        done = sum(folder.done.values())
        said: set[str] = set()

        def warn_once(message: str) -> None:  # each segment's reader would repeat a warning about the source
            if message not in said:
                said.add(message)
                job.warn(message)

        decoded = errors = retimed = 0
        if pool is not None:
            results = pool.run(
                source=src,
                info=info,
                segments=[s for s in segments if s.index not in folder.done],
                plan=plan,
                folder=folder,
                deinterlace=deinterlace,
                progress=job.progress,
                done=done,
                total=total,
                warn=warn_once,
            ).values()
            job.ran |= {r.network for r in results if r.network is not None}
            decoded = sum(r.frames_decoded for r in results)
            errors = sum(r.decode_errors for r in results)
            retimed = sum(r.retimed for r in results)
        for s in segments:
            if s.index in folder.done:
                continue
            base = done
            progress = None if job.progress is None else _offset(job.progress, base, total)
            with _refusals_named(job.dst), folder.segment_writer(s.index) as out:
                result = encode_segment(
                    src,
                    s,
                    plan,
                    up,
                    out,
                    deinterlace=deinterlace,
                    queue_size=queue_size,
                    cpu_threads=cpu_threads,
                    progress=progress,
                    warn=warn_once,
                )
            folder.record(s.index, result.frames)
            done += result.frames
            decoded, errors, retimed = (
                decoded + result.frames_decoded,
                errors + result.decode_errors,
                retimed + result.retimed,
            )
        files = [f for f in (read_segment_file(folder.segment_path(s.index)) for s in segments) if f and f.frames]
        if not files:
            _no_frames(job, info, start=start, end=end, damaged=errors > 0)
        tmp = folder.path / f"output{job.dst.suffix}"
        with _refusals_named(job.dst):
            stitched = stitch(files, src, tmp, plan, start=start, end=end, warn=_as_from(job.dst, tmp, job.warn))
        try:
            os.replace(tmp, job.dst)
        except OSError as exc:
            raise OutputError(f"{job.dst}: cannot be written ({exc.strerror or exc})") from None
    except ElanVideoError as exc:
        if not folder.done:
            folder.remove()
            raise
        kept = f"{len(folder.done)} of {len(segments)} segments are kept in {folder.path}"
        raise type(exc)(f"{exc} ({kept}; the same command resumes from them)") from None
    except BaseException:
        if not folder.done:
            folder.remove()
        raise
    folder.remove()
    lost = _report_segment_losses(
        job, info, decoded=decoded, errors=errors, retimed=retimed, ranged=bool(start or end), resumed=resumed
    )
    counts = SegmentCounts(total=len(segments), resumed=resumed, processed=len(segments) - resumed)
    return _video_summary(job, info, plan, stitched, frames=stitched.frames, lost=lost, segments=counts)


def _offset(progress: ProgressCallback, base: int, total: int) -> ProgressCallback:
    """A segment's progress as the whole job's: frames before it added, the job's total."""
    return lambda done, _: progress(base + done, total)


def _report_segment_losses(
    job: _Job, info: VideoInfo, *, decoded: int, errors: int, retimed: int, ranged: bool, resumed: int
) -> int | None:
    """:func:`_report_losses` for a segmented job: the frames this run decoded, damaged packets and retimed
    frames summed over its segments (a resumed run knows only what its own segments met)."""
    lost = None
    if info.frames and not ranged and not resumed:
        expected = info.estimated_frames or info.frames
        lost = max(0, expected - decoded)
        if lost:
            job.warn(
                f"{job.src}: {lost} of {expected} frames could not be decoded (damaged or truncated input); "
                f"wrote the {decoded} that could"
            )
    if errors and not lost:
        job.warn(f"{job.src}: {errors} damaged packets could not be decoded; their frames are missing")
    if retimed:
        job.warn(f"{job.src}: {retimed} frames had out-of-order timestamps and were moved forward")
    return lost


def _no_frames(job: _Job, info: VideoInfo, *, start: float | None, end: float | None, damaged: bool) -> NoReturn:
    """Raise the InputError of a job that wrote no frame: a time range past the video, or nothing decodable."""
    if not damaged and (start is not None or end is not None):
        span = f"{start or 0:g} s" + (f" to {end:g} s" if end is not None else " on")
        raise InputError(f"{job.src}: no video frame from {span} (the video lasts {info.duration or 0:.3g} s)")
    raise InputError(f"{job.src}: no video frame could be decoded")


def _warn_about_plan(job: _Job, reader: VideoReader, plan: EncoderPlan, *, pix_fmt_given: bool) -> None:
    """Say what the output will lose or change against the source before it is written."""
    info, src = reader.info, job.src
    if info.interlaced:
        job.warn(
            f"{src}: interlaced; deinterlaced with FFmpeg's bwdif before upscaling (one frame per frame)"
            if reader.deinterlacing
            else f"{src}: interlaced; upscaled without deinterlacing, which enlarges the combing"
        )
    if (info.mastering_display or info.content_light) and plan.codec != "libx265":
        job.warn(
            f"{plan.codec} does not take the source's HDR10 mastering display and light level metadata "
            "(only libx265 does here); the output keeps the PQ/HLG colour tags without it"
        )
    if info.alpha and not plan.alpha:
        job.warn(
            f"{plan.codec} {plan.pix_fmt} has no alpha channel; the transparency of {src} is dropped "
            "(FFV1 in .mkv, ProRes 4444 or PNG in .mov, VP9 in .webm keep it)"
        )
    if plan.options.get("strict") == "experimental":
        job.warn(
            f"{plan.codec} headers have no {float(info.rate or 0):.3f} fps; the header says the nearest standard rate"
            " and the frames keep their timestamps"
        )
    if plan.muxer_options.get("strict") == "unofficial" and job.dst.suffix.lower() == ".mxf":
        job.warn(
            f"MXF has no {float(info.rate or 0):.3f} fps edit rate; FFmpeg writes one of its own, which other MXF"
            " readers may refuse"
        )
    out_bits, _ = format_facts(plan.pix_fmt)
    if not pix_fmt_given and info.bit_depth > 8 and out_bits < info.bit_depth:
        hint = " (HEVC in .mp4, .mkv or .mov keeps 10)" if out_bits < 10 else ""
        job.warn(f"{plan.codec} takes no {info.bit_depth}-bit format here; {src} is written with {out_bits} bits{hint}")
    if plan.pad != (0, 0):
        job.warn(
            f"{plan.codec} needs an even frame size: {plan.width - plan.pad[0]}x{plan.height - plan.pad[1]} "
            f"padded to {plan.width}x{plan.height} by repeating the edge"
        )


def _frames_to_write(reader: VideoReader) -> int | None:
    """The progress bar's total: the source's frame count, or those of the time range asked for."""
    info, start, end = reader.info, reader.start, reader.end
    if (start is None and end is None) or not info.rate:
        return info.estimated_frames
    stop_at = end if end is not None else info.duration
    # Frames at start, start + 1/rate, ... before the end (exclusive): 0.3 s of 30.02 fps holds 10.
    return math.ceil((stop_at - (start or 0.0)) * info.rate - 1e-6) if stop_at is not None else None


def _report_losses(job: _Job, reader: VideoReader) -> int | None:
    """Warn about frames that did not decode or were retimed; the frames lost (None where unknown)."""
    lost = None
    expected = reader.frames_expected()
    if expected is not None and reader.start is None and reader.end is None:
        lost = max(0, expected - reader.frames_decoded)
    if lost:
        job.warn(
            f"{job.src}: {lost} of {expected} frames could not be decoded (damaged or truncated input); "
            f"wrote the {reader.frames_decoded} that could"
        )
    elif reader.decode_errors and lost is None:
        job.warn(f"{job.src}: {reader.decode_errors} damaged packets could not be decoded; their frames are missing")
    if reader.retimed:
        job.warn(f"{job.src}: {reader.retimed} frames had out-of-order timestamps and were moved forward")
    return lost
