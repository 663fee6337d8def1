"""upscale_video on still images: image in, image out; a file without a suffix, grey and portrait photos,
HEIC, an animated image, and an image writer's warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_elan
from pipeline_helpers import FAST
from pipeline_helpers import up2 as up2  # the shared fixture, re-exported so that pytest finds it here
from video_clips import pattern

from elan_video.jobs.pipeline import upscale_video
from elan_video.media.video import VideoWarning
from elan_video.model.upscaler import Upscaler, psnr, upscale_image


@pytest.mark.parametrize(
    ("src", "dst"), [("in.png", "out.png"), ("in.ppm", "out.tga"), ("in.qoi", "out.ppm"), ("in.jfif", "out.png")]
)
def test_image_in_image_out_equals_upscale_image(tmp_path: Path, src: str, dst: str) -> None:
    from elan_video.media.image import read_image, write_image

    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    write_image(tmp_path / src, image)
    model = tiny_elan(2)
    summary = upscale_video(tmp_path / src, tmp_path / dst, model=model, **FAST)
    assert summary.frames == 1 and summary.output_size == (56, 40)
    decoded = read_image(tmp_path / src)  # JPEG's (JFIF's) loss included
    np.testing.assert_array_equal(read_image(tmp_path / dst), upscale_image(model, decoded, **FAST))


def test_an_image_saved_without_a_suffix_is_known_by_its_content(tmp_path: Path, up2: Upscaler) -> None:
    from elan_video.media.image import read_image, write_image

    image = pattern(2, 20, 12)
    write_image(tmp_path / "download.png", image)
    (tmp_path / "download.png").rename(tmp_path / "download")
    summary = upscale_video(tmp_path / "download", tmp_path / "out.png", model=up2)
    assert summary.output_size == (40, 24)
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), up2(image))


def test_a_grey_photo_comes_out_grey(tmp_path: Path, up2: Upscaler) -> None:
    from PIL import Image

    Image.fromarray(pattern(0, 28, 20)).convert("L").save(tmp_path / "scan.png")
    summary = upscale_video(tmp_path / "scan.png", tmp_path / "out.png", model=up2)
    with Image.open(tmp_path / "out.png") as out:
        assert (out.mode, out.size) == ("L", summary.output_size) == ("L", (56, 40))
        grey = np.asarray(out)
    colour = up2(np.repeat(np.asarray(Image.open(tmp_path / "scan.png"))[..., None], 3, axis=2)).astype(int)
    luma = (colour @ np.array([299, 587, 114]) + 500) // 1000  # ITU-R 601, as Pillow's convert("L")
    np.testing.assert_array_equal(grey, luma)


def test_portrait_photo_comes_out_upright_with_its_tags(tmp_path: Path, up2: Upscaler) -> None:
    from PIL import Image, ImageCms

    stored = np.random.default_rng(1).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to view", as a phone held upright writes it
    exif[0x010F] = "Phone"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(stored).save(tmp_path / "portrait.jpg", exif=exif, icc_profile=icc, quality=100, subsampling=0)
    summary = upscale_video(tmp_path / "portrait.jpg", tmp_path / "out.png", model=up2)
    assert summary.output_size == (40, 56)
    from elan_video.media.image import read_image

    decoded = read_image(tmp_path / "portrait.jpg")
    assert psnr(decoded, np.rot90(stored, -1)) > 40
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), up2(decoded))
    with Image.open(tmp_path / "out.png") as out:  # the colour profile and EXIF came along, now upright
        assert out.info["icc_profile"] == icc
        assert (out.getexif()[0x0112], out.getexif()[0x010F]) == (1, "Phone")


def test_an_animated_image_says_only_its_first_picture_is_upscaled(tmp_path: Path, up2: Upscaler) -> None:
    from PIL import Image

    pictures = [Image.fromarray(pattern(i, 20, 12)) for i in range(3)]
    pictures[0].save(tmp_path / "anim.png", save_all=True, append_images=pictures[1:], duration=100)
    with pytest.warns(VideoWarning, match="an animation of 3 pictures; only the first is upscaled"):
        summary = upscale_video(tmp_path / "anim.png", tmp_path / "out.jpg", model=up2)
    assert summary.output_size == (40, 24)
    # A camera JPEG carrying a preview picture (MPF) is one photograph, not an animation.
    Image.fromarray(pattern(0, 20, 12)).save(
        tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[Image.fromarray(pattern(1, 10, 6))]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)
        assert upscale_video(tmp_path / "camera.jpg", tmp_path / "camera.png", model=up2).output_size == (40, 24)


def test_a_heic_photo_is_upscaled_to_png_and_a_png_to_heic(tmp_path: Path, up2: Upscaler) -> None:
    from PIL import Image

    from elan_video.media.image import read_alpha, read_image, write_image

    rgba = np.dstack([pattern(0, 20, 12), np.full((12, 20), 255, np.uint8)])
    rgba[:6, :6, 3] = 0
    write_image(tmp_path / "IMG_0001.HEIC", rgba)
    summary = upscale_video(tmp_path / "IMG_0001.HEIC", tmp_path / "big.png", model=up2)
    assert summary.output_size == (40, 24)
    with Image.open(tmp_path / "big.png") as image:
        assert image.mode == "RGBA"
        got = np.asarray(image)
    source = read_image(tmp_path / "IMG_0001.HEIC")
    np.testing.assert_array_equal(got[..., :3], up2(source))
    upscale_video(tmp_path / "big.png", tmp_path / "bigger.heic", model=up2)
    assert read_image(tmp_path / "bigger.heic").shape == (48, 80, 3)
    assert read_alpha(tmp_path / "bigger.heic") is not None


def test_an_image_writers_warning_names_the_destination_not_the_temporary_file(tmp_path: Path, up2: Upscaler) -> None:
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(pattern(0, 16, 12)).save(tmp_path / "icc.png", icc_profile=icc)
    with pytest.warns(VideoWarning) as heard:
        upscale_video(tmp_path / "icc.png", tmp_path / "out.bmp", model=up2)
    assert [str(w.message) for w in heard] == [
        "out.bmp: BMP cannot hold the source's ICC profile and EXIF; not written"
    ]
