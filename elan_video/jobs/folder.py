"""The folder job: every image and video file directly in a folder upscaled into another folder, under the same
names, with one model for all or one chosen per file; a file that fails is reported and the others go on. With
Ray workers, the videos' segments go to one pool of workers per model, several files at a time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ElanVideoError, InputError, OutputError
from ..media.image import IMAGE_SUFFIXES, is_image_path
from ..media.video.encoding import VIDEO_SUFFIXES
from ..model.options import UpscaleOptions
from ..model.upscaler import Upscaler, upscaler_for
from .pipeline import (
    STDOUT,
    VideoSummary,
    adopt_earlier_choice,
    check_image_options,
    upscale_video,
    weights_name,
    with_scale,
)
from .streaming import ProgressCallback

__all__ = ["FolderSummary", "upscale_folder"]


@dataclass(frozen=True)
class FolderSummary:
    """What :func:`upscale_folder` did: images and videos upscaled, files that failed, the network's factor."""

    images: int
    videos: int
    failed: int
    scale: int

    @property
    def done(self) -> int:
        return self.images + self.videos


def is_video_path(path: Path) -> bool:
    """Whether a folder job takes ``path`` as a video: a suffix the writer has a default codec for."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def upscale_folder(
    source: Path,
    destination: Path,
    *,
    options: UpscaleOptions,
    outscale: float | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    on_error: Callable[[Path, ElanVideoError], None] | None = None,
    on_done: Callable[[VideoSummary], None] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    segment: float | None = None,
    resume: bool = True,
    notify: Callable[[str], None] | None = None,
    model_for: Callable[[Path], str] | None = None,
    **video_options: Any,
) -> FolderSummary:
    """Upscale every image and video file directly in ``source`` into ``destination`` (created), same names.

    options: how the network runs (one Upscaler serves every file that takes the same model).
    model_for: where ``options.model`` is None, the bundled weights' name for each file (the command line gives
    lossily coded videos the codec-aware weights); without it, every file gets the bundled clean weights.
    outscale/overwrite, and for the videos ``segment``/``resume``/``notify`` and ``video_options`` (codec, pix_fmt,
    crf, preset, start, end, deinterlace): as for :func:`~elan_video.jobs.pipeline.upscale_video`; in a folder
    without videos any video option that is not None is refused. Videos are the files with a suffix of
    :data:`~elan_video.media.video.encoding.VIDEO_SUFFIXES`. workers/ray_address: the videos' segments run on a
    pool of that many Ray workers per model, in turn (see :mod:`~elan_video.jobs.distributed`), up to that many
    files at a time; images are upscaled here. A file that fails goes to ``on_error`` (the rest go on), one that
    is done to ``on_done``; progress is called after each file with (files done, files in all). Resumed, a
    network's "auto" options take what an unfinished video's finished segments were made with, before any file.

    Raises InputError (no image or video in ``source``), OutputError (``destination`` is a file, is ``source``
    or cannot be created) and OptionError before any file is read.
    """
    files = sorted(p for p in source.iterdir() if p.is_file() and (is_image_path(p) or is_video_path(p)))
    if not files:
        raise InputError(f"{source}: a folder without images or videos ({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
    videos = [p for p in files if is_video_path(p)]
    if not videos:
        scale_out = {"workers": workers if (workers or 1) > 1 else None, "ray_address": ray_address}
        check_image_options(source, **video_options, **scale_out)
    if str(destination) == STDOUT:
        raise OutputError(f"{source}: a folder's files go to a folder, not to standard output ({STDOUT})")
    if destination.exists() and not destination.is_dir():
        raise OutputError(f"{destination}: is a file; give a folder for the files of the folder {source}")
    if destination.exists() and destination.resolve() == source.resolve():
        raise OutputError(f"{destination}: is the input folder; choose another output folder")
    distributed = bool(videos) and ((workers or 1) > 1 or ray_address is not None)
    if distributed:
        from .distributed import require_ray

        require_ray(workers, ray_address)
    try:
        destination.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{destination}: cannot be created ({exc.strerror or exc})") from None
    # The model each file gets, as given (the summaries name it), and one network per model for all its files.
    given, options = options.model, with_scale(options, outscale)
    models = {path: given if given is not None or model_for is None else model_for(path) for path in files}
    upscalers: dict[object, Upscaler] = {}
    for model in models.values():
        if model not in upscalers:
            upscalers[model] = upscaler_for(options if model is given else UpscaleOptions.of(options, model=model))
    if resume and ray_address is None:
        # Before any file settles a shared network's "auto": an unfinished video's segments keep their choice.
        for path in videos:
            adopt_earlier_choice(upscalers[models[path]], path, destination / path.name)
    counts = _Counts(len(files), progress)

    def one(path: Path, pool: Any = None) -> None:
        settings: dict[str, Any] = {}
        if is_video_path(path):
            settings = {**video_options, "segment": segment, "resume": resume, "notify": notify, "pool": pool}
        upscaler = upscalers[models[path]]
        try:
            summary = upscale_video(
                path, destination / path.name, model=upscaler, overwrite=overwrite, outscale=outscale, **settings
            )
        except ElanVideoError as exc:
            if on_error is not None:
                on_error(path, exc)
            counts.add(path, failed=True)
            return
        if on_done is not None:  # the files' summaries get the Upscaler; they name its weights
            on_done(replace(summary, weights=weights_name(models[path], upscaler.scale)))
        counts.add(path, failed=False)

    for path in files:
        if not distributed or not is_video_path(path):  # with workers, the images first, here
            one(path)
    if distributed:
        for model, upscaler in upscalers.items():  # a pool holds one network: one pool per model, in turn
            group = [path for path in videos if models[path] == model]
            if group:
                _spread(group, one, upscaler, workers=workers, ray_address=ray_address, options=options)
    scale = options.scale
    assert scale is not None
    return FolderSummary(images=counts.images, videos=counts.videos, failed=counts.failed, scale=scale)


class _Counts:
    """Files done and failed so far (files may finish on several threads)."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total, self.progress = total, progress
        self.images = self.videos = self.failed = 0
        self.lock = threading.Lock()

    def add(self, path: Path, *, failed: bool) -> None:
        with self.lock:
            if failed:
                self.failed += 1
            elif is_video_path(path):
                self.videos += 1
            else:
                self.images += 1
            if self.progress is not None:
                self.progress(self.images + self.videos + self.failed, self.total)


def _spread(
    videos: list[Path],
    one: Callable[[Path, Any], None],
    upscaler: Upscaler,
    *,
    workers: int | None,
    ray_address: str | None,
    options: UpscaleOptions,
) -> None:
    """The folder's videos with their segments on one Ray pool, as many videos at a time as the pool has
    workers, so that short files do not leave workers idle."""
    from .distributed import ScaleOut, WorkerPool

    scale_out = ScaleOut(workers, ray_address, options.device)
    pool = WorkerPool(scale_out, upscaler, queue_size=8, cpu_threads=None, halt_on_failure=False, pictures=videos)
    with pool, ThreadPoolExecutor(max_workers=max(1, min(len(videos), pool.workers)), thread_name_prefix="file") as run:
        futures: list[Future[None]] = [run.submit(one, path, pool) for path in videos]
        try:
            # Failures are reported inside one(); an exception here is a bug or an interrupt.
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in finished:
                future.result()
        except BaseException:
            pool.halt()
            for future in futures:
                future.cancel()
            with contextlib.suppress(BaseException):
                wait(futures, timeout=60)
            raise
