"""The ``elan-video`` command line: upscale (default), bench, train, eval.

``elan-video IN OUT --scale 2`` runs the ``upscale`` command; library errors become one-line messages
with a non-zero exit status and no traceback.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import fields
from functools import partial, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import ElanVideoError, OptionError, OutputError
from .model.options import BACKENDS, NAMES, PRECISIONS, SCALES, UpscaleOptions

if TYPE_CHECKING:
    from .jobs.pipeline import VideoSummary

__all__ = ["main"]


class _DefaultGroup(click.Group):
    """A group that runs ``upscale`` when the first argument is not a sub-command name."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["upscale", *args]
        return super().parse_args(ctx, args)


def _fails_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Map the library's errors (and Ctrl-C) to one line on stderr and an exit status."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ElanVideoError as exc:
            click.echo(f"elan-video: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("elan-video: interrupted", err=True)
            sys.exit(130)

    return wrapper


_CLICK_TYPES: dict[str, Any] = {
    "scale": click.IntRange(min(SCALES), max(SCALES)),
    "precision": click.Choice(PRECISIONS),
    "backend": click.Choice(BACKENDS),
    "tile": int,
    "tile_overlap": int,
    "batch": int,
}


def model_option(name: str, *, multiple: bool = False, **overrides: Any) -> Callable[[Any], Any]:
    """The click option of the :class:`UpscaleOptions` field ``name`` (``--tile-overlap`` for tile_overlap), with
    its default and help from the field. ``multiple``: repeatable, collected as a tuple under ``name + "s"``
    (empty when not given)."""
    spec = next(f for f in fields(UpscaleOptions) if f.name == name)
    kwargs: dict[str, Any] = {"type": _CLICK_TYPES.get(name), "help": spec.metadata["help"]}
    if multiple:
        kwargs |= {"multiple": True, "help": f"{kwargs['help']} Repeat to compare [default: {spec.default}]."}
        dest = name + "s"
    else:
        default = spec.metadata.get("cli_default", spec.default)
        kwargs |= {"default": default, "show_default": default is not None}
        dest = name
    return click.option("--" + name.replace("_", "-"), dest, **(kwargs | overrides))


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every :class:`UpscaleOptions` field the command line offers, as options of the command."""
    for spec in reversed(fields(UpscaleOptions)):
        if spec.metadata.get("cli", True):
            func = model_option(spec.name)(func)
    return func


def _take_options(values: dict[str, Any]) -> UpscaleOptions:
    """Remove the :class:`UpscaleOptions` fields from a command's ``values`` and build the options from them."""
    return UpscaleOptions.of(**{name: values.pop(name) for name in NAMES if name in values})


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="elan-video")
def main() -> None:
    """Video and image super-resolution with ELAN.

    \b
    elan-video in.mp4 out.mp4 --scale 2     upscale a video (or a still image)
    elan-video photos/ photos_x2/           every image of a folder
    elan-video bench                        measure throughput
    elan-video eval --data DIR --scale 2    PSNR/SSIM by the standard protocol
    elan-video train --data DIR --scale 2 --out ckpt.pt
    """


@main.command()
@click.argument("source", type=click.Path(path_type=str))
@click.argument("destination", type=click.Path(path_type=str))
@click.option(
    "--outscale",
    type=click.FloatRange(0, 8, min_open=True),
    default=None,
    help="Final size as a multiple of the source's (e.g. 1.5 for 720p -> 1080p): Lanczos after the network "
    "[without --scale, the network's factor is the smallest of 2, 3, 4 at least this].",
)
@model_options
@click.option("--codec", default=None, help="Video encoder (default per container: libx264, libx265, libvpx-vp9...).")
@click.option("--pix-fmt", default=None, help="Encoder pixel format (default: the source's chroma, depth, alpha).")
@click.option("--crf", type=int, default=None, help="Constant-quality value for x264/x265/VP9/AV1.")
@click.option("--preset", default=None, help="Encoder speed preset (x264/x265/SVT-AV1).")
@click.option("--start", type=click.FloatRange(min=0), default=None, help="Seconds: begin at this time of SOURCE.")
@click.option("--end", type=click.FloatRange(min=0), default=None, help="Seconds: stop before this time of SOURCE.")
@click.option(
    "--deinterlace/--no-deinterlace",
    default=None,
    help="Deinterlace (FFmpeg bwdif, one frame per frame) before upscaling [default: when the source is interlaced].",
)
@click.option("--overwrite", "-y", is_flag=True, help="Replace DESTINATION if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary (warnings and errors still show).")
@click.option(
    "--segment",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds: a video is processed in keyframe-aligned segments of about this length, kept in a hidden work "
    "folder beside DESTINATION so that rerunning the same command after a crash or Ctrl-C resumes.",
)
@click.option("--no-resume", is_flag=True, help="Start over: discard the segments an earlier run left.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Process a video's segments (a folder's: its videos', several files at a time) on this many Ray workers "
    "(pip install 'elan-video[ray]'), on a Ray started for the job here, or on the --ray cluster [default: 1; with "
    "--ray, one per GPU of the cluster, else per node].",
)
@click.option("--ray", "ray_address", default=None, help="Run on the Ray cluster at this address (e.g. HOST:6379).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the job's summary as one JSON object on stdout (a folder's: its files' summaries and errors).",
)
@_fails_cleanly
def upscale(
    source: str,
    destination: str,
    quiet: bool,
    segment: float,
    no_resume: bool,
    workers: int | None,
    ray_address: str | None,
    as_json: bool,
    **values: Any,
) -> None:
    """Upscale SOURCE (video or image) into DESTINATION.

    A video written to .gif or .webp becomes an animation of its frames (no sound); DESTINATION - writes its
    frames to standard output as Y4M (elan-video in.mkv - | mpv -).

    Without --model, a lossily coded video gets the codec-aware elan-light-x{2,3,4}-video weights (x2 H.264 with
    a mean QP of 28 to 32: elan-light-x2-video-medium, 32 or more: -strong), and an image or a losslessly coded
    video the clean ones.

    A folder SOURCE upscales every image and video in it into the folder DESTINATION (created), under the same
    names, each file with the weights it would get alone (or --model's); with --workers, the videos' segments
    are spread over the workers, several files at a time.
    """
    import json
    import signal
    import threading
    import warnings

    from .errors import VideoWarning
    from .jobs.folder import upscale_folder
    from .jobs.pipeline import STDOUT, upscale_video
    from .jobs.workdir import work_folder_for

    options = _take_options(values)
    folder = Path(source).is_dir()
    if destination == STDOUT and as_json:
        raise OptionError(f"--json prints to standard output, which carries the video here ({STDOUT})")
    model_for: Callable[[Path], str] | None = None  # a folder's files: the weights each would get alone
    if options.model is None:
        from .jobs.default_weights import default_weights
        from .jobs.pipeline import with_scale

        scale = with_scale(options, values["outscale"]).scale
        assert scale is not None
        model_for = partial(default_weights, scale=scale)
        options = UpscaleOptions.of(options, scale=scale)
        if not folder:
            options = UpscaleOptions.of(options, model=model_for(Path(source)))
    console = _Console(unit="file" if folder else "frame")
    progress = None if quiet else console.progress

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # same clean-up as Ctrl-C: the temporary output is removed

    def failed_file(path: Path, exc: ElanVideoError) -> None:
        console.say(f"elan-video: error: {exc}")
        errors.append({"source": str(path), "error": str(exc)})

    def finished_file(summary: VideoSummary) -> None:
        files.append(summary)
        if summary.codec and not quiet:  # a line per video, not per image
            console.say(_summary_line(summary))

    files: list[VideoSummary] = []
    errors: list[dict[str, str]] = []

    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if on_main else None
    with warnings.catch_warnings():
        warnings.simplefilter("always", VideoWarning)
        warnings.showwarning = console.show
        try:
            job = {
                "options": options,
                "progress": progress,
                "segment": segment,
                "resume": not no_resume,
                "notify": None if quiet else console.say,
                "workers": workers,
                "ray_address": ray_address,
                **values,
            }
            if folder:
                result = upscale_folder(
                    Path(source),
                    Path(destination),
                    on_error=failed_file,
                    on_done=finished_file,
                    model_for=model_for,
                    **job,
                )
            else:
                summary = upscale_video(source, destination, **job)
        except KeyboardInterrupt:
            kept = work_folder_for(Path(destination))
            if kept.is_dir():  # only where segments were finished: see upscale_video
                click.echo(f"elan-video: interrupted ({kept} is kept: the same command resumes)", err=True)
                sys.exit(130)
            raise
        finally:
            console.close()
            if on_main:
                signal.signal(signal.SIGTERM, previous)
    if folder:
        if not quiet:
            failures = f", {result.failed} failed" if result.failed else ""
            factor = values["outscale"] or result.scale
            click.echo(
                f"{destination}: {_files(result.images, result.videos)} upscaled x{factor:g}{failures}", err=True
            )
        if as_json:
            done = {"images": result.images, "videos": result.videos, "failed": result.failed}
            report = {"output": destination, **done, "files": [_summary_json(f) for f in files], "errors": errors}
            click.echo(json.dumps(report))
        if result.failed:
            sys.exit(1)
        return
    if not quiet:
        click.echo(_summary_line(summary), err=True)
    if as_json:
        click.echo(json.dumps(_summary_json(summary)))


class _Console:
    """stderr while a job runs: a progress bar (created on the first report) and lines written above it."""

    def __init__(self, *, unit: str) -> None:
        self.unit = unit
        self.bar: Any = None

    def progress(self, done: int, total: int | None) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=self.unit, dynamic_ncols=True, leave=False, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def show(self, message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        """``warnings.showwarning`` for the job: one line per warning."""
        self.say(f"elan-video: warning: {message}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _summary_line(summary: VideoSummary) -> str:
    """One line on what :func:`~elan_video.jobs.pipeline.upscale_video` wrote."""
    w, h = summary.output_size
    network = f" [{summary.backend} {summary.precision}]" if summary.backend else ""
    if summary.weights:
        network = f", weights {summary.weights}{network}"
    if summary.codec:  # a video
        what = f"{summary.frames} frames, {summary.codec} {summary.pix_fmt}, {summary.seconds:.1f} s"
        return f"{summary.destination}: {w}x{h}, {what} ({summary.fps:.2f} fps){network}"
    what = "image" if summary.frames == 1 else f"animation of {summary.frames} pictures"
    return f"{summary.destination}: {w}x{h}, {what}, {summary.seconds:.1f} s{network}"


def _files(images: int, videos: int) -> str:
    """ "3 images", "2 videos", "3 images and 1 video" """
    parts = [f"{n} {what}{'s' if n != 1 else ''}" for n, what in ((images, "image"), (videos, "video")) if n]
    return " and ".join(parts) or "0 files"


def _summary_json(summary: VideoSummary) -> dict[str, Any]:
    """What ``--json`` prints: the job's summary, for scripts."""
    counts = summary.segments
    return {
        "output": str(summary.destination),
        "frames": summary.frames,
        "seconds": round(summary.seconds, 3),
        "fps": round(summary.fps, 3),
        "size": list(summary.output_size),
        "codec": summary.codec,
        "pix_fmt": summary.pix_fmt,
        "frames_lost": summary.frames_lost,
        "weights": summary.weights,
        "backend": summary.backend,
        "precision": summary.precision,
        "segments": None
        if counts is None
        else {"total": counts.total, "resumed": counts.resumed, "processed": counts.processed},
        "warnings": list(summary.warnings),
    }


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"size must look like 320x180, got {text!r}") from None
    if width < 1 or height < 1:
        raise click.BadParameter(f"size must be positive, got {text!r}")
    return width, height


@main.command()
@model_option("model")
@model_option("scale")
@click.option("--size", default="320x180", show_default=True, help="Input frame size WxH.")
@model_option("device")
@model_option("precision", multiple=True)
@model_option("backend", multiple=True)
@model_option("tile")
@model_option("tile_overlap")
@model_option("batch")
@click.option("--frames", type=click.IntRange(1), default=3, show_default=True, help="Timed frames per row.")
@click.option("--reference/--no-reference", default=True, help="Time the authors' unfused fp32 network too.")
@click.option("--video", is_flag=True, help="Also time decode, inference and encode of a synthetic H.264 clip.")
@click.option("--video-frames", type=click.IntRange(2), help="Frames of the --video clip [default: 4x --frames]")
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="With --video: also run the clip in segments on 1 and N workers (Ray): segmenting cost, scale-out efficiency.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@_fails_cleanly
def bench(size: str, precisions: tuple[str, ...], backends: tuple[str, ...], frames: int, reference: bool,
          video: bool, video_frames: int | None, workers: int | None, as_json: bool,
          **values: Any) -> None:  # fmt: skip
    """Measure ms per frame, fps and achieved GFLOP/s against this machine's matmul peak."""
    import json

    from .bench.frame import format_table, run_frame_bench

    if workers is not None and not video:
        raise click.UsageError("--workers needs --video")
    options = _take_options(values)
    result = run_frame_bench(
        options=options,
        size=_size(size),
        precisions=precisions or None,
        backends=backends or None,
        frames=frames,
        reference=reference,
    )
    if video:
        from .bench.video import format_scaling, run_video_bench

        first = {"precision": (precisions or (options.precision,))[0], "backend": (backends or (options.backend,))[0]}
        result["video"] = run_video_bench(
            options=UpscaleOptions.of(options, **first),
            size=_size(size),
            frames=video_frames or max(8, frames * 4),
            workers=workers,
        )
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(format_table(result))
    if video:
        stages = {k: v for k, v in result["video"].items() if k != "scaling"}
        cells = (f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stages.items())
        click.echo("\nvideo: " + ", ".join(cells))
        if "scaling" in result["video"]:
            click.echo("\n" + format_scaling(result["video"]))


@main.command(name="eval")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, path_type=str),
    help="A benchmark folder; with --degrade or --flicker also a video file (its first 10 frames, coded as one).",
)
@model_option("scale", default=2, show_default=True, help="The scale to evaluate, 2, 3 or 4.")
@model_option(
    "model",
    help="Bundled name, checkpoint path, 'bicubic', or with --degrade 'auto' (the weights the command line gives "
    "video coded that way) [default: elan-light-xS].",
)
@model_option("device")
@click.option(
    "--degrade",
    "degrades",
    multiple=True,
    help="Code the LR first: x264:CRF (a 6-frame pan), jpeg:Q or clean; report the gain over bicubic of the same "
    "LR. Repeatable.",
)
@click.option("--flicker", "with_flicker", is_flag=True, help="Also measure shimmer on a static noisy x264 clip.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@_fails_cleanly
def evaluate_command(
    data_dir: str,
    scale: int,
    model: str | None,
    device: str | None,
    degrades: tuple[str, ...],
    with_flicker: bool,
    as_json: bool,
) -> None:
    """Y-channel PSNR/SSIM on a benchmark folder (HR/ and optional LR_bicubic/XS/), border shaved by S.

    \b
    With --degrade or --flicker, the codec benchmark instead (docs/weights.md):
    elan-video eval --data Set5 --model elan-light-x2-video --degrade x264:23 --degrade x264:28 --degrade jpeg:50 \\
        --degrade clean --flicker
    elan-video eval --data Set5 --model auto --degrade x264:28   # the weights the command line would pick
    """
    import json

    if degrades or with_flicker:
        from .training.degrade import parse_codec
        from .training.evaluate import evaluate_degraded, first_picture, flicker

        for text in degrades:
            if text.strip().lower() != "clean":
                parse_codec(text)  # every spelling checked before the first (slow) run
        name = model or f"elan-light-x{scale}"
        runs = [evaluate_degraded(model, data_dir, scale=scale, degrade=d.lower(), device=device) for d in degrades]
        shimmer = None
        if with_flicker:
            first = first_picture(data_dir, scale=scale)
            shimmer = flicker(model, first[1], scale=scale, device=device)
        if as_json:
            doc = {"model": name, "scale": scale, "results": [r.to_dict() for r in runs]}
            if shimmer is not None:
                doc["flicker"] = shimmer.to_dict() | {"image": first[0]}
            click.echo(json.dumps(doc, indent=2))
            return
        click.echo(f"{Path(data_dir).resolve().name} x{scale}  model: {name}")
        if runs:
            click.echo(f"{'LR':<9}  {'PSNR':>7}  {'bicubic':>7}  {'gain':>6}")
            for r in runs:
                chosen = Counter(s.weights for s in r.images if s.weights is not None)
                used = "  " + ", ".join(f"{w} x{n}" for w, n in sorted(chosen.items())) if chosen else ""
                click.echo(f"{r.degrade:<9}  {r.psnr:7.2f}  {r.bicubic:7.2f}  {r.gain:+6.2f}{used}")
        if shimmer is not None:
            used = f" ({shimmer.weights})" if shimmer.weights is not None else ""
            click.echo(
                f"flicker ({first[0]}, static 160x120, noise 2, x264:28, keyint 6, 12 frames): "
                f"model{used} {shimmer.model:.3f}, bicubic {shimmer.bicubic:.3f}, ratio {shimmer.ratio:.2f}"
            )
        return

    from .training.evaluate import evaluate

    if Path(data_dir).is_file():
        raise OptionError(f"{data_dir}: a video benchmark needs --degrade (clean, x264:CRF, jpeg:Q) or --flicker")
    if model == "auto":
        raise OptionError(
            "--model auto picks weights by how the LR was coded: give --degrade (clean, x264:CRF, jpeg:Q)"
        )
    result = evaluate(model, data_dir, scale=scale, device=device)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    width = max(len(s.name) for s in result.images)
    click.echo(f"{result.dataset} x{scale}  model: {model or f'elan-light-x{scale}'}")
    click.echo(f"{'image':<{width}}  {'PSNR':>7}  {'SSIM':>6}")
    for s in result.images:
        click.echo(f"{s.name:<{width}}  {s.psnr:7.2f}  {s.ssim:6.4f}")
    click.echo(f"{'mean':<{width}}  {result.psnr:7.2f}  {result.ssim:6.4f}")


@main.command(name="train")
@click.option(
    "--config",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="A TOML recipe (training/x2.toml): keys named as these options; options given here override its values.",
)
@click.option("--data", "data_dirs", multiple=True, help="Folder(s) of HR training images [required, or in --config].")
@click.argument("more_data", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--scale", type=click.IntRange(2, 4), default=None, help="2, 3 or 4 [required, or in --config].")
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="Training checkpoint [required, or in --config].",
)
@click.option("--steps", type=click.IntRange(1), default=100_000, show_default=True, help="Length of the run.")
@click.option("--stop-at", type=click.IntRange(1), default=None, help="End this session after that step.")
@click.option("--init", default=None, help="Start from these weights (shape-mismatched tensors keep their init).")
@click.option("--resume", is_flag=True, help="Continue the run stored in --out.")
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--patch", type=click.IntRange(8), default=48, show_default=True, help="LR patch side.")
@click.option(
    "--degrade",
    type=click.Choice(["patch", "image", "video"]),
    default="patch",
    show_default=True,
    help="Bicubic of each HR crop, crops of each whole image's bicubic (no resize per step: for GPUs), or "
    "video: bicubic, then noise/blur and x264 or JPEG coding (for the -video weights).",
)
@click.option("--lr", type=float, default=None, help="Base learning rate [default: 5e-4; on --resume, the run's own].")
@click.option("--schedule", type=click.Choice(["cosine", "step"]), default="cosine", show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=0, show_default=True)
@click.option("--milestones", default="", help="Comma-separated steps where --schedule step multiplies lr by 0.5.")
@click.option("--ema-decay", type=float, default=0.999, show_default=True)
@click.option("--val", "val_dir", default=None, type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--val-every", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--save-every", type=click.IntRange(1), default=250, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option(
    "--fast-shift/--no-fast-shift",
    default=False,
    help="Shift by slicing (same function; faster where depthwise is slow).",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (default: torch's).")
@click.option("--export", default=None, help="Write the final EMA weights here (.safetensors).")
@click.option(
    "--anchor",
    default=None,
    help="Weights whose outputs on clean LR the run keeps (a fine-tune on --degrade video: elan-light-x2).",
)
@click.option(
    "--anchor-weight",
    type=click.FloatRange(0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Weight of the L1 distance to --anchor's outputs in the loss.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_fails_cleanly
def train_command(
    config: str | None,
    data_dirs: tuple[str, ...],
    more_data: tuple[str, ...],
    threads: int | None,
    milestones: str,
    quiet: bool,
    **options: Any,
) -> None:
    """Train ELAN-light on random crops of HR images (LR by MATLAB bicubic); checkpoints resume exactly.

    \b
    elan-video train --data T91 BSD200 --scale 2 --out ckpt/x2.pt --steps 20000 --val Set5 \\
        --export elan_video/weights/elan-light-x2.safetensors
    elan-video train --config training/x3.toml --steps 1000    # a recipe, one value overridden
    """
    from click.core import ParameterSource

    def given(name: str) -> bool:
        return click.get_current_context().get_parameter_source(name) is not ParameterSource.DEFAULT

    recipe: dict[str, Any] = {}
    if config is not None:
        from .training.config import read_train_config

        recipe = read_train_config(config)
        if not given("val_dir") and "val_dir" in recipe and not Path(recipe["val_dir"]).is_dir():
            raise OptionError(f"{config}: val_dir {recipe['val_dir']}: no such folder")
    # A value given on the command line beats the recipe's, which beats the option's default.
    recipe_data, recipe_threads = recipe.pop("data_dirs", []), recipe.pop("threads", None)
    recipe_stones = recipe.pop("milestones", None)
    data = [*data_dirs, *more_data] or recipe_data
    if not given("threads") and recipe_threads is not None:
        threads = recipe_threads
    try:
        stones = tuple(int(m) for m in milestones.split(",") if m.strip())
    except ValueError:
        raise OptionError(f"milestones must be comma-separated integers, got {milestones!r}") from None
    if not given("milestones") and recipe_stones is not None:
        stones = recipe_stones
    for key, value in recipe.items():
        if key not in options or not given(key):
            options[key] = value  # "arch" and "gamma" exist only in recipes
    if options["resume"] and not given("init"):
        options["init"] = None  # a recipe's init is how its run began; --resume continues the run stored in --out
    required = {"--data": ("data_dirs", data), "--scale": ("scale", options["scale"]), "--out": ("out", options["out"])}
    for option, (key, value) in required.items():
        if not value:
            where = config if config is not None else "a --config file"
            raise OptionError(f"{option} is required: give it on the command line or as {key} in {where}")

    import warnings

    import torch
    from tqdm import tqdm

    from .training.train import train

    if threads is not None:
        torch.set_num_threads(threads)
    bar = None if quiet else tqdm(total=options["stop_at"] or options["steps"], unit="step", dynamic_ncols=True)

    def on_step(info: Any) -> None:
        if bar is not None:
            if bar.n == 0 and info.step > 1:
                bar.update(info.step - 1)
            bar.update(1)
            bar.set_postfix(loss=f"{info.loss:.2f}", lr=f"{info.lr:.2e}")

    def on_validate(step: int, result: Any) -> None:
        line = f"step {step}: {result.dataset} x{result.scale} PSNR {result.psnr:.3f} dB  SSIM {result.ssim:.4f}"
        if bar is not None:
            bar.write(line)
        else:
            click.echo(line)

    def show_warning(message: Warning | str, *_: object, **__: object) -> None:
        click.echo(f"elan-video: warning: {message}", err=True)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RuntimeWarning)
            warnings.showwarning = show_warning
            train(data, milestones=stones, on_step=on_step, on_validate=on_validate, **options)
    finally:
        if bar is not None:
            bar.close()
    if options["export"] and not quiet:
        click.echo(f"exported {options['export']}", err=True)


@main.command(name="export")
@click.argument("source")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=str))
@click.option("--overwrite", "-y", is_flag=True, help="Replace an existing DESTINATION.")
@click.option("--size", default=None, help="ONNX: a static input size WxH (TensorRT builds these best) [default: any].")
@click.option("--batch", type=click.IntRange(1), default=None, help="ONNX: a static batch size [default: any].")
@click.option(
    "--fp16",
    is_flag=True,
    help="ONNX: float16 weights, input and output (attention logits in float32). safetensors: float16 weights "
    "(half the file; output within one level).",
)
@click.option("--opset", type=click.IntRange(17), default=18, show_default=True, help="ONNX: operator set version.")
@_fails_cleanly
def export_command(
    source: str, destination: str, overwrite: bool, size: str | None, batch: int | None, fp16: bool, opset: int
) -> None:
    """Write the weights in SOURCE (a bundled name, a checkpoint, a training run's file) as DESTINATION.

    \b
    The suffix picks the format:
      .safetensors  the weights and their configuration (this project's format)
      .onnx         the network for vs-mlrt, chaiNNer, ONNX Runtime, OpenVINO, TensorRT:
                    input N x 3 x H x W RGB in 0..1, output N x 3 x sH x sW in 0..1
    elan-video export elan-light-x2 elan_x2.onnx
    elan-video export ckpt/x2.pt elan_x2_540p.onnx --size 960x540 --batch 1 --fp16

    A .safetensors copy of a .safetensors SOURCE keeps its provenance (training degradation, blend).
    """
    from .model.checkpoint import load_model, provenance, save_safetensors

    target = Path(destination)
    if target.suffix not in (".safetensors", ".onnx"):
        raise OptionError(f"destination must end in .safetensors or .onnx, got {destination!r}")
    onnx_only = {"--size": size is not None, "--batch": batch is not None}
    if target.suffix != ".onnx" and any(onnx_only.values()):
        given = ", ".join(k for k, v in onnx_only.items() if v)
        raise OptionError(f"{given}: only for an .onnx destination, got {destination!r}")
    if target.exists() and not overwrite:
        raise OptionError(f"{destination} exists (use --overwrite to replace it)")
    if target.parent.exists() and not target.parent.is_dir():
        raise OutputError(f"{destination}: {target.parent} is not a folder")
    if not target.parent.is_dir():
        raise OutputError(f"{destination}: the folder {target.parent} does not exist")
    try:
        shape = None if size is None else _size(size)
    except click.BadParameter as exc:
        raise OptionError(f"--size: {exc.message}") from None
    model = load_model(source)
    if target.suffix == ".onnx":
        from .model.export import export_onnx

        export_onnx(
            model,
            target,
            size=shape,
            batch=batch,
            half=fp16,
            opset=opset,
            progress=lambda line: click.echo(line, err=True),
        )
    else:
        partial = target.with_name(f".{target.name}.partial")
        try:
            save_safetensors(model, partial, metadata=provenance(source), half=fp16)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    click.echo(f"{destination}: ELAN x{model.scale}, {model.c_elan} channels, {len(model.body)} ELABs", err=True)
