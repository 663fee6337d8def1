"""fuse(): the inference rewrite equals the faithful network (tolerances in the 0..255 range)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import detail_elan, tiny_elan

import elan_video as ev
import elan_video.model.fusion as fusion
from elan_video.model.arch import shift_kernel
from elan_video.model.fusion import shift_nhwc, window_index
from elan_video.model.upscaler import psnr


def test_fused_matches_the_authors_output(reference_fixture: dict) -> None:
    fused = ev.fuse(ev.load_model(reference_fixture["state_dict"]))
    with torch.inference_mode():
        out = fused(reference_fixture["input"])
    assert (out - reference_fixture["output"]).abs().max().item() <= 1e-2


@pytest.mark.parametrize(
    ("overrides", "size"),
    [
        ({}, (20, 36)),
        ({"n_share": 0}, (16, 16)),
        ({"n_share": 2, "m_elan": 6}, (33, 17)),
        ({"c_elan": 30, "r_expand": 1, "window_sizes": (4, 8, 8)}, (24, 40)),
        ({"window_sizes": (8, 16, 32)}, (40, 40)),  # 256+ token windows: the SDPA path
    ],
)
@pytest.mark.parametrize("scale", [2, 4])
def test_fused_equals_unfused_in_fp32(overrides: dict, size: tuple[int, int], scale: int) -> None:
    model = tiny_elan(scale, **overrides)
    x = torch.rand(2, 3, *size) * 255
    with torch.inference_mode():
        expected = model(x)
        got = ev.fuse(model)(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-2


def test_batchnorm_is_folded_not_dropped() -> None:
    model = tiny_elan(2)
    fused_before = ev.fuse(model)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(5.0)
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.inference_mode():
        assert (ev.fuse(model)(x) - model(x)).abs().max().item() <= 1e-2
        assert (fused_before(x) - model(x)).abs().max().item() > 0.1


def test_shift_slicing_equals_the_depthwise_convolution() -> None:
    x = torch.randn(2, 7, 9, 23)  # 23 channels: the remainder goes to the identity group
    expected = F.conv2d(x.permute(0, 3, 1, 2), shift_kernel(23), None, 1, 1, 1, 23).permute(0, 2, 3, 1)
    assert torch.equal(shift_nhwc(x), expected)


def test_window_index_folds_the_cyclic_shift() -> None:
    h, w, ws = 8, 12, 4
    image = torch.arange(h * w).view(h, w)
    rolled = torch.roll(image, shifts=(-ws // 2, -ws // 2), dims=(0, 1))
    first_window = rolled[:ws, :ws].reshape(-1)
    index = window_index(h, w, ws, True, torch.device("cpu"))
    assert torch.equal(index[: ws * ws], first_window)
    assert torch.equal(index.sort().values, torch.arange(h * w))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_stays_close(reference_fixture: dict, dtype: torch.dtype) -> None:
    model = ev.load_model(reference_fixture["state_dict"])
    x = reference_fixture["input"]
    with torch.inference_mode():
        out = ev.fuse(model, dtype=dtype)(x)
    want = reference_fixture["output"].clamp(0, 255)
    assert out.dtype == torch.float32
    # Measured: bf16 85.0 dB, fp16 103.1. A picture one pixel off scores 42.1, a flat one 33.3.
    assert psnr(out.clamp(0, 255), want) >= 60.0
    assert psnr(torch.roll(want, 1, dims=-1), want) < 60.0 and psnr(torch.full_like(want, want.mean()), want) < 60.0


def test_fp16_attention_logits_do_not_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unscaled q q^T exceeds fp16's 65504 here; the fused path must still give finite, right answers."""
    model = detail_elan(2)
    gmsa = model.body[0].modules_gmsa.gmsa_0
    width = gmsa.split_chns[0]
    with torch.no_grad():  # scale only the q halves: logits explode, values stay moderate
        for g in range(3):
            q_rows = slice(g * width, g * width + width // 2)
            gmsa.project_inp[1].weight[q_rows] *= 60.0
            gmsa.project_inp[1].bias[q_rows] *= 60.0
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        q = gmsa.project_inp(model.body[0].modules_lfe.lfe_0(model.head(model.sub_mean(x))))
        q0 = q[:, : width // 2]
        assert (q0 * q0).sum(1).amax() > 65504  # q q^T really leaves fp16's range
        expected = model(x).clamp(0, 255)
        got = ev.fuse(model, dtype=torch.float16)(x)
    assert torch.isfinite(got).all()
    assert psnr(got.clamp(0, 255), expected) >= 60.0  # measured: 82.2 dB

    # Guards, the overflow's two failure modes: logits formed in fp16 overflow to inf and the output is NaN;
    # saturated at fp16's largest value they stay finite but pick the wrong tokens (46.0 dB). A pixel's shift: 17.5.
    def fp16_logits(q: torch.Tensor) -> torch.Tensor:
        return (q @ q.transpose(-2, -1)).float().softmax(dim=-1).to(q.dtype)

    def fp16_logits_saturated(q: torch.Tensor) -> torch.Tensor:
        logits = (q.float() @ q.float().transpose(-2, -1)).clamp(-65504, 65504)
        return logits.softmax(dim=-1).to(q.dtype)

    with torch.inference_mode():
        monkeypatch.setattr(fusion, "_attention", fp16_logits)
        assert not torch.isfinite(ev.fuse(model, dtype=torch.float16)(x)).all()
        monkeypatch.setattr(fusion, "_attention", fp16_logits_saturated)
        wrong = ev.fuse(model, dtype=torch.float16)(x)
    assert torch.isfinite(wrong).all() and psnr(wrong.clamp(0, 255), expected) < 60.0
    assert psnr(torch.roll(expected, 1, dims=-1), expected) < 60.0


def test_fuse_rejects_other_modules_and_dtypes() -> None:
    with pytest.raises(TypeError):
        ev.fuse(torch.nn.Conv2d(3, 3, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        ev.fuse(tiny_elan(2), dtype=torch.int8)
