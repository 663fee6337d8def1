"""The standard SR benchmark protocol (DESIGN.md section 5): PSNR/SSIM on Y, border shaved by the scale.

A benchmark folder holds ``HR/`` (or the HR images directly) and optionally ``LR_bicubic/X{s}/`` with the
official LR images named ``{stem}x{s}.png``. When that folder is absent the LR images are made from HR
with the project's MATLAB-exact bicubic (HR cropped to a multiple of s first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OptionError
from ..model.arch import ELAN
from .data import bicubic_downscale, bicubic_upscale, crop_to_multiple, list_images, read_image
from .metrics import psnr, ssim

__all__ = ["BICUBIC", "EvalResult", "ImageScore", "benchmark_pairs", "evaluate"]

BICUBIC = "bicubic"  # model name of the MATLAB bicubic baseline


@dataclass(frozen=True)
class ImageScore:
    """Scores of one image: Y-PSNR in dB and Y-SSIM in 0..1."""

    name: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class EvalResult:
    """Per-image scores of one benchmark folder at one scale, and their means."""

    dataset: str
    scale: int
    images: tuple[ImageScore, ...]

    @property
    def psnr(self) -> float:
        """Mean Y-PSNR over images (dB)."""
        return float(np.mean([s.psnr for s in self.images]))

    @property
    def ssim(self) -> float:
        """Mean Y-SSIM over images."""
        return float(np.mean([s.ssim for s in self.images]))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: dataset, scale, psnr, ssim (means) and images (list of name/psnr/ssim)."""
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "images": [asdict(s) for s in self.images],
        }


def benchmark_pairs(data_dir: str | Path, *, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) for every image of a benchmark folder; uint8, H x W x 3 or H x W for gray images.

    HR is cropped to a multiple of ``scale``; LR is the official file when ``LR_bicubic/X{scale}`` exists,
    otherwise the MATLAB-exact bicubic of HR.
    """
    if scale not in (2, 3, 4):
        raise OptionError(f"scale must be 2, 3 or 4, got {scale}")
    root = Path(data_dir)
    hr_dir = root / "HR" if (root / "HR").is_dir() else root
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    files = list_images(hr_dir)
    if not files:
        raise InputError(f"{hr_dir}: no images")
    pairs = []
    for f in files:
        hr = crop_to_multiple(read_image(f), scale)
        if lr_dir.is_dir():
            lr_file = next((p for p in list_images(lr_dir) if p.stem == f"{f.stem}x{scale}"), None)
            if lr_file is None:
                raise InputError(f"{lr_dir}: no LR image for {f.name} (expected {f.stem}x{scale}.png)")
            lr = read_image(lr_file)
            if lr.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale) or lr.ndim != hr.ndim:
                raise InputError(f"{lr_file}: shape {lr.shape} does not match HR {hr.shape} at x{scale}")
        else:
            lr = bicubic_downscale(hr, scale)
        pairs.append((f.stem, lr, hr))
    return pairs


def _model_runner(model: ELAN | str | Path | None, *, scale: int, device: str | None) -> Callable:
    """A function uint8 LR (H x W x 3 or H x W) -> uint8 SR of the same layout."""
    if isinstance(model, str) and model == BICUBIC:
        return lambda lr: bicubic_upscale(lr, scale)
    from ..model.upscaler import Upscaler

    # Benchmarks are scored in fp32: reduced precisions are an inference speed option, not the model.
    up = Upscaler(model, scale=scale, device=device, precision="fp32")

    def run(lr: np.ndarray) -> np.ndarray:
        if lr.ndim == 3:
            return up(lr)
        # A gray image goes through the colour network as neutral RGB; the channel mean is its gray answer.
        sr = up(np.repeat(lr[:, :, None], 3, axis=2)).astype(np.float64)
        return np.clip(np.floor(sr.mean(axis=2) + 0.5), 0, 255).astype(np.uint8)

    return run


def evaluate(
    model: ELAN | str | Path | None,
    data_dir: str | Path,
    *,
    scale: int,
    device: str | None = None,
    on_image: Callable[[ImageScore], None] | None = None,
) -> EvalResult:
    """Score ``model`` on a benchmark folder by the standard protocol.

    model: an :class:`ELAN`, a checkpoint path, a bundled name, None (the bundled ``elan-light-x{scale}``)
    or ``"bicubic"`` (the MATLAB bicubic baseline). The network runs in fp32 on ``device`` (default: CUDA
    if available) through :class:`elan_video.Upscaler`; its output is rounded to uint8 before scoring.
    on_image: called with each image's score as it is computed (for progress display).
    Returns per-image and mean Y-PSNR/SSIM with ``scale`` border pixels shaved.
    """
    pairs = benchmark_pairs(data_dir, scale=scale)
    run = _model_runner(model, scale=scale, device=device)
    scores = []
    for name, lr, hr in pairs:
        sr = run(lr)
        score = ImageScore(name=name, psnr=psnr(sr, hr, shave=scale), ssim=ssim(sr, hr, shave=scale))
        scores.append(score)
        if on_image is not None:
            on_image(score)
    root = Path(data_dir)
    return EvalResult(dataset=root.resolve().name, scale=scale, images=tuple(scores))
