"""Throughput of the network on frames: ms/frame, fps, GFLOP/s and the share of this machine's matmul peak.

The reference row is the faithful network (the authors' operations, unfused, fp32 eager) on the same
frame; every other row reports its speed-up over it and the PSNR of its output against it.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import CheckpointError, OptionError
from ..model.arch import ELAN
from ..model.backends import parse_device, to_dtype
from ..model.checkpoint import load_model
from ..model.options import UpscaleOptions
from ..model.runtimes import RUNTIMES, runtime_precisions
from ..model.upscaler import Upscaler, peak_of, psnr, to_network

__all__ = ["BenchRow", "count_flops", "measure_peak", "run_frame_bench"]


@dataclass(frozen=True)
class BenchRow:
    """One measured configuration (times are the median over ``frames`` timed frames)."""

    backend: str
    precision: str
    ms_per_frame: float
    fps: float
    gflops: float
    peak_fraction: float
    speedup: float
    psnr_db: float


@functools.cache
def measure_peak(device_type: str, precision: str, *, n: int | None = None) -> float:
    """This machine's dense matmul throughput in GFLOP/s (best of 5 runs of an n^3 product).

    n defaults to 1024 on a CPU and 8192 on a GPU, which reaches its peak only on large products (a 1024
    product gave 28-30 TFLOP/s fp32 on an H100, far under what the card does on large ones).
    """
    dev = torch.device(device_type)
    n = n or (8192 if dev.type == "cuda" else 1024)
    a = torch.randn(n, n, device=dev).to(to_dtype(precision))
    best = float("inf")
    with torch.inference_mode():
        a @ a
        for _ in range(5):
            _sync(dev)
            start = time.perf_counter()
            a @ a
            _sync(dev)
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def count_flops(model: ELAN, *, height: int, width: int) -> int:
    """FLOPs of one forward pass of ``model`` on a height x width frame (convs, matmuls, as executed).

    Counted on a copy on the meta device: shapes only, so a 4K frame costs no more than a small one, and
    ``model`` stays where it is.
    """
    shadow = copy.deepcopy(model).to("meta")
    x = torch.zeros(1, model.colors, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        shadow(x)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(run: Callable[[], object], device: torch.device, frames: int) -> float:
    run()  # warm-up: builds backends, measures "auto", fills caches
    times = []
    for _ in range(frames):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _bench_model(model: object, scale: int | None) -> tuple[ELAN, str]:
    if isinstance(model, Upscaler):
        raise OptionError("the frame bench builds an Upscaler per row; give it the model, not an Upscaler")
    if model is not None:
        net = model if isinstance(model, ELAN) else load_model(model)  # type: ignore[arg-type]
        if scale is not None and net.scale != scale:
            raise OptionError(f"scale {scale} does not match the model, which upscales x{net.scale}")
        return net, "given" if isinstance(model, ELAN) else str(model)
    name = f"elan-light-x{scale or 2}"
    try:
        return load_model(name), name
    except CheckpointError:
        # Speed does not depend on the weights' values; say so rather than fail.
        return ELAN(scale=scale or 2).eval(), f"ELAN-light x{scale or 2}, random init ({name} not installed)"


def run_frame_bench(
    model: ELAN | str | Path | None = None,
    *,
    options: UpscaleOptions | None = None,
    size: tuple[int, int] = (320, 180),
    precisions: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    frames: int = 3,
    reference: bool = True,
    seed: int = 0,
    **settings: Any,
) -> dict[str, object]:
    """Time ``upscale_image`` on one (width, height) = ``size`` RGB frame for each backend x precision.

    model, and options or ``settings`` (its fields as keywords): the model and how it runs, see
    :class:`~elan_video.model.options.UpscaleOptions`; ``precisions`` and ``backends`` list the rows to time
    (default: the options' own precision and backend). The reference row is timed first, before any Upscaler
    exists, so it runs with the process's default memory allocator like the authors' code as published (see
    :mod:`elan_video.model.allocator`).

    Returns a dict with the machine (device, threads, fp32 peak GFLOP/s), the model, the frame's FLOPs
    and ``rows`` (one :class:`BenchRow` dict each; ``peak_fraction`` is against the matmul peak
    measured at that row's precision). With ``reference``, the first row times the faithful
    unfused fp32 network (the authors' operations) and the other rows' speed-ups and PSNRs refer to it.
    """
    options = UpscaleOptions.with_model(model, options, **settings)
    dev = parse_device(options.device)
    net, model_name = _bench_model(options.model, options.scale)
    width, height = size
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    # A smooth picture with detail, so PSNR compares like on real frames (pure noise saturates the clamp).
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.clip(image // 8 + 100 + 80 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 7.0)[..., None], 0, 255)
    image = image.astype(np.uint8)
    flops = count_flops(net, height=height, width=width)
    peak = measure_peak(dev.type, "fp32")
    rows: list[BenchRow] = []
    expected = None
    ref_seconds = None
    if reference:
        faithful = net.to(dev)
        x = to_network(torch.from_numpy(image).to(dev)[None], peak=peak_of(image.dtype))

        def run_reference() -> torch.Tensor:
            with torch.inference_mode():
                return faithful(x)

        ref_seconds = _median_seconds(run_reference, dev, max(1, min(frames, 2)))
        expected = Upscaler.to_array(run_reference(), np.uint8)[0]
        rows.append(_row("authors (unfused)", "fp32", ref_seconds, flops, peak, 1.0, float("inf")))
    for backend in backends or (options.backend,):
        for precision in precisions or (options.precision,):
            if not _offers(backend, precision):
                continue
            up = Upscaler.from_options(
                UpscaleOptions.of(options, model=net, device=dev, precision=precision, backend=backend)
            )
            seconds = _median_seconds(lambda up=up: up(image), dev, frames)
            out = up(image)
            speedup = ref_seconds / seconds if ref_seconds else float("nan")
            quality = psnr(out, expected) if expected is not None else float("nan")
            label = precision if precision != "auto" else f"auto={up.precision}"
            row_peak = measure_peak(dev.type, up.precision)
            rows.append(_row(backend, label, seconds, flops, row_peak, speedup, quality))
    return {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "peak_fp32_gflops": round(peak, 1),
        "model": model_name,
        "size": f"{width}x{height}",
        "scale": net.scale,
        "gflop_per_frame": _sig(flops / 1e9),
        "rows": [asdict(r) for r in rows],
    }


def _offers(backend: str, precision: str) -> bool:
    """Whether ``backend`` runs ``precision`` here: the ONNX runtimes offer fp32 and what the CPU runs natively."""
    if backend not in RUNTIMES or precision in ("auto", "fp32"):
        return True
    return precision in runtime_precisions(backend)


def _row(backend: str, precision: str, seconds: float, flops: int, peak: float, speedup: float, db: float) -> BenchRow:
    gflops = flops / seconds / 1e9
    return BenchRow(
        backend=backend,
        precision=precision,
        ms_per_frame=_sig(seconds * 1e3),
        fps=_sig(1 / seconds),
        gflops=_sig(gflops),
        peak_fraction=_sig(gflops / peak),
        speedup=round(speedup, 2),
        psnr_db=round(db, 2) if np.isfinite(db) else db,
    )


def _sig(value: float) -> float:
    """Round to 4 significant digits (JSON stays readable; ratios between fields stay exact enough)."""
    return float(f"{value:.4g}")


def _cell(value: float, text: str) -> str:
    """``text``, or "n/a" where the value could not be measured (no reference row)."""
    return text if np.isfinite(value) else "n/a"


def format_table(result: dict[str, object]) -> str:
    """The bench result as a Markdown table with a one-line header (what the CLI prints)."""
    head = (
        f"{result['model']} x{result['scale']}, {result['size']} frame, {result['gflop_per_frame']} GFLOP/frame; "
        f"device {result['device']}, {result['threads']} threads, fp32 matmul peak {result['peak_fp32_gflops']} GFLOP/s"
    )
    lines = [
        head,
        "",
        "| backend | precision | ms/frame | fps | GFLOP/s | of peak | speed-up | PSNR vs authors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:  # type: ignore[union-attr]
        db = "ref" if r["psnr_db"] == float("inf") else _cell(r["psnr_db"], f"{r['psnr_db']:.1f} dB")
        speedup = _cell(r["speedup"], f"{r['speedup']:.2f}x")
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['ms_per_frame']:.0f} | {r['fps']:.2f} | {r['gflops']:.1f} "
            f"| {r['peak_fraction']:.0%} | {speedup} | {db} |"
        )
    return "\n".join(lines)
