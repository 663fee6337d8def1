"""Shared fixtures: the ../shared data folder (skips cleanly where absent, never in CI) and tiny models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from elan_video.model.arch import ELAN

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ELAN_VIDEO_SHARED", REPO.parent / "shared"))


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


@pytest.fixture
def tiny_model() -> ELAN:
    return tiny_elan(2)


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
