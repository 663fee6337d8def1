"""MATLAB-exact bicubic against the official Set5 LR files, the bicubic baseline, and the PSNR/SSIM definitions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import misread_matrix, misread_range, shared_path

from elan_video.errors import InputError
from elan_video.training.data import bicubic_downscale, bicubic_upscale, imresize, list_images, read_image
from elan_video.training.evaluate import evaluate
from elan_video.training.metrics import psnr, rgb_to_y, ssim

# Paper (ELAN, Table 2) bicubic rows for Set5 at x2, x3, x4.
PAPER_BICUBIC_SET5 = {2: 33.66, 3: 30.39, 4: 28.42}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_reproduces_official_set5_lr_bit_for_bit(scale: int) -> None:
    root = shared_path("data", "sr", "Set5")
    for hr_file in list_images(root / "HR"):
        official = read_image(root / "LR_bicubic" / f"X{scale}" / f"{hr_file.stem}x{scale}.png")
        ours = bicubic_downscale(read_image(hr_file), scale)
        assert ours.dtype == np.uint8
        assert ours.shape == official.shape
        assert np.array_equal(ours, official), f"{hr_file.name} x{scale}: {np.count_nonzero(ours != official)} px"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_baseline_on_set5_matches_the_paper(scale: int) -> None:
    result = evaluate("bicubic", shared_path("data", "sr", "Set5"), scale=scale)
    assert len(result.images) == 5
    assert result.psnr == pytest.approx(PAPER_BICUBIC_SET5[scale], abs=0.02)
    assert 0.8 < result.ssim < 0.94


def test_lossless_webp_images_are_listed_and_read_bit_exactly(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (21, 17, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (9, 12), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "b.webp", lossless=True)
    Image.fromarray(gray).save(tmp_path / "a.WEBP", lossless=True)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.WEBP", "b.webp"]
    assert np.array_equal(read_image(tmp_path / "b.webp"), rgb)
    # WebP has no gray mode: a gray image comes back as three equal channels.
    assert np.array_equal(read_image(tmp_path / "a.WEBP"), np.repeat(gray[:, :, None], 3, axis=2))


def test_gray_image_stays_gray_and_is_scored_on_gray_values() -> None:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    lr = bicubic_downscale(hr, 2)
    assert lr.shape == (20, 24)
    sr = bicubic_upscale(lr, 2)
    # On gray values, not on 16 + 219/255 * gray: the two differ by the studio-range factor.
    mse = np.mean((sr[2:-2, 2:-2].astype(float) - hr[2:-2, 2:-2]) ** 2)
    assert psnr(sr, hr, shave=2) == pytest.approx(10 * math.log10(255**2 / mse))


def test_sixteen_bit_gray_images_are_scaled_to_eight_bits_not_clamped(tmp_path: Path) -> None:
    from PIL import Image

    deep = np.array([[0, 257, 1000, 30000, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "gray16.png")
    got = read_image(tmp_path / "gray16.png")
    assert got.dtype == np.uint8 and got.shape == (1, 5)
    np.testing.assert_array_equal(got, [[0, 1, 4, 117, 255]])


def test_imresize_identity_shapes_and_constant_images() -> None:
    flat = np.full((30, 21, 3), 77, np.uint8)
    # A constant image stays constant at every scale (weights sum to one, symmetric padding).
    assert np.array_equal(imresize(flat, scale=0.5, output_shape=(15, 11)), np.full((15, 11, 3), 77, np.uint8))
    assert imresize(flat, scale=1 / 3).shape == (10, 7, 3)
    assert np.array_equal(bicubic_upscale(flat, 4), np.full((120, 84, 3), 77, np.uint8))
    with pytest.raises(InputError):
        imresize(flat.astype(np.float32), scale=0.5)


def test_y_channel_definition() -> None:
    white, black = np.full((1, 1, 3), 255, np.uint8), np.zeros((1, 1, 3), np.uint8)
    assert rgb_to_y(white)[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16.0)


def test_psnr_and_ssim_properties() -> None:
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert psnr(hr, hr, shave=2) == math.inf
    assert ssim(hr, hr, shave=2) == pytest.approx(1.0)
    noisy = np.clip(hr.astype(int) + rng.integers(-8, 9, hr.shape), 0, 255).astype(np.uint8)
    # Errors confined to the shaved border do not count.
    bordered = hr.copy()
    bordered[:3] = 0
    assert psnr(bordered, hr, shave=3) == math.inf
    assert 25 < psnr(noisy, hr) < 45
    assert ssim(noisy, hr) < 1.0
    with pytest.raises(InputError):
        psnr(hr, hr[:-1])


def test_ssim_matches_scikit_image_gaussian_ssim() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (50, 61, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    expected = metrics.structural_similarity(
        rgb_to_y(a), rgb_to_y(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_heic_and_avif_photos_can_be_scored(tmp_path: Path) -> None:
    """A folder of phone photos (HEIC) or AVIF files is listed and read for eval like any other."""
    from video_clips import pattern

    from elan_video.media.image import write_image

    picture = pattern(0, 24, 16)
    write_image(tmp_path / "IMG_0002.HEIC", picture)
    write_image(tmp_path / "c.avif", picture)
    assert [p.name for p in list_images(tmp_path)] == ["IMG_0002.HEIC", "c.avif"]
    for name in ("IMG_0002.HEIC", "c.avif"):
        got = read_image(tmp_path / name)
        assert got.shape == (16, 24, 3) and got.dtype == np.uint8
        assert psnr(got, picture) > 40  # lossy codecs: the same picture, not its bits (measured: Y PSNR 49.2-56.3 dB)
    # Guards: a pixel's shift 27.7 dB, BT.709 read as BT.601 27.6 (and back 28.4), limited range shown as full 33.3.
    wrong = [np.roll(picture, 1, axis=1), misread_matrix(picture), misread_matrix(picture, coded="601", read="709")]
    assert max(psnr(w, picture) for w in [*wrong, misread_range(picture)]) < 40
