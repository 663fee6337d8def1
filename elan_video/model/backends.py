"""Execution backends (eager | torchscript | compile | tensorrt | onnxruntime | openvino) and precision selection.

A backend turns an :class:`~elan_video.model.arch.ELAN` into a callable ``f(x) -> y`` with the network's
forward contract (float32 N x 3 x H x W in 0..255 on ``device`` -> N x 3 x sH x sW float32), running the
BatchNorm-folded :class:`~elan_video.model.fusion.FusedELAN` at the requested compute dtype.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from ..errors import MissingDependencyError, OptionError
from .arch import ELAN
from .fusion import fuse
from .options import BACKENDS, PRECISIONS

__all__ = [
    "BACKENDS",
    "MIN_PSNR_DB",
    "PRECISIONS",
    "build_backend",
    "centre_crop",
    "parse_device",
    "precision_candidates",
    "psnr",
    "to_dtype",
]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

Forward = Callable[[torch.Tensor], torch.Tensor]

# A reduced precision (or a tiling) is acceptable when it stays this close to the fp32, untiled result.
MIN_PSNR_DB = 45.0


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, *, peak: float = 255.0) -> float:
    """PSNR in dB between two same-shaped arrays on a 0..peak scale (inf when identical)."""
    # float64 copies of arrays: torch refuses numpy's negative strides (flipped or rotated views) and warns on
    # read-only ones (Pillow's np.asarray).
    a_t = torch.from_numpy(np.array(a, dtype=np.float64)) if isinstance(a, np.ndarray) else a.double()
    b_t = torch.from_numpy(np.array(b, dtype=np.float64)) if isinstance(b, np.ndarray) else b.double()
    mse = float(((a_t - b_t) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def centre_crop(frame: torch.Tensor, side: int) -> torch.Tensor:
    """The centre ``side`` x ``side`` of the first picture of ``frame`` (N x C x H x W), or less along an axis
    shorter than ``side``: a view, 1 x C x min(H, side) x min(W, side)."""
    h, w = frame.shape[2:]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return frame[:1, :, top : top + side, left : left + side]


def to_dtype(precision: str) -> torch.dtype:
    """torch dtype of a concrete precision name ("fp32" | "bf16" | "fp16")."""
    if precision not in _DTYPES:
        raise OptionError(f"precision must be one of {', '.join(_DTYPES)}, got {precision!r}")
    return _DTYPES[precision]


def parse_device(device: str | torch.device | None) -> torch.device:
    """Validate a device option: None (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise OptionError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return dev


@functools.cache
def _matmul_seconds(device_type: str, precision: str) -> float:
    """Best-of-3 time of a 384^3 matmul: a cheap measurement of how fast this hardware runs a dtype."""
    dev = torch.device(device_type)
    a = torch.randn(384, 384, device=dev).to(_DTYPES[precision])
    best = float("inf")
    with torch.inference_mode():
        for _ in range(4):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            a @ a
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            best = min(best, time.perf_counter() - start)
    return best


def precision_candidates(device: torch.device, backend: str = "eager") -> list[str]:
    """Reduced precisions worth trying on ``device`` with ``backend``, fastest first, by a measured matmul speed.

    A precision is a candidate only if its matmul runs faster than fp32's here: a CPU without native
    bf16 (AVX-512-BF16 or AMX) emulates it an order of magnitude slower than fp32. The ONNX runtimes
    offer what they run natively (:func:`elan_video.model.runtimes.runtime_precisions`).
    """
    if backend in ("onnxruntime", "openvino"):
        from .runtimes import runtime_precisions

        return runtime_precisions(backend)
    names = ["fp16", "bf16"] if device.type == "cuda" else ["bf16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        names.remove("bf16")
    fp32 = _matmul_seconds(device.type, "fp32")
    timed = sorted((_matmul_seconds(device.type, p), p) for p in names)
    return [p for t, p in timed if t < fp32]


def build_backend(model: ELAN, *, backend: str, precision: str, device: torch.device, example: torch.Tensor) -> Forward:
    """Compile ``model`` for ``backend`` at concrete ``precision`` on ``device``.

    ``example`` (float32 N x 3 x H x W on ``device``) fixes the shape for shape-specialised backends
    (torchscript traces, TensorRT engines); callers rebuild for other shapes.
    """
    if backend not in BACKENDS or backend == "auto":
        concrete = [b for b in BACKENDS if b != "auto"]
        raise OptionError(f"backend must be one of {', '.join(concrete)} here, got {backend!r}")
    if backend in ("onnxruntime", "openvino"):
        from .runtimes import runtime_forward

        return runtime_forward(model, runtime=backend, precision=precision, device=device)
    fused = fuse(model, dtype=to_dtype(precision)).to(device)
    if backend == "eager":
        return fused
    fused.portable()
    if backend == "torchscript":
        # The trace is specialised to this shape on purpose (callers key traces by shape), so the
        # tracer's "might not generalize" and deprecation notices are expected and silenced.
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(fused, example, check_trace=False)
            return torch.jit.freeze(traced.eval())
    if backend == "compile":
        return torch.compile(fused, dynamic=False)
    return _tensorrt(fused, precision=precision, example=example)


def _tensorrt(fused: torch.nn.Module, *, precision: str, example: torch.Tensor) -> Forward:
    if example.device.type != "cuda":
        raise OptionError("backend 'tensorrt' needs a CUDA device (use --device cuda)")
    try:
        import torch_tensorrt
    except ImportError:
        raise MissingDependencyError(
            "backend 'tensorrt' needs Torch-TensorRT: pip install 'elan-video[tensorrt]'"
        ) from None
    return torch_tensorrt.compile(
        fused,
        ir="dynamo",
        inputs=[example],
        enabled_precisions={to_dtype(precision)},
        truncate_double=True,
    )
