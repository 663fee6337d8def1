"""Upscale uint8/uint16 RGB images with ELAN: device, precision, backend, tiling with feathered overlap."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, OptionError
from .allocator import reuse_freed_memory
from .arch import ELAN
from .backends import BACKENDS, PRECISIONS, Forward, build_backend, parse_device, precision_candidates
from .checkpoint import load_model
from .memory import auto_tile, free_memory, tiling_bytes

__all__ = ["MIN_PSNR_DB", "Upscaler", "psnr", "upscale_image"]

# A reduced precision (or a tiling) is acceptable when it stays this close to the fp32, untiled result.
MIN_PSNR_DB = 45.0
_PROBE = 64  # side of the centre crop used to measure a reduced precision's error on real content
_SCALES = (2, 3, 4)


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, *, peak: float = 255.0) -> float:
    """PSNR in dB between two same-shaped arrays on a 0..peak scale (inf when identical)."""
    # float64 copies of arrays: torch refuses numpy's negative strides (flipped or rotated views) and warns on
    # read-only ones (Pillow's np.asarray).
    a_t = torch.from_numpy(np.array(a, dtype=np.float64)) if isinstance(a, np.ndarray) else a.double()
    b_t = torch.from_numpy(np.array(b, dtype=np.float64)) if isinstance(b, np.ndarray) else b.double()
    mse = float(((a_t - b_t) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _check_choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise OptionError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


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
    ``elan-light-x{scale}``. scale: 2, 3 or 4 (must match the model when both are given).
    device: "cpu", "cuda", "cuda:N" or None (CUDA if available). precision: "auto" (the fastest
    precision whose output stays >= 45 dB PSNR of fp32, measured on the first image), "fp32", "bf16"
    or "fp16". backend: "eager", "torchscript", "compile" or "tensorrt". tile: tile side in input
    pixels, or None for whole frames where they fit in memory (see max_memory); tile_overlap: overlap
    between tiles in input pixels, blended linearly. batch: how many tiles or frames go through the network
    together. max_memory: bytes one network call may take when ``tile`` is None; a frame size whose estimate
    (:func:`elan_video.model.memory.frame_bytes`) exceeds it is tiled with the largest tile that fits, decided once
    per frame size. None: half the device's free memory when that frame size is first seen.

    On a CPU device the first Upscaler of a process tunes glibc malloc to keep freed memory for reuse
    (:func:`elan_video.model.allocator.reuse_freed_memory`): a quarter of CPU inference time at 320x180, 40 % at
    1280x720, otherwise goes to page faults on freshly mapped activations.
    """

    def __init__(
        self,
        model: ELAN | str | Path | None = None,
        *,
        scale: int | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        backend: str = "eager",
        tile: int | None = None,
        tile_overlap: int = 32,
        batch: int = 1,
        max_memory: int | None = None,
    ) -> None:
        if scale is not None and scale not in _SCALES:
            raise OptionError(f"scale must be 2, 3 or 4, got {scale}")
        _check_choice("precision", precision, PRECISIONS)
        _check_choice("backend", backend, BACKENDS)
        if tile is not None and tile < 16:
            raise OptionError(f"tile must be at least 16 pixels, got {tile}")
        if tile_overlap < 0 or (tile is not None and tile_overlap * 2 >= tile):
            raise OptionError(f"tile_overlap must be >= 0 and less than half the tile, got {tile_overlap}")
        if batch < 1:
            raise OptionError(f"batch must be at least 1, got {batch}")
        if max_memory is not None and max_memory < 1:
            raise OptionError(f"max_memory must be a positive number of bytes, got {max_memory}")
        if model is None:
            model = f"elan-light-x{scale or 2}"
        net = model if isinstance(model, ELAN) else load_model(model)
        if scale is not None and net.scale != scale:
            raise OptionError(f"scale {scale} does not match the model, which upscales x{net.scale}")
        self.model = net.eval()
        self.scale: int = net.scale
        self.device = parse_device(device)
        if self.device.type == "cpu":
            reuse_freed_memory()
        self.precision = precision
        self.backend = backend
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.batch = batch
        self.max_memory = max_memory
        self._forwards: dict[tuple, Forward] = {}
        self._tiles: dict[tuple[int, int], int | None] = {}
        self._lock = threading.Lock()

    # -- network calls ---------------------------------------------------------------------------
    def _forward_for(self, x: torch.Tensor) -> Forward:
        # Traced and TensorRT graphs are shape-specialised; eager and compile handle any shape.
        key = tuple(x.shape) if self.backend in ("torchscript", "tensorrt") else ()
        with self._lock:
            if self.precision == "auto":
                self.precision = self._measure_precision(x)
            fwd = self._forwards.get(key)
            if fwd is None:
                fwd = build_backend(
                    self.model, backend=self.backend, precision=self.precision, device=self.device, example=x
                )
                self._forwards[key] = fwd
        return fwd

    def _measure_precision(self, x: torch.Tensor) -> str:
        """Pick the fastest reduced precision within MIN_PSNR_DB of fp32 on a crop of ``x``, else fp32."""
        candidates = precision_candidates(self.device)
        if not candidates:
            return "fp32"
        h, w = x.shape[2:]
        top, left = max(0, (h - _PROBE) // 2), max(0, (w - _PROBE) // 2)
        probe = x[:1, :, top : top + _PROBE, left : left + _PROBE]
        reference = build_backend(self.model, backend="eager", precision="fp32", device=self.device, example=probe)
        expected = reference(probe).clamp(0, 255)
        for name in candidates:
            trial = build_backend(self.model, backend="eager", precision=name, device=self.device, example=probe)
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
        frames) or the largest tile whose calls fit ``max_memory``; decided once per size."""
        if self.tile is not None:
            return self.tile
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
        """One frame (1 x 3 x H x W) through the network tile by tile, blended with linear feathering."""
        _, c, h, w = x.shape
        s, ov = self.scale, self.tile_overlap
        th, tw = min(tile, h), min(tile, w)
        ys, xs = _tile_starts(h, th, ov), _tile_starts(w, tw, ov)
        boxes = [(y, x0) for y in ys for x0 in xs]
        out = torch.zeros(1, c, h * s, w * s, device=x.device)
        weight = torch.zeros(1, 1, h * s, w * s, device=x.device)
        for i in range(0, len(boxes), self.batch):
            group = boxes[i : i + self.batch]
            tiles = torch.cat([x[:, :, y : y + th, x0 : x0 + tw] for y, x0 in group])
            result = self._forward_for(tiles)(tiles).float()
            for (y, x0), tile_out in zip(group, result, strict=True):
                wy = _ramp(th * s, ov * s, y == 0, y + th == h).to(x.device)
                wx = _ramp(tw * s, ov * s, x0 == 0, x0 + tw == w).to(x.device)
                mask = wy[:, None] * wx[None, :]
                out[:, :, y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += tile_out * mask
                weight[:, :, y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += mask
        return out.div_(weight)

    # -- arrays ----------------------------------------------------------------------------------
    def to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 uint8/uint16 array -> float32 N x 3 x H x W in 0..255 on ``self.device``."""
        peak = 255.0 if images.dtype == np.uint8 else 65535.0
        # Writable too: torch warns on read-only arrays, which is what np.asarray gives for a Pillow image.
        t = torch.from_numpy(np.require(images, requirements=("C", "W"))).to(self.device)
        t = t.permute(0, 3, 1, 2).float()
        return t if peak == 255.0 else t * (255.0 / peak)

    @staticmethod
    def to_array(y: torch.Tensor, dtype: np.dtype) -> np.ndarray:
        """Network output (N x 3 x H x W float, 0..255 scale) -> clamped, rounded N x H x W x 3 ``dtype``."""
        peak = 255.0 if dtype == np.uint8 else 65535.0
        y = y.clamp(0, 255)
        if peak != 255.0:
            y = y * (peak / 255.0)
        y = y.round().permute(0, 2, 3, 1)
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


def upscale_image(model: ELAN | str | Path | None, image: np.ndarray, **options: object) -> np.ndarray:
    """Upscale one H x W x 3 uint8/uint16 RGB image; returns sH x sW x 3 of the same dtype.

    ``model`` and ``options`` are those of :class:`Upscaler` (device, precision, backend, tile,
    tile_overlap, batch, scale). For many frames build an :class:`Upscaler` once instead.
    """
    return Upscaler(model, **options)(image)  # type: ignore[arg-type]
