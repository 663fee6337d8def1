"""ELAN super-resolution as a VapourSynth filter: an RGBS/RGBH clip in, a clip ``scale`` times larger out.

How frames flow: VapourSynth asks the returned node for frame n on one of its worker threads. ``std.ModifyFrame``
runs its selector for one frame at a time per node (filter mode PARALLEL_REQUESTS), so a single ModifyFrame node
would serialise every inference. ``std.FrameEval`` therefore hands each request a fresh, cheap ModifyFrame node;
those run on as many worker threads as the core has, and a pool of ``num_streams`` inference slots (one CUDA
stream each on a GPU) bounds how many frames are inside the network at once. All of them share one
:class:`elan_video.Upscaler`, built once when :func:`elan` is called: one copy of the weights, backends built once.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elan_video.errors import ElanVideoError, MissingDependencyError
from elan_video.model.allocator import use_huge_pages

try:
    import vapoursynth as vs
except ImportError:  # pragma: no cover - vapoursynth is a dependency of the filter, not of elan_video
    raise MissingDependencyError("vselan needs VapourSynth R70 or newer: pip install vapoursynth") from None

if TYPE_CHECKING:
    import torch

    from elan_video.model.arch import ELAN
    from elan_video.model.upscaler import Upscaler

__all__ = ["CONVERT_HINT", "default_precision", "elan"]

CONVERT_HINT = 'core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="709")'
_ACCEPTED = ("RGBS", "RGBH")


def default_precision(half: bool, device: torch.device | str) -> str:
    """The precision ``elan`` uses when none is given: derived from the clip's sample type.

    half=True (an RGBH clip: the user already accepted 11-bit mantissas) -> "fp16" on CUDA; on a CPU "bf16" where
    a bf16 matmul measures faster than fp32 here (native bf16: AMX or AVX-512-BF16), else "fp32" (an AVX2 CPU
    emulates bf16 an order of magnitude slower). half=False (RGBS) -> "auto", the library's default: the fastest
    precision whose output stays >= 45 dB PSNR of fp32, measured on the first frame; on hardware without a faster
    reduced precision that is fp32.
    """
    device_type = device if isinstance(device, str) else device.type
    if not half:
        return "auto"
    if device_type.split(":")[0] == "cuda":
        return "fp16"
    import torch  # here, not at import: the filter asks for huge pages before torch loads

    from elan_video.model.backends import precision_candidates

    return "bf16" if "bf16" in precision_candidates(torch.device("cpu")) else "fp32"


def _convert_hint(fmt: vs.VideoFormat) -> str:
    """How to turn ``fmt`` into RGBS: YUV and Gray need a matrix, integer RGB must not be given one."""
    if fmt.color_family == vs.RGB:
        return "core.resize.Bicubic(clip, format=vs.RGBS)"
    return CONVERT_HINT


def _validate_clip(clip: object) -> vs.VideoNode:
    """Refuse anything but a constant-size, constant-format RGBS/RGBH clip with a vs.Error naming the fix."""
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error(f"elan: clip must be a vs.VideoNode, got {type(clip).__name__}")
    fmt = clip.format
    # R81 reports a variable format as a VideoFormat with id 0 (color family UNDEFINED); older releases as None.
    if fmt is None or fmt.id == 0 or fmt.color_family == vs.UNDEFINED:
        raise vs.Error(
            "elan: variable-format clips are not supported; convert every frame to one format first, "
            f"e.g. {CONVERT_HINT}"
        )
    if fmt.name not in _ACCEPTED:
        raise vs.Error(
            f"elan: clip format must be RGBS or RGBH (float RGB, 0..1), got {fmt.name}; "
            f"convert it first, e.g. {_convert_hint(fmt)}"
        )
    if clip.width == 0 or clip.height == 0:
        raise vs.Error(
            "elan: variable-size clips are not supported; resize every frame to one size first, "
            "e.g. core.resize.Bicubic(clip, width=W, height=H)"
        )
    if clip.gpu_resident:
        raise vs.Error(
            "elan: clip frames live on the GPU (Vulkan); download them first with core.std.GPUDownload(clip)"
        )
    return clip


class _Engine:
    """The per-``elan()`` state every frame request shares: the Upscaler and the inference slots.

    Slots are handed out through a queue, so at most ``num_streams`` frames are in the network at once; a VS
    worker thread waiting for a slot blocks without the GIL. On CUDA every slot owns a stream, so concurrent
    frames overlap their copies and kernels instead of queueing on the default stream.
    """

    def __init__(self, upscaler: Upscaler, *, num_streams: int, half: bool) -> None:
        import torch

        self.upscaler = upscaler
        self.out_dtype = torch.float16 if half else torch.float32
        cuda = upscaler.device.type == "cuda"
        self._slots: queue.Queue[torch.cuda.Stream | None] = queue.Queue()
        for _ in range(num_streams):
            self._slots.put(torch.cuda.Stream(upscaler.device) if cuda else None)

    @contextmanager
    def _slot(self) -> Iterator[torch.cuda.Stream | None]:
        import torch

        stream = self._slots.get()
        try:
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                yield stream
        finally:
            self._slots.put(stream)

    def upscale_planes(self, planes: np.ndarray) -> np.ndarray:
        """3 x H x W float32/float16 RGB in 0..1 (host) -> 3 x sH x sW in 0..1 (host), clamped, out_dtype.

        Same arithmetic as :func:`elan_video.upscale_image` (x255 in, network, clamp) minus the rounding to
        integers: float clips keep the network's full output precision.
        """
        import torch

        from elan_video.model.upscaler import from_network, to_network

        with self._slot(), torch.inference_mode():
            device = self.upscaler.device
            x = torch.from_numpy(planes).to(device=device, non_blocking=False)
            y = self.upscaler.forward_tensor(to_network(x.permute(1, 2, 0)[None], peak=1.0))
            y = from_network(y, peak=1.0, integer=False)[0].permute(2, 0, 1).to(self.out_dtype)
            # .cpu() on this slot's stream waits for exactly this frame's kernels, not the other slots'.
            return y.cpu().numpy()

    def process(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        """ModifyFrame selector (VapourSynth passes ``n`` and ``f`` by keyword): f = [blank output-sized frame,
        source frame] -> the upscaled frame."""
        blank, src = f
        planes = np.stack([np.asarray(src[p]) for p in range(3)])
        try:
            result = self.upscale_planes(planes)
        except ElanVideoError as exc:
            raise vs.Error(f"elan: frame {n}: {exc}") from exc
        out = blank.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), result[p])
        # Players and later filters read colour tags, field order, durations, scene changes... from the props.
        out.props.clear()
        out.props.update(src.props)
        return out


def elan(
    clip: vs.VideoNode,
    scale: int = 2,
    *,
    model: ELAN | str | Path | Upscaler | None = None,
    device: str | None = None,
    precision: str | None = None,
    backend: str | None = None,
    tile: int | None = None,
    tile_overlap: int = 32,
    num_streams: int = 1,
) -> vs.VideoNode:
    """Upscale an RGB clip ``scale`` times with ELAN.

    clip: constant-size RGBS (float32) or RGBH (float16) clip, nominal range 0..1; convert others first with
    ``core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="709")``. Returns a clip of the same format, frame
    count and rate, width x scale by height x scale, values clamped to 0..1, every source frame property copied.

    scale: 2, 3 or 4. model: checkpoint path (.pth/.pt/.safetensors), bundled name, an ``elan_video.ELAN``, or an
    ``elan_video.Upscaler`` to share one model and its compiled backends between several calls (then device,
    precision, backend and tile must be left unset: the Upscaler carries them); None selects the bundled
    ``elan-light-x{scale}``. device: "cpu", "cuda", "cuda:N" or None (CUDA when available). precision: "auto",
    "fp32", "bf16", "fp16" or None (RGBH clips: fp16 on CUDA, bf16 on a CPU where it is fast; RGBS: "auto"; see
    :func:`default_precision`). backend: "eager" (default), "torchscript", "compile", "tensorrt", "onnxruntime" or
    "openvino" (these two: precision "auto" unless given). tile: tile side
    in input pixels to bound memory (None: whole frames where they fit in half the free memory, else tiles that
    do), tile_overlap: overlap of tiles in input pixels.
    num_streams: how many frames may be inside the network at once (on CUDA, one stream each); VapourSynth's
    ``core.num_threads`` decides how many frames are requested concurrently.

    Everything is validated, and the model loaded, when this function is called; errors are ``vs.Error("elan:
    ...")``. Frame n equals ``elan_video.upscale_image`` on frame n (in 0..255) divided by 255, before rounding.
    """
    clip = _validate_clip(clip)
    if not isinstance(num_streams, int) or isinstance(num_streams, bool) or num_streams < 1:
        raise vs.Error(f"elan: num_streams must be an integer >= 1, got {num_streams!r}")
    half = clip.format.name == "RGBH"
    # Before the model's first tensor: frames run on VapourSynth's worker threads, whose large blocks glibc
    # maps afresh every time (huge pages: 51 s instead of 79 s per 720p frame on the CPU).
    use_huge_pages()
    try:
        upscaler = _build_upscaler(
            model,
            scale=scale,
            device=device,
            precision=precision,
            backend=backend,
            tile=tile,
            tile_overlap=tile_overlap,
            half=half,
        )
    except ElanVideoError as exc:
        raise vs.Error(f"elan: {exc}") from exc
    engine = _Engine(upscaler, num_streams=num_streams, half=half)

    s = upscaler.scale
    # keep=True: the blank clip renders one frame and hands out references, the selector copies it.
    blank = clip.std.BlankClip(width=clip.width * s, height=clip.height * s, keep=True)
    # Bound at call time to the core this script runs in; the FrameEval callback runs on worker threads.
    modify_frame = blank.std.ModifyFrame

    def per_request(n: int) -> vs.VideoNode:
        return modify_frame(clips=[blank, clip], selector=engine.process)

    out = blank.std.FrameEval(per_request, clip_src=[blank, clip])
    return out


def _build_upscaler(
    model: ELAN | str | Path | Upscaler | None,
    *,
    scale: int,
    device: str | None,
    precision: str | None,
    backend: str | None,
    tile: int | None,
    tile_overlap: int,
    half: bool,
) -> Upscaler:
    """The one Upscaler a filter instance uses (raises elan_video errors, which ``elan`` turns into vs.Error).

    Options left as None are not given: a ready Upscaler as ``model`` refuses the others, and a new one gets the
    clip's default precision."""
    from elan_video.model.backends import parse_device
    from elan_video.model.options import UpscaleOptions
    from elan_video.model.upscaler import Upscaler, upscaler_for

    given = {"device": device, "precision": precision, "backend": backend, "tile": tile}
    options = UpscaleOptions.of(
        model=model, scale=scale, tile_overlap=tile_overlap, **{k: v for k, v in given.items() if v is not None}
    )
    # The ONNX runtimes pick their own reduced precision by measurement ("auto"): ONNX Runtime has none on a CPU.
    if not isinstance(model, Upscaler) and precision is None and options.backend not in ("onnxruntime", "openvino"):
        options = UpscaleOptions.of(options, precision=default_precision(half, parse_device(device)))
    return upscaler_for(options)
