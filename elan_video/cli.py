"""The ``elan-video`` command line: upscale (default), bench, train, eval.

``elan-video IN OUT --scale 2`` runs the ``upscale`` command; library errors become one-line messages
with a non-zero exit status and no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import ElanVideoError, OptionError

if TYPE_CHECKING:
    from .jobs.pipeline import VideoSummary

__all__ = ["main"]

_MODEL_OPTIONS = ("model", "device", "precision", "backend", "tile", "tile_overlap", "batch")


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


# One definition for upscale (through model_options) and bench.
_tile_option = click.option(
    "--tile",
    type=int,
    default=None,
    help="Tile side in input pixels (default: whole frames where they fit in half the free memory).",
)


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that runs the network."""
    options = [
        click.option("--model", default=None, help="Bundled name (elan-light-x2|x3|x4) or checkpoint path."),
        click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)."),
        click.option(
            "--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True
        ),
        click.option(
            "--backend",
            type=click.Choice(["eager", "torchscript", "compile", "tensorrt"]),
            default="eager",
            show_default=True,
        ),
        _tile_option,
        click.option("--tile-overlap", type=int, default=32, show_default=True),
        click.option("--batch", type=int, default=1, show_default=True, help="Frames or tiles per network call."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


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
    "--scale",
    type=click.IntRange(2, 4),
    default=None,
    help="The network's factor [default: the --model's; else 2, or the smallest of 2, 3, 4 at least --outscale].",
)
@click.option(
    "--outscale",
    type=click.FloatRange(0, 8, min_open=True),
    default=None,
    help="Final size as a multiple of the source's (e.g. 1.5 for 720p -> 1080p): Lanczos after the network.",
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
@_fails_cleanly
def upscale(source: str, destination: str, scale: int | None, quiet: bool, **options: Any) -> None:
    """Upscale SOURCE (video or image) into DESTINATION.

    A folder SOURCE upscales every image in it into the folder DESTINATION (created), under the same names.
    """
    import signal
    import threading
    import warnings

    from .errors import VideoWarning
    from .jobs.pipeline import upscale_video

    if scale is None and options["model"] is not None:
        from .model.checkpoint import load_model

        options["model"] = load_model(options["model"])  # loaded once, here, to learn its factor
        scale = options["model"].scale
    elif scale is None:
        outscale = options["outscale"]
        scale = 2 if outscale is None else next((s for s in (2, 3, 4) if s >= outscale), 4)
    folder = Path(source).is_dir()
    console = _Console(unit="image" if folder else "frame")
    progress = None if quiet else console.progress

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # same clean-up as Ctrl-C: the temporary output is removed

    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if on_main else None
    with warnings.catch_warnings():
        warnings.simplefilter("always", VideoWarning)
        warnings.showwarning = console.show
        try:
            if folder:
                done, failed = _upscale_folder(
                    Path(source), Path(destination), scale=scale, progress=progress, say=console.say, **options
                )
            else:
                summary = upscale_video(source, destination, scale=scale, progress=progress, **options)
        finally:
            console.close()
            if on_main:
                signal.signal(signal.SIGTERM, previous)
    if folder:
        if not quiet:
            failures = f", {failed} failed" if failed else ""
            factor = options["outscale"] or scale
            click.echo(f"{destination}: {done} images upscaled x{factor:g}{failures}", err=True)
        if failed:
            sys.exit(1)
    elif not quiet:
        click.echo(_summary_line(summary), err=True)


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
    if summary.codec:  # a video
        what = f"{summary.frames} frames, {summary.codec} {summary.pix_fmt}, {summary.seconds:.1f} s"
        return f"{summary.destination}: {w}x{h}, {what} ({summary.fps:.2f} fps)"
    what = "image" if summary.frames == 1 else f"animation of {summary.frames} pictures"
    return f"{summary.destination}: {w}x{h}, {what}, {summary.seconds:.1f} s"


def _upscale_folder(
    source: Path,
    destination: Path,
    *,
    scale: int,
    progress: Callable[[int, int], None] | None,
    say: Callable[[str], None],
    **options: Any,
) -> tuple[int, int]:
    """Upscale every image file directly in ``source`` into ``destination`` under the same names, with one
    model for all. A file that fails is reported on one line (through ``say``) and the rest go on. Returns
    (done, failed)."""
    from .errors import InputError, OutputError
    from .jobs.pipeline import check_image_options, upscale_video
    from .media.image import IMAGE_SUFFIXES, is_image_path
    from .model.upscaler import Upscaler

    images = sorted(p for p in source.iterdir() if p.is_file() and is_image_path(p))
    if not images:
        raise InputError(f"{source}: a folder without images ({', '.join(IMAGE_SUFFIXES)})")
    video_only = ("codec", "pix_fmt", "crf", "preset", "start", "end", "deinterlace")
    check_image_options(source, **{key: options[key] for key in video_only})
    if destination.exists() and not destination.is_dir():
        raise OutputError(f"{destination}: is a file; give a folder for the images of the folder {source}")
    if destination.exists() and destination.resolve() == source.resolve():
        raise OutputError(f"{destination}: is the input folder; choose another output folder")
    try:
        destination.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{destination}: cannot be created ({exc.strerror or exc})") from None
    settings = {key: options.pop(key) for key in _MODEL_OPTIONS if key != "model"}
    upscaler = Upscaler(options.pop("model"), scale=scale, **settings)
    failed = 0
    for done, image in enumerate(images, start=1):
        try:
            upscale_video(
                image,
                destination / image.name,
                scale=scale,
                model=upscaler,
                overwrite=options["overwrite"],
                outscale=options["outscale"],
            )
        except ElanVideoError as exc:
            say(f"elan-video: error: {exc}")
            failed += 1
        if progress is not None:
            progress(done, len(images))
    return len(images) - failed, failed


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"size must look like 320x180, got {text!r}") from None
    if width < 1 or height < 1:
        raise click.BadParameter(f"size must be positive, got {text!r}")
    return width, height


@main.command()
@click.option("--model", default=None, help="Bundled name or checkpoint path (default: elan-light-xS).")
@click.option("--scale", type=click.IntRange(2, 4), default=2, show_default=True)
@click.option("--size", default="320x180", show_default=True, help="Input frame size WxH.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option(
    "--precision",
    "precisions",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    multiple=True,
    help="Repeat to compare (default: auto).",
)
@click.option(
    "--backend",
    "backends",
    type=click.Choice(["eager", "torchscript", "compile", "tensorrt"]),
    multiple=True,
    help="Repeat to compare (default: eager).",
)
@_tile_option
@click.option("--tile-overlap", type=int, default=32, show_default=True)
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--frames", type=click.IntRange(1), default=3, show_default=True, help="Timed frames per row.")
@click.option("--reference/--no-reference", default=True, help="Time the authors' unfused fp32 network too.")
@click.option("--video", is_flag=True, help="Also time decode, inference and encode of a synthetic H.264 clip.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@_fails_cleanly
def bench(size: str, precisions: tuple[str, ...], backends: tuple[str, ...], video: bool, as_json: bool,
          **options: Any) -> None:  # fmt: skip
    """Measure ms per frame, fps and achieved GFLOP/s against this machine's matmul peak."""
    import json

    from .bench.frame import format_table, run_frame_bench

    result = run_frame_bench(
        size=_size(size), precisions=precisions or ("auto",), backends=backends or ("eager",), **options
    )
    if video:
        from .bench.video import run_video_bench

        result["video"] = run_video_bench(
            options["model"],
            scale=options["scale"],
            size=_size(size),
            frames=max(8, options["frames"] * 4),
            device=options["device"],
            precision=(precisions or ("auto",))[0],
            backend=(backends or ("eager",))[0],
            tile=options["tile"],
            tile_overlap=options["tile_overlap"],
            batch=options["batch"],
        )
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(format_table(result))
    if video:
        stages = result["video"]
        cells = (f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stages.items())
        click.echo("\nvideo: " + ", ".join(cells))


@main.command(name="eval")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--scale", type=click.IntRange(2, 4), default=2, show_default=True)
@click.option("--model", default=None, help="Bundled name, checkpoint path, or 'bicubic' (default: elan-light-xS).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@_fails_cleanly
def evaluate_command(data_dir: str, scale: int, model: str | None, device: str | None, as_json: bool) -> None:
    """Y-channel PSNR/SSIM on a benchmark folder (HR/ and optional LR_bicubic/XS/), border shaved by S."""
    import json

    from .training.evaluate import evaluate

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
@click.option("--data", "data_dirs", required=True, multiple=True, help="Folder(s) of HR training images.")
@click.argument("more_data", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--scale", type=click.IntRange(2, 4), required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=str), help="Training checkpoint.")
@click.option("--steps", type=click.IntRange(1), default=100_000, show_default=True, help="Length of the run.")
@click.option("--stop-at", type=click.IntRange(1), default=None, help="End this session after that step.")
@click.option("--init", default=None, help="Start from these weights (shape-mismatched tensors keep their init).")
@click.option("--resume", is_flag=True, help="Continue the run stored in --out.")
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--patch", type=click.IntRange(8), default=48, show_default=True, help="LR patch side.")
@click.option(
    "--degrade",
    type=click.Choice(["patch", "image"]),
    default="patch",
    show_default=True,
    help="Bicubic of each HR crop, or crops of each whole image's bicubic (no resize per step: for GPUs).",
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
@click.option("--fast-shift", is_flag=True, help="Shift by slicing (same function; faster where depthwise is slow).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (default: torch's).")
@click.option("--export", default=None, help="Write the final EMA weights here (.safetensors).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_fails_cleanly
def train_command(
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
    """
    import torch
    from tqdm import tqdm

    from .training.train import train

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        stones = tuple(int(m) for m in milestones.split(",") if m.strip())
    except ValueError:
        raise OptionError(f"milestones must be comma-separated integers, got {milestones!r}") from None
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

    try:
        train(
            [*data_dirs, *more_data],
            milestones=stones,
            on_step=on_step,
            on_validate=on_validate,
            **options,
        )
    finally:
        if bar is not None:
            bar.close()
    if options["export"] and not quiet:
        click.echo(f"exported {options['export']}", err=True)


@main.command(name="export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("destination", type=click.Path(dir_okay=False, path_type=str))
@click.option("--overwrite", "-y", is_flag=True, help="Replace an existing DESTINATION.")
@_fails_cleanly
def export_command(checkpoint: str, destination: str, overwrite: bool) -> None:
    """Write the weights in CHECKPOINT (a training checkpoint's EMA, or any loadable file) as .safetensors."""
    from pathlib import Path

    from .model.checkpoint import load_model, save_safetensors

    target = Path(destination)
    if target.suffix != ".safetensors":
        raise OptionError(f"destination must end in .safetensors, got {destination!r}")
    if target.exists() and not overwrite:
        raise OptionError(f"{destination} exists (use --overwrite to replace it)")
    model = load_model(checkpoint)
    partial = target.with_name(f".{target.name}.partial")
    save_safetensors(model, partial)
    partial.replace(target)
    click.echo(f"{destination}: ELAN x{model.scale}, {model.c_elan} channels, {len(model.body)} ELABs", err=True)
