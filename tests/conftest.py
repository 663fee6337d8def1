"""Shared fixtures: the ../shared data folder (skips cleanly where absent, never in CI) and tiny models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from elan_video.model.arch import ELAN, GMSA, LFE

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ELAN_VIDEO_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Exports and backend choices go to a folder of the session's, not the user's cache (the command lines the
    tests run inherit it): a test never reuses another run's files."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ELAN_VIDEO_CACHE", str(tmp_path_factory.mktemp("elan-video-cache")))
        yield


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test where it is absent, fails it in CI (CI=true)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but shared data is missing: {path}")
        pytest.skip(f"shared data not available: {path}")
    return path


def kernel_offers_huge_pages() -> bool:
    """Whether Linux would back a madvise(MADV_HUGEPAGE) region with transparent huge pages."""
    try:
        return "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


def tame(model: ELAN, *, seed: int = 0) -> ELAN:
    """Random weights scaled like the reference fixture's so the unscaled attention is well conditioned."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p[0].numel()) ** 0.5))
        model.head[0].weight.mul_(0.02)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
        for name, mod in model.named_modules():
            if name.endswith("project_inp"):
                mod[0].weight.mul_(0.3)
    return model.eval()


def tiny_elan(scale: int = 2, *, seed: int = 0, **overrides: object) -> ELAN:
    """A 2-ELAB, 24-channel ELAN: fast enough for every test, same structure as ELAN-light."""
    config = {"m_elan": 4, "c_elan": 24, "n_share": 1, "r_expand": 2} | overrides
    return tame(ELAN(scale=scale, **config), seed=seed)  # type: ignore[arg-type]


def _bilinear_taps(scale: int) -> torch.Tensor:
    """scale x 3: the weights each output row (or column) of a block gives input offsets -1, 0, +1 under
    bilinear upscaling with pixel-centre alignment (PyTorch's align_corners=False)."""
    taps = torch.zeros(scale, 3)
    for i in range(scale):
        d = (i + 0.5) / scale - 0.5
        taps[i, 1] = 1 - abs(d)
        taps[i, 2 if d > 0 else 0] += abs(d)
    return taps


def detail_elan(scale: int = 2, *, seed: int = 0, body: float = 0.7, **overrides: object) -> ELAN:
    """:func:`tiny_elan` wired so that its output is a picture: the input upscaled plus the body's detail.

    The tamed tiny model gives a near-flat field (std 4-7 levels), so against its own output a flat image
    scores 31-33 dB and a one-pixel shift 45 dB: thresholds of 45 dB or less cannot see misalignment or colour
    bugs. Here the head copies the input's RGB (less the DIV2K mean, times 1/32) into feature channels 0-2,
    which the body reads but never writes (their rows of every LFE's last conv and every GMSA's project_out
    are zero), so they reach the tail twice (body path + long skip); the tail turns them into the bilinear
    upscale of the input and adds ``body`` x its tamed random weights on the other channels, which carry the LFE
    (shift-conv) and attention outputs. The body's weights stay tame's, so fp16/bf16 stay well conditioned; the
    3 x 3 tail sees the zero padding at a picture's (or a tile's) edge the way a trained network's does.

    Measured at x2 on a 60 x 84 crop of Set14 'comic' (std 67; x3 and x4 within 2.5 dB), PSNR against this
    model's own fp32 output (std 64): bicubic upscale 30.7 dB, bilinear 33.7 (the body matters); flat image
    12.0; the output shifted one pixel 25.4 (across) / 24.0 (down); the output for the crop moved by (2, 3)
    pixels, "another frame", 15.0; BT.709 decoded as BT.601 40.8 (:func:`misread_matrix`; more saturated
    pictures fall further); limited range shown as full 28.9 (:func:`misread_range`); tiles of 24 without
    overlap 36.8 (overlap 4: 50.2; tiles of 40, overlap 16: 57.9); the tamed tiny model 11.6. Bugs inside the
    network change it measurably, not always by 45 dB: attention uniform 51.3, not reused 50.6, cyclic shift
    dropped 52.9, logits scaled by 1/sqrt(d) 56.3; shift-conv directions flipped 47.7. Reduced precision stays
    close: fused bf16 75.1 dB, fused fp16 90.5. ``body`` scales the body's share (1.0: bicubic 29.0 dB,
    attention bugs 47.5-53.2 dB, tiles of 24 with overlap 4 47.5 dB).
    """
    model = tiny_elan(scale, seed=seed, **overrides)
    colours, gain = model.colors, 1 / 32
    with torch.no_grad():
        head = model.head[0]
        head.weight[:colours] = 0
        head.bias[:colours] = 0
        head.weight[:colours, :, 1, 1] = torch.eye(colours) * gain
        for module in model.modules():
            if isinstance(module, GMSA | LFE):
                writer = module.project_out if isinstance(module, GMSA) else module.conv1.shift_conv.conv1x1
                writer.weight[:colours] = 0
                writer.bias[:colours] = 0
        tail = model.tail[0]  # output channel (colour * scale + row) * scale + column, then PixelShuffle
        tail.weight.mul_(body)
        tail.weight[:, :colours] = 0
        tail.bias.zero_()
        taps = _bilinear_taps(scale)
        for colour in range(colours):
            for i in range(scale):
                for j in range(scale):
                    # x 1/2: channels 0-2 arrive twice, through the body and through the long skip.
                    tail.weight[(colour * scale + i) * scale + j, colour] = torch.outer(taps[i], taps[j]) / (2 * gain)
    return model.eval()


def misread_matrix(rgb: np.ndarray, *, coded: str = "709", read: str = "601") -> np.ndarray:
    """``rgb`` (H x W x 3, 0..255) coded to Y'CbCr with one matrix and decoded with the other (float64)."""

    def matrix(kr: float, kb: float) -> np.ndarray:
        kg = 1 - kr - kb
        return np.array(
            [[kr, kg, kb], [-kr / (2 - 2 * kb), -kg / (2 - 2 * kb), 0.5], [0.5, -kg / (2 - 2 * kr), -kb / (2 - 2 * kr)]]
        )

    coefficients = {"709": (0.2126, 0.0722), "601": (0.299, 0.114)}
    mix = np.linalg.inv(matrix(*coefficients[read])) @ matrix(*coefficients[coded])
    return np.clip(rgb.astype(np.float64) @ mix.T, 0, 255)


def misread_range(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (0..255) as limited-range codes shown as full range (washed out): 16 + x * 219 / 255, float64."""
    return 16 + rgb.astype(np.float64) * 219 / 255


@pytest.fixture
def tiny_model() -> ELAN:
    return tiny_elan(2)


@pytest.fixture
def detail_model() -> ELAN:
    return detail_elan(2)


@pytest.fixture
def reference_fixture() -> dict:
    return torch.load(shared_path("reference", "elan_light_x2.pt"), weights_only=True)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models are dominated by per-op overhead: one thread is faster, and far faster on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ELAN, Path]]:
    """A one-ELAB :func:`detail_elan` and its cached ONNX export, in a cache folder shared by the session's tests
    (the runtimes find it through ``ELAN_VIDEO_CACHE``)."""
    pytest.importorskip("onnxscript", reason="needs onnx and onnxscript: pip install 'elan-video[onnx]'")
    from elan_video.model.runtimes import cached_onnx

    folder = tmp_path_factory.mktemp("elan-video-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ELAN_VIDEO_CACHE", str(folder))
        model = detail_elan(2, m_elan=2)
        yield model, cached_onnx(model, progress=None)
