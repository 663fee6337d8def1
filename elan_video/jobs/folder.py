"""The folder job: every image file directly in a folder upscaled into another folder, under the same names, with
one model for all; a file that fails is reported and the others go on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ElanVideoError, InputError, OutputError
from ..media.image import IMAGE_SUFFIXES, is_image_path
from ..model.options import UpscaleOptions
from ..model.upscaler import upscaler_for
from .pipeline import check_image_options, upscale_video, with_scale
from .streaming import ProgressCallback

__all__ = ["FolderSummary", "upscale_folder"]


@dataclass(frozen=True)
class FolderSummary:
    """What :func:`upscale_folder` did: images upscaled, images that failed, the network's factor."""

    done: int
    failed: int
    scale: int


def upscale_folder(
    source: Path,
    destination: Path,
    *,
    options: UpscaleOptions,
    outscale: float | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    on_error: Callable[[Path, ElanVideoError], None] | None = None,
    **video_options: object,
) -> FolderSummary:
    """Upscale every image file directly in ``source`` into ``destination`` (created) under the same names.

    options: how the network runs (one Upscaler serves every image). outscale/overwrite: as for
    :func:`~elan_video.jobs.pipeline.upscale_video`. ``video_options`` (codec, pix_fmt, crf, preset, start, end,
    deinterlace) apply to videos only: any that is not None is refused. A file that fails goes to ``on_error``
    and the rest go on; progress is called after each file with (files done, files in all).

    Raises InputError (no image in ``source``), OutputError (``destination`` is a file, is ``source`` or cannot
    be created) and OptionError before any image is read.
    """
    images = sorted(p for p in source.iterdir() if p.is_file() and is_image_path(p))
    if not images:
        raise InputError(f"{source}: a folder without images ({', '.join(IMAGE_SUFFIXES)})")
    check_image_options(source, **video_options)
    if destination.exists() and not destination.is_dir():
        raise OutputError(f"{destination}: is a file; give a folder for the images of the folder {source}")
    if destination.exists() and destination.resolve() == source.resolve():
        raise OutputError(f"{destination}: is the input folder; choose another output folder")
    try:
        destination.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{destination}: cannot be created ({exc.strerror or exc})") from None
    upscaler = upscaler_for(with_scale(options, outscale))
    failed = 0
    for done, image in enumerate(images, start=1):
        try:
            upscale_video(image, destination / image.name, model=upscaler, overwrite=overwrite, outscale=outscale)
        except ElanVideoError as exc:
            if on_error is not None:
                on_error(image, exc)
            failed += 1
        if progress is not None:
            progress(done, len(images))
    return FolderSummary(done=len(images) - failed, failed=failed, scale=upscaler.scale)
