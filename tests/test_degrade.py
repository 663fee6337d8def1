"""Codec degradation of training pairs: real x264/JPEG round trips, reproducible pools, and it really degrades."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from elan_video.errors import InputError, OptionError
from elan_video.model.upscaler import psnr
from elan_video.training.data import bicubic_downscale, read_image
from elan_video.training.degrade import (
    VideoDegradation,
    VideoPatchSampler,
    add_noise,
    blur,
    h264_roundtrip,
    jpeg_roundtrip,
    pan_sequence,
    parse_codec,
)


def _photo() -> np.ndarray:
    return read_image(shared_path("data", "sr", "Set5", "HR", "baby.png"))


def test_h264_roundtrip_returns_every_frame_in_display_order() -> None:
    # Frames of distinct content (a bright bar in a different place each): decoded frame i must be input i,
    # although x264 reorders B-frames and the muxer stores milliseconds.
    frames = []
    for i in range(7):
        f = np.full((48, 64, 3), 40, np.uint8)
        f[:, 8 * i : 8 * i + 8] = 220
        frames.append(f)
    out = h264_roundtrip(frames, crf=20)
    assert len(out) == 7 and all(o.shape == (48, 64, 3) and o.dtype == np.uint8 for o in out)
    for i, o in enumerate(out):
        errors = [np.abs(o.astype(int) - f).mean() for f in frames]
        assert int(np.argmin(errors)) == i and errors[i] < 3


def test_h264_needs_even_sizes() -> None:
    with pytest.raises(InputError, match="even"):
        h264_roundtrip([np.zeros((15, 16, 3), np.uint8)], crf=23)


def test_compression_degrades_more_as_crf_rises_and_jpeg_quality_falls() -> None:
    hr = _photo()[100:292, 100:292]
    hrs, lrs = pan_sequence(hr, scale=2, size=(80, 80), frames=6, origin=(0, 0), step=(2, 2))
    assert [x.shape for x in hrs] == [(160, 160, 3)] * 6 and lrs[0].shape == (80, 80, 3)
    np.testing.assert_array_equal(lrs[3], bicubic_downscale(hr[6:166, 6:166], 2))

    def video_db(crf: int) -> float:
        return float(np.mean([psnr(a, b) for a, b in zip(h264_roundtrip(lrs, crf=crf), lrs, strict=True)]))

    db = [video_db(c) for c in (18, 28, 38)]
    assert db[0] > db[1] + 2 > db[2] + 4, db  # each step of 10 CRF costs several dB
    assert 30 < db[1] < 50
    jpeg = [psnr(jpeg_roundtrip(lrs[0], quality=q), lrs[0]) for q in (90, 50, 10)]
    assert jpeg[0] > jpeg[1] + 2 > jpeg[2] + 4, jpeg


def test_noise_and_blur_are_mild_and_seeded() -> None:
    image = _photo()[:64, :64]
    a = add_noise(image, sigma=2.0, rng=np.random.default_rng(1))
    b = add_noise(image, sigma=2.0, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert 1.2 < np.abs(a.astype(int) - image).mean() < 2.0  # E|N(0, 2)| = 1.6
    soft = blur(image, sigma=0.7)
    assert soft.shape == image.shape and soft.dtype == np.uint8
    assert np.abs(np.diff(soft.astype(int), axis=1)).mean() < np.abs(np.diff(image.astype(int), axis=1)).mean()


def test_parse_codec() -> None:
    assert str(parse_codec("x264:28")) == "x264:28" and parse_codec(" JPEG:50 ").level == 50
    for bad, match in {"x265:28": "x264:CRF", "x264": "x264:CRF", "x264:60": "0..51", "jpeg:0": "1..95"}.items():
        with pytest.raises(OptionError, match=match):
            parse_codec(bad)


def _close(a: tuple, b: tuple) -> bool:
    """Same HR patches (the seeded choices of image, pan, CRF and flips) and LR within x264's run-to-run wobble:
    libx264 through PyAV 19 gives one of two bitstreams for the same frames now and then, even with one thread."""
    lr_a, hr_a = a
    lr_b, hr_b = b
    if not (hr_a == hr_b).all():
        return False
    # Equally degraded: each pair's LR as far from the clean bicubic of its HR as the other run's (within 3 dB).
    return all(abs(x - y) < 3 for x, y in zip(_db((lr_a, hr_a)), _db((lr_b, hr_b)), strict=True))


def _db(pairs: tuple) -> list[float]:
    """PSNR of each LR patch against the MATLAB bicubic of its HR patch."""
    return [
        psnr(bicubic_downscale(h.permute(1, 2, 0).numpy(), 2), x.permute(1, 2, 0).numpy())
        for x, h in zip(*pairs, strict=True)
    ]


def test_video_sampler_is_seeded_resumable_and_degrades() -> None:
    folder = shared_path("data", "sr", "Set5", "HR")
    recipe = VideoDegradation(p_clean=0.0, p_jpeg=0.0, p_noise=0.0, p_blur=0.0, crf=(35, 35))

    def sampler(seed: int = 3) -> VideoPatchSampler:
        return VideoPatchSampler([folder], scale=2, patch=16, seed=seed, recipe=recipe, pool=12, reuse=2)

    a = sampler()
    state = a.state()
    first = a.sample_uint8(10)
    lr, hr = first
    assert lr.shape == (10, 3, 16, 16) and hr.shape == (10, 3, 32, 32)
    assert str(lr.dtype) == "torch.uint8" and str(hr.dtype) == "torch.uint8"
    # Same seed: same batches, also across the pool boundary (12 pairs x 2 passes) and after a resume.
    b = sampler()
    assert _close(b.sample_uint8(10), first)
    mid = b.state()
    rest = b.sample_uint8(20)
    c = sampler()
    c.load_state(mid)
    assert _close(c.sample_uint8(20), rest)
    a.load_state(state)
    assert _close(a.sample_uint8(10), first)
    assert not (sampler(seed=4).sample_uint8(10)[1] == hr).all()
    # CRF 35 LR is far from the clean bicubic of its HR patch (the pair was flipped/rotated as a whole).
    clean = VideoPatchSampler(
        [folder], scale=2, patch=16, seed=3, recipe=VideoDegradation(p_clean=1.0), pool=4, reuse=1
    ).sample_uint8(4)
    assert np.mean(_db(first)) < 36 and min(_db(clean)) > 45  # clean ones differ only by the crop's border taps


def test_jpeg_pools_are_exactly_reproducible() -> None:
    recipe = VideoDegradation(p_clean=0.0, p_jpeg=1.0, p_noise=1.0, p_blur=0.5)
    folder = shared_path("data", "sr", "Set5", "HR")
    pools = [
        VideoPatchSampler([folder], scale=3, patch=12, seed=9, recipe=recipe, pool=6).make_pool(0) for _ in range(2)
    ]
    assert pools[0][0].shape == (6, 12, 12, 3) and pools[0][1].shape == (6, 36, 36, 3)
    np.testing.assert_array_equal(pools[0][0], pools[1][0])
    np.testing.assert_array_equal(pools[0][1], pools[1][1])
