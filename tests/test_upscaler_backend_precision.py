"""Upscaler: the torchscript backend against eager with a partial last batch, and precision="auto" deciding by
measurement, falling back to fp32 for a model whose reduced precision is genuinely inaccurate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import detail_elan, tiny_elan
from video_clips import pattern

import elan_video.model.upscaler as upscaler_module
from elan_video.model.arch import ELAN
from elan_video.model.backends import Forward, build_backend, precision_candidates
from elan_video.model.upscaler import MIN_PSNR_DB, Upscaler, psnr

CPU = torch.device("cpu")
# Both backends run the same BatchNorm-folded network in float32 on the same CPU kernels; tracing and freezing may
# fold constants and reorder a few additions, which changes float32 rounding (2^-24 relative, 1.5e-5 at 255) over
# some tens of operations: far below 1e-3. (Measured here: 0.) A one-pixel shift or a swapped frame moves the
# output by whole levels.
TORCHSCRIPT_TOLERANCE = 1e-3


def _frames(count: int, height: int, width: int) -> np.ndarray:
    """``count`` different pictures (N x H x W x 3 uint8): a swap of two shows."""
    return np.stack([pattern(3 * i, width, height, seed=i) for i in range(count)])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("height", "width"), [(24, 32), (19, 30)])
def test_torchscript_equals_eager_with_a_partial_last_batch(height: int, width: int) -> None:
    model = tiny_elan(2)
    eager = Upscaler(model, device="cpu", precision="fp32", backend="eager", batch=3)
    traced = Upscaler(model, device="cpu", precision="fp32", backend="torchscript", batch=3)
    frames = _frames(4, height, width)
    x = eager.to_tensor(frames)
    want, got = eager.forward_tensor(x), traced.forward_tensor(x)
    # Traces are specialised to a shape: 4 frames in batches of 3 needed a full batch's and a partial one's.
    assert sorted(traced._forwards) == [(1, 3, height, width), (3, 3, height, width)]
    assert got.shape == want.shape == (4, 3, 2 * height, 2 * width)
    assert (got - want).abs().max().item() <= TORCHSCRIPT_TOLERANCE
    # Through the public uint8 path: a difference under the tolerance can move a value across a half level at most.
    assert np.abs(traced.upscale_batch(frames).astype(int) - eager.upscale_batch(frames)).max() <= 1
    # Guard: what a real fault would look like falls far outside the tolerance.
    shifted = torch.roll(got, shifts=1, dims=3)  # every picture one output pixel to the right
    assert (shifted - want).abs().max().item() > 100 * TORCHSCRIPT_TOLERANCE
    for i, j in ((0, 1), (2, 3)):  # within the full batch, and across it into the partial one
        order = list(range(4))
        order[i], order[j] = j, i
        assert (got[order] - want).abs().max().item() > 100 * TORCHSCRIPT_TOLERANCE


def _inaccurate_in_reduced_precision(model: ELAN) -> ELAN:
    """``model`` with its attention logits made 64 times larger: GMSA's softmax(q q^T) has no 1/sqrt(d) scaling, so
    8 times larger q projections square into logits whose rounding in bf16 (8-bit mantissa) moves the softmax's
    winners, and the output moves with them; fp32 still computes it faithfully."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("project_inp"):
                module[0].weight.mul_(8.0)
    return model


def _bf16_psnr(model: ELAN, image: np.ndarray) -> float:
    """PSNR of the eager bf16 network's output against fp32's on ``image``, as _measure_precision measures it."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        outputs = [
            build_backend(model, backend="eager", precision=p, device=CPU, example=x)(x).clamp(0, 255)
            for p in ("fp32", "bf16")
        ]
    return psnr(outputs[1], outputs[0])


def _shifted_psnr(model: ELAN, image: np.ndarray) -> float:
    """PSNR of the fp32 network's output one pixel to the right against itself: what a misaligned output scores."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        out = build_backend(model, backend="eager", precision="fp32", device=CPU, example=x)(x).clamp(0, 255)
    return psnr(torch.roll(out, 1, dims=-1), out)


@pytest.mark.usefixtures("one_thread")
def test_auto_falls_back_to_fp32_when_the_reduced_precision_misses_45_db(monkeypatch: pytest.MonkeyPatch) -> None:
    # bf16 offered as a candidate whatever this CPU's matmul speed (a CPU without native bf16 emulates it, slowly
    # but correctly), so that the accuracy check decides.
    monkeypatch.setattr(upscaler_module, "precision_candidates", lambda device, backend="eager": ["bf16"])
    image = pattern(5, 48, 40)  # smaller than the 64-pixel probe: the whole picture is measured
    model = _inaccurate_in_reduced_precision(detail_elan(2))
    assert _bf16_psnr(model, image) < MIN_PSNR_DB - 10  # the premise: bf16 is genuinely far off here (26.7 dB)
    up = Upscaler(model, device="cpu", precision="auto")
    assert up.precision == "auto"
    out = up(image)
    assert up.precision == "fp32"
    np.testing.assert_array_equal(out, Upscaler(model, device="cpu", precision="fp32")(image))
    bf16 = Upscaler(model, device="cpu", precision="bf16")(image)
    assert psnr(bf16, out) < MIN_PSNR_DB  # what "auto" avoided
    # Guard: the same candidate with a well-conditioned model passes the check and is taken. Measured: 76.7 dB; a
    # pixel's shift scores 28.9 (with the tamed tiny model 30.3, and a flat field as much).
    tame = detail_elan(2)
    assert _bf16_psnr(tame, image) >= MIN_PSNR_DB
    assert _shifted_psnr(tame, image) < MIN_PSNR_DB
    up = Upscaler(tame, device="cpu", precision="auto")
    up(image)
    assert up.precision == "bf16"


@pytest.mark.usefixtures("one_thread")
def test_auto_on_this_cpu_is_decided_by_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidates are the precisions whose matmul measured faster than fp32 here (none on a CPU without native
    bf16, where fp32 is kept without a trial); each candidate's output is then measured against fp32's on a probe
    crop of the first frame, and the first within 45 dB is taken."""
    built: list[tuple[str, tuple[int, ...]]] = []

    def recording(model: ELAN, *, backend: str, precision: str, device: torch.device, example: torch.Tensor) -> Forward:
        built.append((precision, tuple(example.shape)))
        return build_backend(model, backend=backend, precision=precision, device=device, example=example)

    monkeypatch.setattr(upscaler_module, "build_backend", recording)
    candidates = precision_candidates(CPU)
    assert set(candidates) <= {"bf16"}
    image = pattern(2, 80, 72)
    model = detail_elan(2)
    up = Upscaler(model, device="cpu", precision="auto")
    up(image)
    probe = (1, 3, 64, 64)  # the centre crop _measure_precision compares on
    if not candidates:
        assert up.precision == "fp32"
        assert built == [("fp32", (1, 3, 72, 80))]  # no trial: only the network that then ran
        return
    # A trial per candidate against an fp32 reference on the probe, then the chosen precision on the frame.
    assert built[:2] == [("fp32", probe), ("bf16", probe)]
    assert _bf16_psnr(model, image[4:68, 8:72]) >= MIN_PSNR_DB  # the tame model passes at this crop (76.5 dB)...
    assert _shifted_psnr(model, image[4:68, 8:72]) < MIN_PSNR_DB  # (where a pixel's shift scores 28.4)
    assert up.precision == "bf16"  # ...so the measured-faster bf16 is taken
    assert built[2:] == [("bf16", (1, 3, 72, 80))]
