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

__all__ = ["run_video_bench"]


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


def _write_clip(path: Path, images: list[np.ndarray]) -> None:
    """``images`` (H x W x 3 uint8) as an H.264 MP4 at 30 fps and near-transparent quality, like a camera's file."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(30), options={"crf": "18", "preset": "veryfast"})
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
    **settings: Any,
) -> dict[str, float | int | str]:
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
    """
    width, height = size
    if frames < 2:
        raise OptionError(f"frames must be at least 2, got {frames}")
    if width < 16 or height < 16:
        raise OptionError(f"size must be at least 16x16, got {width}x{height}")
    up = upscaler_for(UpscaleOptions.with_model(model, options, **settings))
    threads = default_cpu_threads() if up.device.type == "cpu" else torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="elan-bench-") as tmp:
        src = Path(tmp) / "bench_in.mp4"
        _write_clip(src, _synthetic_frames(frames, width, height))
        decode_s, decoded, info = _decode(src)
        infer_s, upscaled = _infer(up, np.stack([f.image for f in decoded]), threads=threads)
        enc = Path(tmp) / f"enc{container}"
        encode_s = _encode(enc, plan_encoder(enc, info, scale=up.scale, codec=codec), decoded, upscaled)
        summary = upscale_video(src, Path(tmp) / f"all{container}", model=up, codec=codec)
    n = len(decoded)
    return {
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
