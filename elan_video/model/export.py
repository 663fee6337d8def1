"""Write an ELAN as an ONNX file for vs-mlrt, chaiNNer, ONNX Runtime, OpenVINO and TensorRT.

The file holds :class:`~elan_video.model.onnx_graph.OnnxGraph`: input ``input``, N x 3 x H x W RGB in 0..1
(float32, or float16 for a half-precision file), output ``output``, N x 3 x sH x sW in 0..1. N, H and W are
dynamic unless a static shape is asked for (TensorRT builds static shapes best). The file's metadata says what
it holds (scale, configuration, weights hash, value range, precision, shape).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..errors import MissingDependencyError, OptionError, OutputError
from .arch import ELAN
from .onnx_graph import OnnxGraph

__all__ = ["MIN_OPSET", "OPSET", "export_onnx", "read_metadata", "shape_name", "weights_sha256"]

MIN_OPSET = 17
OPSET = 18
# Sizes the example input is traced at when H and W stay dynamic: neither a multiple of the window nor equal,
# so that the exporter cannot specialise the graph to one padding or one shape.
_EXAMPLE = (2, 37, 53)


def weights_sha256(model: ELAN) -> str:
    """SHA-256 (hex) of the model's configuration and float32 weights: what identifies it in caches and files."""
    digest = hashlib.sha256(json.dumps(model.config(), sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise MissingDependencyError("ONNX export needs onnx and onnxscript: pip install 'elan-video[onnx]'") from None


def _check(size: tuple[int, int] | None, batch: int | None, opset: int) -> None:
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise OptionError(f"size must be two positive integers (width, height), got {size}")
    if batch is not None and batch < 1:
        raise OptionError(f"batch must be at least 1, got {batch}")
    if opset < MIN_OPSET:
        raise OptionError(f"opset must be at least {MIN_OPSET}, got {opset}")


def shape_name(size: tuple[int, int] | None, batch: int | None) -> str:
    """How the file's input shape reads in its metadata and cache keys: "Nx3xHxW" with "N", "H", "W" dynamic."""
    n = "N" if batch is None else str(batch)
    h, w = ("H", "W") if size is None else (str(size[1]), str(size[0]))
    return f"{n}x3x{h}x{w}"


def export_onnx(
    model: ELAN,
    destination: str | Path,
    *,
    size: tuple[int, int] | None = None,
    batch: int | None = None,
    half: bool = False,
    opset: int = OPSET,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``model`` to ``destination`` as ONNX and return the path.

    size: (width, height) of a static-shape file, None for any H and W; batch: a static N, None for any.
    half: float16 weights, input and output, with the attention logits in float32. opset: >= 17.
    progress: called with a line before the export starts (about a minute for ELAN-light on 2 CPU cores).
    The file is written next to ``destination`` and renamed into place only when complete.
    """
    _check(size, batch, opset)
    _require_onnx()
    import onnx

    target = Path(destination)
    if target.parent.exists() and not target.parent.is_dir():
        raise OutputError(f"{target}: {target.parent} is not a folder")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: the folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target}: the folder {target.parent} is not writable")
    graph = OnnxGraph(model, half=half).eval()
    n, h, w = _EXAMPLE
    example = torch.rand(batch or n, 3, size[1] if size else h, size[0] if size else w)
    example = example.half() if half else example
    dims = {}
    if batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=1024)
    if size is None:
        dims[2] = torch.export.Dim("height", min=1, max=1 << 15)
        dims[3] = torch.export.Dim("width", min=1, max=1 << 15)
    if progress is not None:
        progress(f"exporting ELAN x{model.scale} to ONNX ({shape_name(size, batch)}, {'fp16' if half else 'fp32'})")
    partial = target.with_name(f".{target.name}.partial")
    try:
        # The exporter reports each step on stdout and warns about ops it does not need; the command line's
        # stdout is for results (--json).
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                (example,),
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes={"x": dims} if dims else None,
                opset_version=opset,
                dynamo=True,
                optimize=False,
                external_data=False,
                verbose=False,
            )
        _simplify(program.model)
        proto = program.model_proto
        _describe(proto, model, size=size, batch=batch, half=half)
        onnx.save(proto, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _simplify(model: object) -> None:
    """Fold constants (most of the shape arithmetic of a dynamic H and W) and drop what nothing uses, in place.

    The exporter's own ``optimize`` adds onnxscript's pattern rewrites: on ELAN-light they took nine tenths of a
    four-minute export and the file they give ran no faster in ONNX Runtime or OpenVINO (docs/benchmarks.md).
    """
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import fold_constants

    common.InlinePass()(model)
    fold_constants(model)
    for tidy in (
        common.RemoveUnusedNodesPass(),
        common.CommonSubexpressionEliminationPass(),
        common.RemoveUnusedNodesPass(),
        common.RemoveUnusedFunctionsPass(),
        common.RemoveUnusedOpsetsPass(),
    ):
        tidy(model)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence ``logger`` below ERROR (the exporter logs each optional op it skips, torchvision's among them)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _describe(proto: object, model: ELAN, *, size: tuple[int, int] | None, batch: int | None, half: bool) -> None:
    """Store what the file holds in its metadata (read by :func:`read_metadata`, shown by Netron and onnx tools)."""
    entries = {
        "architecture": "ELAN",
        "scale": str(model.scale),
        "config": json.dumps(model.config()),
        "weights_sha256": weights_sha256(model),
        "value_range": "RGB 0..1 in and out",
        "precision": "fp16" if half else "fp32",
        "shape": shape_name(size, batch),
        "form": "BatchNorm folded into the 1x1 convs, shift as padded slices, reflect padding as a gather",
    }
    del proto.metadata_props[:]  # type: ignore[attr-defined]
    for key, value in entries.items():
        prop = proto.metadata_props.add()  # type: ignore[attr-defined]
        prop.key, prop.value = key, value
    proto.doc_string = f"ELAN x{model.scale} super-resolution (elan-video): {entries['value_range']}"  # type: ignore[attr-defined]


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an ONNX file written by :func:`export_onnx` (key -> value)."""
    _require_onnx()
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
