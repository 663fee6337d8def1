"""Upscale uint8/uint16 RGB images with ELAN: device, precision, backend, tiling with feathered overlap.

The :class:`Upscaler` owns the network's pixel contract: :func:`to_network` and :func:`from_network` are the one
place where pixels (integers in 0..peak, or floats in 0..1) become the network's float 0..255 and back, on the CPU
and on CUDA alike.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OptionError
from .allocator import reuse_freed_memory
from .arch import ELAN, pad_to_multiple
from .backends import MIN_PSNR_DB, Forward, build_backend, centre_crop, parse_device, precision_candidates, psnr
from .checkpoint import load_model
from .memory import auto_tile, free_memory, tiling_bytes
from .options import UpscaleOptions

__all__ = ["MIN_PSNR_DB", "Upscaler", "from_network", "peak_of", "psnr", "to_network", "upscale_image", "upscaler_for"]

_PROBE = 64  # side of the centre crop used to measure a reduced precision's error on real content


def peak_of(dtype: np.dtype | type) -> float:
    """The white level of integer pixels: 255 for uint8, 65535 for uint16 (full-range 16-bit)."""
    return 255.0 if np.dtype(dtype) == np.uint8 else 65535.0


def to_network(pixels: torch.Tensor, *, peak: float) -> torch.Tensor:
    """N x H x W x 3 pixels in 0..peak (any dtype, any device) -> float32 N x 3 x H x W in 0..255, same device."""
    x = pixels.permute(0, 3, 1, 2).float()
    return x if peak == 255.0 else x * (255.0 / peak)


def from_network(y: torch.Tensor, *, peak: float, integer: bool = True) -> torch.Tensor:
    """Network output (N x 3 x H x W float in 0..255, unclamped) -> float N x H x W x 3 clamped to 0..peak,
    rounded to whole levels when ``integer`` (a view in channels-last order, same device)."""
    y = y.clamp(0, 255)
    if peak != 255.0:
        y = y * (peak / 255.0)
    if integer:
        y = y.round()
    return y.permute(0, 2, 3, 1)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size``; the last one is aligned to the end."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blending weight: linear ramps over ``overlap`` at interior edges, 1 elsewhere (never 0)."""
    w = torch.ones(length)
    if overlap > 0:
        ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = ramp
        if not at_end:
            w[-overlap:] = ramp.flip(0)
    return w


class Upscaler:
    """Reusable ELAN upscaler: build once, call per frame (thread-safe).

    model: an :class:`ELAN`, a checkpoint path, a bundled name, or None for the bundled
    ``elan-light-x{scale}``. ``settings``: the other fields of :class:`~elan_video.model.options.UpscaleOptions`
    (scale, device, precision, backend, tile, tile_overlap, batch, max_memory), keyword-only; a scale must match
    the model's. A frame size whose memory estimate (:func:`elan_video.model.memory.frame_bytes`) exceeds
    ``max_memory`` is tiled with the largest tile that fits, decided once per frame size.

    On a CPU device the first Upscaler of a process tunes glibc malloc to keep freed memory for reuse
    (:func:`elan_video.model.allocator.reuse_freed_memory`): a quarter of CPU inference time at 320x180, 40 % at
    1280x720, otherwise goes to page faults on freshly mapped activations.
    """

    def __init__(self, model: ELAN | str | Path | None = None, **settings: Any) -> None:
        options = UpscaleOptions.of(model=model, **settings)
        if isinstance(model, Upscaler):
            raise OptionError("model is already an Upscaler; use it as it is")
        if model is None:
            model = f"elan-light-x{options.scale or 2}"
        net = model if isinstance(model, ELAN) else load_model(model)
        if options.scale is not None and net.scale != options.scale:
            raise OptionError(f"scale {options.scale} does not match the model, which upscales x{net.scale}")
        self.model = net.eval()
        self.scale: int = net.scale
        self.device = parse_device(options.device)
        if self.device.type == "cpu":
            reuse_freed_memory()
        self.precision = options.precision
        self.backend = options.backend
        self.tile = options.tile
        self.tile_overlap = options.tile_overlap
        self.batch = options.batch
        self.max_memory = options.max_memory
        self._forwards: dict[tuple, Forward] = {}
        self._tiles: dict[tuple[int, int], int | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, options: UpscaleOptions) -> Upscaler:
        """The Upscaler ``options`` describe (their model must not be an Upscaler: see :func:`upscaler_for`)."""
        settings = options.as_dict()
        return cls(settings.pop("model"), **settings)

    # -- network calls ---------------------------------------------------------------------------
    def _forward_for(self, x: torch.Tensor) -> Forward:
        # Traced and TensorRT graphs are shape-specialised; eager and compile handle any shape.
        key = tuple(x.shape) if self.backend in ("torchscript", "tensorrt") else ()
        with self._lock:
            self._settle(x)
            fwd = self._forwards.get(key)
            if fwd is None:
                fwd = build_backend(
                    self.model, backend=self.backend, precision=self.precision, device=self.device, example=x
                )
                self._forwards[key] = fwd
        return fwd

    def adopt(self, backend: str, precision: str) -> bool:
        """Take ``backend`` and ``precision``, an earlier settling of this network (a resumed job's), for whichever
        of the two options is still "auto", where the other agrees and "auto" could choose the pair on this
        device; returns whether it did (else "auto" is measured at :meth:`settle` or the first call)."""
        with self._lock:
            if "auto" not in (self.backend, self.precision):
                return False
            if self.backend not in ("auto", backend) or self.precision not in ("auto", precision):
                return False
            if not self._could_choose(backend, precision):
                return False
            self.backend, self.precision = backend, precision
        return True

    def _could_choose(self, backend: str, precision: str) -> bool:
        if self.device.type == "cpu":
            from .choice import candidates

            return (backend, precision) in candidates("auto")
        return backend == "eager" and precision in ("fp32", *precision_candidates(self.device))

    def settle(self, image: np.ndarray) -> None:
        """Decide ``backend="auto"`` and ``precision="auto"`` now, measuring on ``image`` (H x W x 3 uint8 or
        uint16 RGB, a picture like the ones to come) as the first call would; nothing to do when both are set."""
        _validate(image, ndim=3)
        if "auto" in (self.backend, self.precision):
            x = self.to_tensor(image[None])
            with self._lock, torch.inference_mode():  # as under forward_tensor, where the first call settles
                self._settle(x)

    def _settle(self, x: torch.Tensor) -> None:
        """:meth:`settle` on a network input (1 x 3 x H x W float, 0..255); the caller holds the lock."""
        if self.backend == "auto":
            self.backend, self.precision = self._choose_backend(x)
        if self.precision == "auto":
            self.precision = self._measure_precision(x)

    def _choose_backend(self, x: torch.Tensor) -> tuple[str, str]:
        """backend "auto": eager on a GPU; on a CPU the fastest measured backend and precision
        (:func:`elan_video.model.choice.choose_backend`), remembered per machine and network."""
        if self.device.type != "cpu":
            return "eager", self.precision
        from .choice import choose_backend

        return choose_backend(self.model, precision=self.precision, frame=x[:1])

    def _measure_precision(self, x: torch.Tensor) -> str:
        """Pick the fastest reduced precision within MIN_PSNR_DB of fp32 on a crop of ``x``, else fp32."""
        candidates = precision_candidates(self.device, self.backend)
        if not candidates:
            return "fp32"
        probe = centre_crop(x, _PROBE)
        # The ONNX runtimes reduce precision their own way, so they are checked as themselves; the compiled
        # backends run the eager network's arithmetic.
        trial_backend = self.backend if self.backend in ("onnxruntime", "openvino") else "eager"
        reference = build_backend(
            self.model, backend=trial_backend, precision="fp32", device=self.device, example=probe
        )
        expected = reference(probe).clamp(0, 255)
        for name in candidates:
            trial = build_backend(self.model, backend=trial_backend, precision=name, device=self.device, example=probe)
            if psnr(trial(probe).clamp(0, 255), expected) >= MIN_PSNR_DB:
                return name
        return "fp32"

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network: float32 N x 3 x H x W in 0..255 on ``self.device`` -> N x 3 x sH x sW, unclamped.

        Honours ``tile``/``tile_overlap``/``batch``; no conversion or clamping happens here.
        """
        with torch.inference_mode():
            tile = self.tile_for(x.shape[2], x.shape[3])
            if tile is None or (x.shape[2] <= tile and x.shape[3] <= tile):
                outs = [self._forward_for(chunk)(chunk) for chunk in x.split(self.batch)]
                return torch.cat(outs).float()
            return torch.cat([self._tiled(frame[None], tile) for frame in x])

    def tile_for(self, height: int, width: int) -> int | None:
        """The tile side used for frames of height x width input pixels: ``tile`` when set, else None (whole
        frames) or the largest tile whose calls fit ``max_memory`` (decided once per size); in whole attention
        windows (:attr:`ELAN.window_multiple`), rounded up."""
        tile = self.tile if self.tile is not None else self._tile_within_memory(height, width)
        if tile is None:
            return None
        # The network pads every call to whole windows anyway: such a tile costs the same, holds picture where the
        # network would reflect the tile, and is not padded again when it ends at the picture's edge (_tiled).
        window = self.model.window_multiple
        return -(-tile // window) * window

    def _tile_within_memory(self, height: int, width: int) -> int | None:
        """None when a whole frame's call fits ``max_memory`` (or half the free memory), else auto_tile's side."""
        with self._lock:
            if (height, width) not in self._tiles:
                budget = self.max_memory
                if budget is None:
                    free = free_memory(self.device)
                    budget = None if free is None else free // 2
                    held = tiling_bytes(height, width, scale=self.scale)
                    if free is not None and held > free:
                        # Better said now than by the kernel's out-of-memory killer after minutes of work.
                        raise InputError(
                            f"a {width}x{height} picture upscaled x{self.scale} needs {held / 2**30:.1f} GB for its "
                            f"output alone and {self.device.type} has {free / 2**30:.1f} GB free; cut it into parts"
                        )
                self._tiles[height, width] = (
                    None
                    if budget is None
                    else auto_tile(
                        height,
                        width,
                        budget=budget,
                        channels=self.model.c_elan,
                        scale=self.scale,
                        batch=self.batch,
                        overlap=self.tile_overlap,
                        device=self.device.type,
                        precision=self.precision,
                    )
                )
            return self._tiles[height, width]

    def _tiled(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        """One frame (1 x 3 x H x W) through the network tile by tile, blended with linear feathering; ``tile``
        is a whole number of attention windows (:meth:`tile_for`)."""
        _, c, h, w = x.shape
        s, ov = self.scale, self.tile_overlap
        # A whole frame is reflect-padded to whole windows before the convolutions zero-pad past it (ELAN.forward).
        # Tiles cut from the frame padded that way, and which the network then pads no further, see that same edge
        # where the picture ends; tiles cut from the picture itself saw zeros right after its last row.
        x = pad_to_multiple(x, self.model.window_multiple)
        hp, wp = x.shape[2:]
        th, tw = min(tile, hp), min(tile, wp)
        ys, xs = _tile_starts(hp, th, ov), _tile_starts(wp, tw, ov)
        boxes = [(y, x0) for y in ys for x0 in xs]
        out = torch.zeros(1, c, hp * s, wp * s, device=x.device)
        weight = torch.zeros(1, 1, hp * s, wp * s, device=x.device)
        for i in range(0, len(boxes), self.batch):
            group = boxes[i : i + self.batch]
            tiles = torch.cat([x[:, :, y : y + th, x0 : x0 + tw] for y, x0 in group])
            result = self._forward_for(tiles)(tiles).float()
            for (y, x0), tile_out in zip(group, result, strict=True):
                wy = _ramp(th * s, ov * s, y == 0, y + th == hp).to(x.device)
                wx = _ramp(tw * s, ov * s, x0 == 0, x0 + tw == wp).to(x.device)
                mask = wy[:, None] * wx[None, :]
                out[:, :, y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += tile_out * mask
                weight[:, :, y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += mask
        return out.div_(weight)[:, :, : h * s, : w * s]

    # -- arrays ----------------------------------------------------------------------------------
    def to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 uint8/uint16 array -> float32 N x 3 x H x W in 0..255 on ``self.device``."""
        # Writable too: torch warns on read-only arrays, which is what np.asarray gives for a Pillow image.
        t = torch.from_numpy(np.require(images, requirements=("C", "W"))).to(self.device)
        return to_network(t, peak=peak_of(images.dtype))

    @staticmethod
    def to_array(y: torch.Tensor, dtype: np.dtype) -> np.ndarray:
        """Network output (N x 3 x H x W float, 0..255 scale) -> clamped, rounded N x H x W x 3 ``dtype``."""
        y = from_network(y, peak=peak_of(dtype))
        return y.to(torch.uint8 if dtype == np.uint8 else torch.int32).cpu().numpy().astype(dtype, copy=False)

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        """N x H x W x 3 uint8 or uint16 RGB -> N x sH x sW x 3 of the same dtype."""
        _validate(images, ndim=4)
        return self.to_array(self.forward_tensor(self.to_tensor(images)), images.dtype)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 or uint16 RGB -> sH x sW x 3 of the same dtype."""
        _validate(image, ndim=3)
        return self.upscale_batch(image[None])[0]


def _validate(images: object, *, ndim: int) -> None:
    shape = "H x W x 3" if ndim == 3 else "N x H x W x 3"
    if not isinstance(images, np.ndarray):
        raise InputError(f"image must be a numpy array ({shape}), got {type(images).__name__}")
    if images.ndim != ndim or images.shape[-1] != 3:
        raise InputError(f"image must have shape {shape}, got {images.shape}")
    if images.dtype not in (np.uint8, np.uint16):
        raise InputError(f"image dtype must be uint8 or uint16, got {images.dtype}")
    if min(images.shape[-3:-1]) < 1:
        raise InputError(f"image is empty: shape {images.shape}")


def upscaler_for(options: UpscaleOptions) -> Upscaler:
    """The Upscaler ``options`` ask for: their model when it is a ready Upscaler (no other option may then be
    given, and a given scale must match it), else a new one."""
    model = options.model
    if not isinstance(model, Upscaler):
        return Upscaler.from_options(options)
    clashing = options.given()
    if clashing:
        raise OptionError(f"{', '.join(clashing)} cannot be given with an Upscaler as model; set them on the Upscaler")
    if options.scale is not None and options.scale != model.scale:
        raise OptionError(f"scale {options.scale} does not match the Upscaler, which upscales x{model.scale}")
    return model


class _UpscalerCache:
    """The Upscalers of the last few :func:`upscale_image` calls, keyed by model identity and options.

    An ELAN's entry is stamped with its tensors' storage and version counters, so weights changed in place
    (``load_state_dict``, an optimiser step, ``p.data = ...``) build a new Upscaler instead of serving the old
    fused copy; a checkpoint file's entry with its modification time and size.
    """

    SIZE = 4

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, tuple[object, Upscaler]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _identity(model: object) -> tuple[object, object]:
        if isinstance(model, ELAN):
            stamp = tuple((t.data_ptr(), t._version) for t in model.state_dict().values())
            return ("module", id(model)), (model.training, stamp)
        if isinstance(model, (str, Path)) and Path(model).is_file():
            stat = Path(model).stat()
            return ("file", str(Path(model).resolve())), (stat.st_mtime_ns, stat.st_size)
        return ("name", model), None

    def get(self, options: UpscaleOptions) -> Upscaler:
        identity, stamp = self._identity(options.model)
        key = (identity, UpscaleOptions.of(options, model=None))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == stamp:
                self._entries.move_to_end(key)
                return entry[1]
        upscaler = Upscaler.from_options(options)
        with self._lock:
            self._entries[key] = (stamp, upscaler)
            self._entries.move_to_end(key)
            while len(self._entries) > self.SIZE:
                self._entries.popitem(last=False)
        return upscaler


_CACHE = _UpscalerCache()


def upscale_image(model: ELAN | str | Path | Upscaler | None, image: np.ndarray, **settings: Any) -> np.ndarray:
    """Upscale one H x W x 3 uint8/uint16 RGB image; returns sH x sW x 3 of the same dtype.

    ``model`` and ``settings`` are the fields of :class:`~elan_video.model.options.UpscaleOptions` (or
    ``options=UpscaleOptions(...)``). Repeated calls with the same model and options reuse one
    :class:`Upscaler` (its fused network and its precision decision) from a small cache of the last few; a
    model whose weights have changed since gets a new one.
    """
    options = UpscaleOptions.with_model(model, settings.pop("options", None), **settings)
    if isinstance(options.model, Upscaler):
        return upscaler_for(options)(image)
    return _CACHE.get(options)(image)
