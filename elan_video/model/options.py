"""The options that configure the network, declared once.

:class:`UpscaleOptions` is what :class:`~elan_video.model.upscaler.Upscaler`, ``upscale_image``, ``upscale_video``,
the benches, the VapourSynth filter and the command line share: each takes either an ``UpscaleOptions`` or its
fields as keyword arguments, and the command line builds its ``--model``/``--device``/... options from the fields'
metadata. This module imports neither torch nor PyAV, so ``elan-video --help`` stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import OptionError

if TYPE_CHECKING:
    import torch

__all__ = ["BACKENDS", "PRECISIONS", "SCALES", "UpscaleOptions"]

SCALES = (2, 3, 4)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("eager", "torchscript", "compile", "tensorrt", "onnxruntime", "openvino", "auto")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
class UpscaleOptions:
    """How the network runs. Every field is validated on construction (:class:`~elan_video.errors.OptionError`).

    model: an :class:`~elan_video.model.arch.ELAN`, a checkpoint path (.pth/.pt/.safetensors), a bundled name
    (``elan-light-x2|x3|x4``, ``elan-light-x2-video|x3-video|x4-video``, ``elan-light-x2-video-medium|strong``), a ready
    :class:`~elan_video.model.upscaler.Upscaler` (then every other field but ``scale`` must keep its default:
    the Upscaler carries them), or None for the bundled ``elan-light-x{scale}``.
    scale: 2, 3 or 4; None takes the model's (2 for the bundled weights). device: "cpu", "cuda", "cuda:N" or None
    (CUDA when available). precision: "auto" (the fastest precision whose output stays >= 45 dB PSNR of fp32,
    measured on the first picture), "fp32", "bf16" or "fp16". backend: "eager", "torchscript", "compile",
    "tensorrt", "onnxruntime", "openvino" (these two run an ONNX export of the model, cached per machine) or
    "auto" (on a CPU the fastest of eager and the installed runtimes within 45 dB of fp32, measured once per
    machine and model; eager on a GPU; the command line's default).
    tile: tile side in input pixels (>= 16; rounded up to whole attention windows, 16 for ELAN-light), or None
    for whole pictures where they fit in ``max_memory``. tile_overlap: overlap of neighbouring tiles in input
    pixels, blended linearly (< tile / 2). batch: pictures or tiles per network call (>= 1). max_memory: bytes
    one network call may take when ``tile`` is None; None: half the device's free memory.
    """

    # ELAN | str | Path | Upscaler | None; typed loosely because the Upscaler module imports this one.
    model: object = field(
        default=None,
        metadata=_help(
            "Bundled name (elan-light-x2|x3|x4, elan-light-x2|x3|x4-video, elan-light-x2-video-medium|strong) or file."
        ),
    )
    scale: int | None = field(
        default=None, metadata=_help("The network's factor, 2, 3 or 4 [default: the --model's; else 2].")
    )
    device: str | torch.device | None = field(
        default=None, metadata=_help("cpu, cuda or cuda:N [default: cuda if available].")
    )
    precision: str = field(
        default="auto", metadata=_help("auto measures: the fastest precision within 45 dB of fp32 here.")
    )
    backend: str = field(
        default="eager",
        metadata={
            "help": "How the network runs; auto: the fastest of eager and the installed ONNX runtimes on this CPU, "
            "timed once per machine and model (eager on a GPU).",
            # The command line decides by measurement; library calls keep eager, so code written against them
            # never pays an export it did not ask for.
            "cli_default": "auto",
        },
    )
    tile: int | None = field(
        default=None,
        metadata=_help(
            "Tile side in input pixels, rounded up to whole attention windows (16) "
            "[default: whole frames where they fit in half the free memory]."
        ),
    )
    tile_overlap: int = field(default=32, metadata=_help("Overlap of neighbouring tiles in input pixels."))
    batch: int = field(default=1, metadata=_help("Frames or tiles per network call."))
    max_memory: int | None = field(
        default=None, metadata={"help": "Bytes one network call may take without --tile.", "cli": False}
    )

    def __post_init__(self) -> None:
        if self.scale is not None and self.scale not in SCALES:
            raise OptionError(f"scale must be 2, 3 or 4, got {self.scale}")
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("backend", self.backend, BACKENDS)
        if self.tile is not None and self.tile < 16:
            raise OptionError(f"tile must be at least 16 pixels, got {self.tile}")
        if self.tile_overlap < 0 or (self.tile is not None and self.tile_overlap * 2 >= self.tile):
            raise OptionError(f"tile_overlap must be >= 0 and less than half the tile, got {self.tile_overlap}")
        if self.batch < 1:
            raise OptionError(f"batch must be at least 1, got {self.batch}")
        if self.max_memory is not None and self.max_memory < 1:
            raise OptionError(f"max_memory must be a positive number of bytes, got {self.max_memory}")

    @classmethod
    def of(cls, options: UpscaleOptions | None = None, /, **settings: Any) -> UpscaleOptions:
        """``options`` (default: all defaults) with ``settings`` (field names) replacing its fields.

        An unknown name raises OptionError naming it, as a misspelt keyword should.
        """
        unknown = sorted(set(settings) - set(NAMES))
        if unknown:
            raise OptionError(f"unknown option {unknown[0]!r}; the options are {', '.join(NAMES)}")
        if options is None:
            return cls(**settings)
        return cls(**(options.as_dict() | settings))

    @classmethod
    def with_model(cls, model: object, options: UpscaleOptions | None = None, /, **settings: Any) -> UpscaleOptions:
        """:meth:`of`, with ``model`` replacing the options' model unless it is None: for the functions that take
        the model first and the other options as keywords (``upscale_image(model, image, device="cpu")``)."""
        return cls.of(options, **settings) if model is None else cls.of(options, **settings, model=model)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (shallow: the model is the same object, not a copy)."""
        return {name: getattr(self, name) for name in NAMES}

    def given(self) -> list[str]:
        """Names of the fields other than model and scale that differ from their defaults."""
        return [f.name for f in fields(self) if f.name not in ("model", "scale") and getattr(self, f.name) != f.default]


NAMES: tuple[str, ...] = tuple(f.name for f in fields(UpscaleOptions))
"""The field names of :class:`UpscaleOptions`, in declaration order."""


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise OptionError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
