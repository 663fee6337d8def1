"""ONNX Runtime and OpenVINO as backends: the network exported once per model, cached, and run on the CPU.

A backend here has the same contract as :func:`elan_video.model.backends.build_backend`'s: float32
N x 3 x H x W in 0..255 -> N x 3 x sH x sW float32, unclamped. The exported file (dynamic N, H and W, float32;
:mod:`elan_video.model.export`) is kept in the user's cache folder, keyed by the weights' hash, the
configuration, the precision and the shape, so a model is exported once per machine. Folder:
``$ELAN_VIDEO_CACHE`` if set, else ``$XDG_CACHE_HOME/elan-video`` (``~/.cache/elan-video``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import MissingDependencyError, OptionError
from .arch import ELAN
from .export import export_onnx, shape_name, weights_sha256

__all__ = ["RUNTIMES", "cache_folder", "cached_onnx", "runtime_forward", "runtime_precisions"]

RUNTIMES = ("onnxruntime", "openvino")
_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}

Forward = Callable[[torch.Tensor], torch.Tensor]


def cache_folder() -> Path:
    """Where exported files are kept: $ELAN_VIDEO_CACHE, else $XDG_CACHE_HOME/elan-video, else ~/.cache/elan-video."""
    override = os.environ.get("ELAN_VIDEO_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "elan-video"


def _say(line: str) -> None:
    print(f"elan-video: {line}; kept in {cache_folder()} for next time", file=sys.stderr, flush=True)


def cached_onnx(model: ELAN, *, half: bool = False, progress: Callable[[str], None] | None = _say) -> Path:
    """The dynamic-shape ONNX file of ``model`` from the cache, exported first if missing.

    A file lock makes processes that ask for the same file at once wait for one export instead of each
    doing it (the export takes about a minute for ELAN-light on 2 CPU cores).
    """
    from filelock import FileLock

    folder = cache_folder() / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    precision = "fp16" if half else "fp32"
    shape = shape_name(None, None)
    name = f"elan-x{model.scale}-{weights_sha256(model)[:20]}-{precision}-{shape}.onnx"
    path = folder / name
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            export_onnx(model, path, half=half, progress=progress)
    return path


def _import(runtime: str) -> object:
    try:
        if runtime == "onnxruntime":
            # Its Linux and macOS builds (1.29 on) upload usage events to Microsoft and keep a device id under
            # ~/.cache/Microsoft; a video job makes no network call. The documented opt-out, unless the user set it.
            os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
            import onnxruntime

            return onnxruntime
        return _import_openvino()
    except ImportError:
        raise MissingDependencyError(
            f"backend {runtime!r} needs {runtime}: pip install 'elan-video[{_EXTRAS[runtime]}]'"
        ) from None


def _import_openvino() -> object:
    """OpenVINO without its usage telemetry. ``import openvino`` posts an event to Google Analytics (unless the
    user opted out or CI=true) from a process it forks on a thread; a video job makes no network call, and that
    fork, taken while other threads hold locks, can leave the child hung and the command waiting for it at exit.
    With the telemetry package unimportable during the import, OpenVINO binds its own no-op stub instead."""
    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # makes its import raise ImportError
        try:
            import openvino
        finally:
            del sys.modules["openvino_telemetry"]
    import openvino

    return openvino


def runtime_precisions(runtime: str) -> list[str]:
    """Reduced precisions ``runtime`` runs natively on this CPU (ONNX Runtime: none; OpenVINO: bf16 where the
    CPU has it)."""
    if runtime != "openvino":
        return []
    ov = _import("openvino")
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # type: ignore[attr-defined]
    return ["bf16"] if "BF16" in capabilities else []


def runtime_forward(model: ELAN, *, runtime: str, precision: str, device: torch.device) -> Forward:
    """``model`` run by ``runtime`` ("onnxruntime" | "openvino") at ``precision`` on the CPU."""
    if runtime not in RUNTIMES:
        raise OptionError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if device.type != "cpu":
        raise OptionError(f"backend {runtime!r} runs on the CPU here (use --device cpu)")
    if precision != "fp32" and precision not in runtime_precisions(runtime):
        allowed = ", ".join(["fp32", *runtime_precisions(runtime)])
        raise OptionError(f"backend {runtime!r} runs {allowed} on this CPU, not {precision}")
    module = _import(runtime)
    path = cached_onnx(model)
    threads = torch.get_num_threads()
    run = (
        _onnxruntime(module, path, threads) if runtime == "onnxruntime" else _openvino(module, path, precision, threads)
    )

    def forward(x: torch.Tensor) -> torch.Tensor:
        # The file takes RGB in 0..1 (the convention of the tools it is made for); the backends' contract is 0..255.
        pixels = (x.detach().float().cpu() / 255.0).numpy()
        return torch.from_numpy(run(pixels)).mul_(255.0)

    return forward


def _onnxruntime(ort: object, path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    options = ort.SessionOptions()  # type: ignore[attr-defined]
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    return lambda pixels: session.run(None, {"input": pixels})[0]


def _openvino(ov: object, path: Path, precision: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(str(path), "CPU", config)  # type: ignore[attr-defined]
    request = compiled.create_infer_request()

    def run(pixels: np.ndarray) -> np.ndarray:
        request.infer({0: pixels})
        return request.get_output_tensor(0).data.copy()

    return run
