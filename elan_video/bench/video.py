"""Video-mode benchmark: decode, inference and encode throughput measured separately, then the whole pipeline."""

from __future__ import annotations

import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from ..errors import OptionError
from ..jobs.pipeline import upscale_video
from ..jobs.streaming import default_cpu_threads
from ..media.video import DecodedFrame, EncoderPlan, VideoInfo, VideoReader, VideoWriter, plan_encoder
from ..model.arch import ELAN
from ..model.options import UpscaleOptions
from ..model.upscaler import Upscaler, upscaler_for

__all__ = ["format_scaling", "run_video_bench"]

KEYFRAME_INTERVAL = 15
"""Frames between keyframes of the clip that segmented runs cut (0.5 s at 30 fps, like a streaming camera's)."""


def _synthetic_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """A slow pan over a smooth-plus-detailed texture: compresses and decodes like camera footage, not noise."""
    rng = np.random.default_rng(0)
    texture_w = width + 4 * count
    y, x = np.mgrid[0:height, 0:texture_w].astype(np.float32)
    red = 128 + 90 * np.sin(x / 23.0) * np.cos(y / 17.0)
    green = 128 + 90 * np.sin((x + y) / 31.0)
    blue = 110 + 80 * np.cos(x / 41.0)
    base = np.stack([red, green, blue], axis=-1)
    base += rng.normal(0, 6, base.shape)  # fine detail for the network and the encoder to work on
    texture = np.clip(base, 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(texture[:, 4 * i : 4 * i + width]) for i in range(count)]


def _write_clip(path: Path, images: list[np.ndarray], *, keyint: int | None = None) -> None:
    """``images`` (H x W x 3 uint8) as an H.264 MP4 at 30 fps and near-transparent quality, like a camera's file;
    ``keyint``: a keyframe every that many frames (None: x264's default, one in 250)."""
    options = {"crf": "18", "preset": "veryfast"}
    if keyint is not None:
        options |= {"g": str(keyint), "keyint_min": str(keyint), "sc_threshold": "0"}
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(30), options=options)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _decode(src: Path) -> tuple[float, list[DecodedFrame], VideoInfo]:
    """Seconds taken to decode every video frame of ``src`` to RGB as the pipeline reads them, the frames, the
    source's description."""
    start = time.perf_counter()
    with VideoReader(src) as reader:
        frames = [item for item in reader.items() if isinstance(item, DecodedFrame)]
        info = reader.info
    return time.perf_counter() - start, frames, info


def _infer(up: Upscaler, images: np.ndarray, *, threads: int) -> tuple[float, np.ndarray]:
    """Seconds taken to upscale ``images`` (N x H x W x 3 uint8) batch by batch with ``threads`` PyTorch threads,
    and the N x sH x sW x 3 result; one warm-up batch first (precision probe, backend build, allocator), untimed."""
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        up.upscale_batch(images[: up.batch])
        start = time.perf_counter()
        outputs = [up.upscale_batch(images[i : i + up.batch]) for i in range(0, len(images), up.batch)]
        return time.perf_counter() - start, np.concatenate(outputs)
    finally:
        torch.set_num_threads(saved_threads)


def _encode(dst: Path, plan: EncoderPlan, frames: list[DecodedFrame], images: np.ndarray) -> float:
    """Seconds taken to convert, encode and mux ``images`` to ``dst`` with the source ``frames``' timestamps."""
    start = time.perf_counter()
    with VideoWriter(dst, plan) as writer:
        for frame, image in zip(frames, images, strict=True):
            writer.write(image, frame.pts)
    return time.perf_counter() - start


def run_video_bench(
    model: ELAN | str | Path | Upscaler | None = None,
    *,
    options: UpscaleOptions | None = None,
    size: tuple[int, int] = (320, 180),
    frames: int = 24,
    codec: str = "libx264",
    container: str = ".mp4",
    workers: int | None = None,
    segment: float | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Measure the video path stage by stage on a synthetic clip of ``frames`` frames of ``size`` (width, height).

    The clip (a slow pan over a textured picture, H.264 in MP4) is written to a temporary folder, then:
    decode_fps: demux + decode + YUV->RGB conversion of every frame (``VideoReader``);
    infer_fps: the network alone on the decoded frames (already in memory, after one warm-up batch),
    including host<->device transfers and uint8 conversion, with the PyTorch thread count the pipeline
    uses on the CPU (``cpu_threads``);
    encode_fps: RGB->YUV conversion + ``codec`` encoding + muxing of the upscaled frames;
    total_fps: ``upscale_video`` end to end, where the three stages overlap in threads.
    Everything is wall-clock frames per second. model, and options or ``settings`` (its fields as keywords): the
    model and how it runs, see :class:`~elan_video.model.options.UpscaleOptions` (the model may be a ready
    Upscaler).
    Returns those four numbers plus the run's parameters (frames, width, height, out_width, out_height, device,
    precision, codec, cpu_threads).

    workers: also run the job in keyframe-aligned segments of ``segment`` seconds (None: about four per worker;
    the clip then has a keyframe every :data:`KEYFRAME_INTERVAL` frames), on one worker (this process, as
    ``--workers 1``) and, when more than one, on ``workers`` Ray actors; the result's "scaling" rows (see
    :func:`format_scaling`) give each run's fps, the cost of segmenting at one worker against the plain stream
    (``total_fps``'s run) and the N workers' speed-up and efficiency (their fps against N x the one worker's).
    A local Ray is started for it, untimed (``ray_start_s``), unless the process is already connected; each
    job's time includes starting its actors and loading the model in them.
    """
    width, height = size
    if frames < 2:
        raise OptionError(f"frames must be at least 2, got {frames}")
    if width < 16 or height < 16:
        raise OptionError(f"size must be at least 16x16, got {width}x{height}")
    if workers is not None and workers < 1:
        raise OptionError(f"workers must be at least 1, got {workers}")
    if segment is not None and not segment > 0:
        raise OptionError(f"segment must be a positive number of seconds, got {segment}")
    up = upscaler_for(UpscaleOptions.with_model(model, options, **settings))
    threads = default_cpu_threads() if up.device.type == "cpu" else torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="elan-bench-") as tmp:
        src = Path(tmp) / "bench_in.mp4"
        _write_clip(src, _synthetic_frames(frames, width, height), keyint=KEYFRAME_INTERVAL if workers else None)
        decode_s, decoded, info = _decode(src)
        infer_s, upscaled = _infer(up, np.stack([f.image for f in decoded]), threads=threads)
        enc = Path(tmp) / f"enc{container}"
        encode_s = _encode(enc, plan_encoder(enc, info, scale=up.scale, codec=codec), decoded, upscaled)
        summary = upscale_video(src, Path(tmp) / f"all{container}", model=up, codec=codec)
        scaling = None
        if workers is not None:
            seconds = segment or len(decoded) / 30 / (4 * workers)
            scaling = _scaling(src, Path(tmp), up, codec, container, workers, seconds, plain=summary)
    n = len(decoded)
    result: dict[str, Any] = {
        "frames": n,
        "width": width,
        "height": height,
        "out_width": width * up.scale,
        "out_height": height * up.scale,
        "device": str(up.device),
        "precision": up.precision,
        "codec": codec,
        "cpu_threads": threads,
        "decode_fps": n / decode_s,
        "infer_fps": n / infer_s,
        "encode_fps": n / encode_s,
        "total_fps": summary.frames / summary.seconds,
    }
    if scaling is not None:
        result |= scaling
    return result


def _scaling(
    src: Path, tmp: Path, up: Upscaler, codec: str, container: str, workers: int, seconds: float, *, plain: Any
) -> dict[str, Any]:
    """The segmented runs of :func:`run_video_bench` (``plain``: the one-stream run's summary)."""
    one_stream = {"run": "one stream", "workers": 1, "segments": 1, "seconds": plain.seconds}
    rows: list[dict[str, Any]] = [one_stream | {"fps": plain.frames / plain.seconds}]
    extra: dict[str, Any] = {"segment_s": seconds}
    started = False
    try:
        for n in sorted({1, workers}):
            if n > 1 and not started:
                from ..jobs.distributed import ScaleOut, _connect, require_ray

                require_ray(n, None)
                began = time.perf_counter()
                started = _connect(ScaleOut(n, None, up.device))
                extra["ray_start_s"] = time.perf_counter() - began
            dst = tmp / f"segments-{n}{container}"
            summary = upscale_video(src, dst, model=up, codec=codec, segment=seconds, workers=n)
            segments = summary.segments.total if summary.segments is not None else 1
            fps = summary.frames / summary.seconds
            rows.append({"run": "segments", "workers": n, "segments": segments, "seconds": summary.seconds, "fps": fps})
    finally:
        if started:
            import ray

            ray.shutdown()
    base, one = rows[0]["fps"], rows[1]["fps"]
    rows[1]["overhead"] = base / one - 1  # extra time per frame against the plain stream: 0.05 is 5 % slower
    for row in rows[1:]:
        row["speedup"] = row["fps"] / one
        row["efficiency"] = row["fps"] / (row["workers"] * one)
    return extra | {"scaling": rows}


def format_scaling(result: dict[str, Any]) -> str:
    """The "scaling" rows of :func:`run_video_bench`'s result as a Markdown table (what the CLI prints)."""
    lines = [
        f"segments of {result['segment_s']:.3g} s, {result['frames']} frames"
        + (f"; Ray started in {result['ray_start_s']:.1f} s (untimed)" if "ray_start_s" in result else ""),
        "",
        "| run | workers | segments | seconds | fps | vs one stream | speed-up | efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["scaling"]:
        overhead = f"{r['overhead']:+.1%}" if "overhead" in r else ""
        speedup = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        efficiency = f"{r['efficiency']:.0%}" if "efficiency" in r else ""
        lines.append(
            f"| {r['run']} | {r['workers']} | {r['segments']} | {r['seconds']:.2f} | {r['fps']:.2f} | {overhead} "
            f"| {speedup} | {efficiency} |"
        )
    return "\n".join(lines)
