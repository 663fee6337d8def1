"""PSNR and SSIM as the super-resolution literature reports them.

Both are computed on the luma Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (R, G, B in 0..1, Y on the
0..255 scale, not rounded) with a border of ``shave`` pixels removed; grayscale images are scored on their
gray values. SSIM is Wang et al.'s index with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
L = 255, over the 'valid' region of the window (MATLAB ``ssim_index`` / the SR benchmark scripts).
In float64; PSNR itself is :func:`elan_video.model.upscaler.psnr` on the luma.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..model.upscaler import psnr as plain_psnr

__all__ = ["psnr", "rgb_to_y", "ssim", "to_luma"]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB uint8 (0..255) -> H x W float64 Y in 16..235 (BT.601 studio range, unrounded)."""
    return 16.0 + image.astype(np.float64) @ _Y_WEIGHTS


def to_luma(image: np.ndarray) -> np.ndarray:
    """The channel that is scored: Y of an H x W x 3 RGB image, or the values of an H x W (or x 1) gray one.

    Input uint8 (0..255); output float64 H x W.
    """
    if image.ndim == 3 and image.shape[2] == 3:
        return rgb_to_y(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise InputError(f"image must be H x W, H x W x 1 or H x W x 3, got shape {image.shape}")
    return image.astype(np.float64)


def _scored_pair(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape != hr.shape:
        raise InputError(f"sr and hr must have the same shape, got {sr.shape} and {hr.shape}")
    if shave < 0 or 2 * shave >= min(sr.shape[:2]):
        raise InputError(f"shave must be >= 0 and leave pixels of a {sr.shape[:2]} image, got {shave}")
    a, b = to_luma(sr), to_luma(hr)
    if shave:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    return a, b


def psnr(sr: np.ndarray, hr: np.ndarray, *, shave: int = 0) -> float:
    """Y-channel PSNR in dB of ``sr`` against ``hr`` (same-shaped uint8 RGB or gray), ``shave`` border pixels
    removed; inf when identical."""
    return plain_psnr(*_scored_pair(sr, hr, shave))


def _gaussian_window() -> np.ndarray:
    r = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2
    g = np.exp(-(r * r) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of H x W ``x`` with the outer product g g^T (the 2-D Gaussian window)."""
    k = len(g)
    h, w = x.shape
    rows = sum(g[i] * x[i : h - k + 1 + i] for i in range(k))
    return sum(g[j] * rows[:, j : w - k + 1 + j] for j in range(k))


def ssim(sr: np.ndarray, hr: np.ndarray, *, shave: int = 0) -> float:
    """Mean Y-channel SSIM of ``sr`` against ``hr`` (same-shaped uint8 RGB or gray), ``shave`` border pixels
    removed first; 1.0 when identical. Images must be at least 11x11 after shaving."""
    a, b = _scored_pair(sr, hr, shave)
    if min(a.shape) < _SSIM_WINDOW:
        raise InputError(f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after shaving, got {a.shape}")
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return float(np.mean(num / den))
