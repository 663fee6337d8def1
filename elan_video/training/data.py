"""MATLAB-exact bicubic resizing (the SR degradation) and the random-patch training set.

The benchmark LR images of the SR literature were made with MATLAB's ``imresize(HR, 1/s, 'bicubic')`` on
uint8 images. Reproducing them bit for bit needs all of MATLAB's details: the Keys cubic with a = -0.5,
widened by 1/scale when shrinking (antialiasing), MATLAB's pixel-centre coordinate mapping, symmetric
(mirror with edge repeat) padding, one pass per dimension with the rows (dimension 1) first, and the
intermediate result rounded to uint8 (half away from zero, saturated) after each pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OptionError

__all__ = [
    "DEGRADATIONS",
    "IMAGE_SUFFIXES",
    "PatchSampler",
    "bicubic_downscale",
    "bicubic_upscale",
    "crop_to_multiple",
    "imresize",
    "list_images",
    "read_image",
]

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".webp", ".avif", ".heic", ".heif")
_KERNEL_WIDTH = 4.0  # support of the Keys cubic, in input pixels at scale 1
DEGRADATIONS = ("patch", "image")


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), float64."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=256)
def _weights(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense (out_len, in_len) float64 matrix of MATLAB's ``contributions`` for one dimension.

    Contributions that fall outside the image are folded back by symmetric padding
    ([1..n, n..1] repeated), exactly as MATLAB indexes them; duplicate taps add up.
    """
    if scale < 1:  # antialiasing: stretch the kernel so it low-passes at the output's Nyquist rate
        width = _KERNEL_WIDTH / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)
    else:
        width = _KERNEL_WIDTH
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    # MATLAB: u = x/scale + 0.5*(1 - 1/scale) maps output pixel centres to input coordinates (1-based).
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), cols.ravel()), w.ravel())
    matrix.setflags(write=False)
    return matrix


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's conversion to uint8: round half away from zero, saturate to 0..255."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _resize_axis(image: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    matrix = _weights(image.shape[axis], out_len, scale)
    moved = np.moveaxis(image.astype(np.float64), axis, 0)
    out = np.tensordot(matrix, moved, axes=(1, 0))
    return _round_uint8(np.moveaxis(out, 0, axis))


def imresize(image: np.ndarray, *, scale: float, output_shape: tuple[int, int] | None = None) -> np.ndarray:
    """MATLAB ``imresize(image, scale, 'bicubic')`` for uint8 images, bit for bit.

    image: H x W or H x W x C uint8. scale: the MATLAB scale factor (0.5 halves, 1/3 shrinks by 3, 2 doubles).
    output_shape: (rows, cols) of the result; default ceil(scale * (H, W)) as in MATLAB.
    Returns uint8 of shape output_shape (+ C). Rows (dimension 1) are resized first, then columns, and
    the intermediate image is rounded to uint8 in between, as MATLAB does for uint8 input.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InputError(f"image must be an H x W or H x W x C uint8 array, got {getattr(image, 'shape', image)}")
    if not scale > 0:
        raise OptionError(f"scale must be positive, got {scale}")
    if output_shape is None:
        output_shape = (math.ceil(image.shape[0] * scale), math.ceil(image.shape[1] * scale))
    # MATLAB orders the dimensions by scale; with equal scales dimension 1 (rows) goes first.
    out = _resize_axis(image, 0, output_shape[0], scale)
    return _resize_axis(out, 1, output_shape[1], scale)


def crop_to_multiple(image: np.ndarray, factor: int) -> np.ndarray:
    """Crop the bottom/right of an H x W [x C] array so H and W are multiples of ``factor`` (a view)."""
    h, w = image.shape[:2]
    return image[: h - h % factor, : w - w % factor]


def bicubic_downscale(hr: np.ndarray, factor: int) -> np.ndarray:
    """The SR degradation: crop ``hr`` (H x W [x C] uint8) to a multiple of ``factor``, then MATLAB bicubic 1/factor.

    Returns uint8 (H // factor) x (W // factor) [x C].
    """
    hr = crop_to_multiple(hr, factor)
    return imresize(hr, scale=1.0 / factor, output_shape=(hr.shape[0] // factor, hr.shape[1] // factor))


def bicubic_upscale(lr: np.ndarray, factor: int) -> np.ndarray:
    """MATLAB bicubic upscaling by ``factor`` (the classic baseline): uint8 H x W [x C] -> sH x sW [x C]."""
    return imresize(lr, scale=float(factor), output_shape=(lr.shape[0] * factor, lr.shape[1] * factor))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8: H x W for grayscale files, H x W x 3 RGB otherwise."""
    from PIL import Image, UnidentifiedImageError

    from ..media.heif import is_heif, pillow_reads_heif

    if is_heif(path):
        pillow_reads_heif()
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey: Pillow's own conversion to 8 bits clamps (1000 -> 255) instead of scaling.
                return np.clip(np.rint(np.asarray(im, dtype=np.float64) / 257), 0, 255).astype(np.uint8)
            gray = im.mode in ("L", "1", "LA")
            return np.array(im.convert("L" if gray else "RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _augment(hr: np.ndarray, lr: np.ndarray, code: int) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 dihedral transforms (bit 0: horizontal flip, bit 1: vertical flip, bit 2: transpose)."""
    if code & 1:
        hr, lr = hr[:, ::-1], lr[:, ::-1]
    if code & 2:
        hr, lr = hr[::-1], lr[::-1]
    if code & 4:
        hr, lr = hr.transpose(1, 0, 2), lr.transpose(1, 0, 2)
    return hr, lr


class PatchSampler:
    """Random training pairs from folders of HR images, reproducible and resumable.

    Every image is held in memory as uint8 RGB (the 291-image set is ~100 MB). A batch draws, per sample,
    an image, a random HR crop of (patch * scale)^2 pixels with its LR, and one of 8 flips/rotations
    applied to both. The LR is made by :func:`bicubic_downscale` (the MATLAB bicubic of the benchmarks):
    ``degrade="patch"`` shrinks each HR crop as it is drawn; ``degrade="image"`` shrinks every whole image
    once, up front, and cuts the LR patch at the matching place, as benchmark LR files are made. "image"
    costs a copy per sample instead of a float64 resize, so a GPU is not left waiting on the sampler;
    its patches differ from "patch" ones only near their borders, where the bicubic reads real
    neighbours instead of mirrored ones.

    ``state()`` / ``load_state()`` capture the random generator so a resumed run draws the same batches.
    """

    def __init__(
        self, folders: Sequence[str | Path], *, scale: int, patch: int, seed: int = 0, degrade: str = "patch"
    ) -> None:
        if scale not in (2, 3, 4):
            raise OptionError(f"scale must be 2, 3 or 4, got {scale}")
        if patch < 8:
            raise OptionError(f"patch must be at least 8 LR pixels, got {patch}")
        if degrade not in DEGRADATIONS:
            raise OptionError(f"degrade must be one of {', '.join(DEGRADATIONS)}, got {degrade!r}")
        self.scale = scale
        self.patch = patch
        crop = patch * scale
        self.images: list[np.ndarray] = []
        # LR of each whole image (degrade="image"), else None: each crop is degraded when drawn.
        self.lr_images: list[np.ndarray] | None = [] if degrade == "image" else None
        files = [f for folder in folders for f in list_images(folder)]
        for f in files:
            image = read_image(f)
            if image.ndim == 2:  # grayscale training images become neutral RGB
                image = np.repeat(image[:, :, None], 3, axis=2)
            if min(image.shape[:2]) < crop:  # images smaller than one crop cannot give a patch
                continue
            if self.lr_images is not None:
                image = crop_to_multiple(image, scale)  # still >= crop: crop is a multiple of scale
                self.lr_images.append(bicubic_downscale(image, scale))
            self.images.append(image)
        if not self.images:
            raise InputError(
                f"no training image of at least {crop}x{crop} pixels in {', '.join(str(f) for f in folders)}"
            )
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a batch: LR float32 (batch, 3, patch, patch) and HR float32 (batch, 3, s*patch, s*patch), 0..255."""
        lr, hr = self.sample_uint8(batch)
        return lr.float().contiguous(), hr.float().contiguous()

    def sample_uint8(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch :meth:`sample` draws, as uint8 N x 3 x H x W views of channels-last memory.

        A quarter of the bytes to copy to a GPU, and the float conversion can happen there.
        """
        crop, s, p = self.patch * self.scale, self.scale, self.patch
        lrs, hrs = [], []
        for _ in range(batch):
            index = int(self._rng.integers(len(self.images)))
            image = self.images[index]
            if self.lr_images is None:
                top = int(self._rng.integers(image.shape[0] - crop + 1))
                left = int(self._rng.integers(image.shape[1] - crop + 1))
                hr = image[top : top + crop, left : left + crop]
                lr = bicubic_downscale(hr, s)
            else:
                small = self.lr_images[index]
                top = int(self._rng.integers(small.shape[0] - p + 1))
                left = int(self._rng.integers(small.shape[1] - p + 1))
                lr = small[top : top + p, left : left + p]
                hr = image[top * s : (top + p) * s, left * s : (left + p) * s]
            hr, lr = _augment(hr, lr, int(self._rng.integers(8)))
            hrs.append(np.ascontiguousarray(hr))
            lrs.append(np.ascontiguousarray(lr))
        return _to_nchw(np.stack(lrs)), _to_nchw(np.stack(hrs))

    def state(self) -> dict[str, Any]:
        """The generator's state (plain dicts and ints, safe for ``torch.load(weights_only=True)``)."""
        return self._rng.bit_generator.state

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state`."""
        self._rng.bit_generator.state = state


def _to_nchw(images: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W uint8 (a view; no copy)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2)
