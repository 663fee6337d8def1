"""Still images: formats, 16 bits, orientation, ICC profile and EXIF, alpha; all through the real codecs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import misread_matrix, misread_range
from video_clips import pattern

from elan_video.errors import OptionError
from elan_video.media.image import PhotoTags, read_alpha, read_image, read_photo_tags, write_image
from elan_video.model.upscaler import psnr


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_still_images(tmp_path: Path, orientation: int) -> None:
    from PIL import Image, ImageOps

    stored = np.random.default_rng(orientation).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=exif)
    with Image.open(tmp_path / "photo.png") as image:
        upright = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    got = read_image(tmp_path / "photo.png")
    assert got.shape == ((12, 20, 3) if orientation <= 4 else (20, 12, 3))
    np.testing.assert_array_equal(got, upright)


def _camera_tags(orientation: int = 1) -> tuple[bytes, bytes]:
    """(an ICC profile, an EXIF block with a maker, a date taken, pixel dimensions 28 x 20 and ``orientation``)."""
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = orientation, "Phone"
    exif.get_ifd(0x8769).update({0x9003: "2024:05:01 10:00:00", 0xA002: 28, 0xA003: 20})
    return icc, exif.tobytes()


def _exif_fields(exif: bytes | None) -> tuple[object, ...]:
    from PIL import Image

    tags = Image.Exif()
    tags.load(exif or b"")
    ifd = tags.get_ifd(0x8769)
    return tags.get(0x0112), tags.get(0x010F), ifd.get(0x9003), ifd.get(0xA002), ifd.get(0xA003)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("o.png", np.uint8),
        ("o.jpg", np.uint8),
        ("o.webp", np.uint8),
        ("o.avif", np.uint8),
        ("o.tiff", np.uint8),
        ("o.heic", np.uint8),
        ("o.png", np.uint16),
    ],
)
def test_icc_profile_and_exif_follow_the_pixels(tmp_path: Path, name: str, dtype: type) -> None:
    from PIL import Image

    icc, exif = _camera_tags(orientation=6)
    Image.fromarray(pattern(0, 28, 20)).save(tmp_path / "photo.jpg", icc_profile=icc, exif=exif)
    tags = read_photo_tags(tmp_path / "photo.jpg")
    assert tags.icc_profile == icc
    assert _exif_fields(tags.exif) == (1, "Phone", "2024:05:01 10:00:00", 28, 20)  # read_image turns the pixels
    write_image(tmp_path / name, np.zeros((56, 40, 3), dtype), tags=tags)
    back = read_photo_tags(tmp_path / name)
    assert back.icc_profile == icc
    # Pillow's AVIF writer moves the orientation into AVIF's own irot/imir boxes (none for an upright picture).
    upright = None if name.endswith(".avif") else 1
    assert _exif_fields(back.exif) == (upright, "Phone", "2024:05:01 10:00:00", 40, 56)
    assert read_image(tmp_path / name).dtype == dtype


@pytest.mark.parametrize(("mode", "compression"), [("RGB", "tiff_lzw"), ("1", "group4"), ("I;16", "raw")])
def test_a_tiffs_own_layout_is_not_carried_to_the_upscaled_picture(tmp_path: Path, mode: str, compression: str) -> None:
    from PIL import Image

    picture = Image.fromarray(pattern(0, 28, 20)).convert(mode)
    picture.save(tmp_path / "scan.tif", compression=compression, tiffinfo={0x010F: "Scanner", 0x0112: 1})
    tags = read_photo_tags(tmp_path / "scan.tif")
    kept = Image.Exif()
    kept.load(tags.exif or b"")
    assert dict(kept) == {0x010F: "Scanner", 0x0112: 1}  # the maker, not the strips, size or compression
    for name in ("o.tif", "o.png"):
        write_image(tmp_path / name, np.zeros((40, 56, 3), np.uint8), tags=tags)
        assert read_image(tmp_path / name).shape == (40, 56, 3)
        assert _exif_fields(read_photo_tags(tmp_path / name).exif)[:2] == (1, "Scanner")


@pytest.mark.parametrize(
    ("mode", "space", "name", "kept"),
    [("CMYK", b"CMYK", "o.png", False), ("L", b"GRAY", "o.png", True), ("L", b"GRAY", "o.webp", False)],
)
def test_an_icc_profile_goes_only_with_pixels_it_describes(
    tmp_path: Path, mode: str, space: bytes, name: str, kept: bool
) -> None:
    from PIL import Image

    icc, _ = _camera_tags()
    profile = icc[:16] + space + icc[20:]  # the header's data colour space is what the profile describes
    Image.fromarray(pattern(0, 28, 20)).convert(mode).save(tmp_path / "print.jpg", icc_profile=profile)
    tags = read_photo_tags(tmp_path / "print.jpg")
    assert (tags.icc_profile, tags.grey) == (profile, mode == "L")
    heard: list[str] = []
    write_image(tmp_path / name, read_image(tmp_path / "print.jpg"), tags=tags, warn=heard.append)
    # CMYK is decoded to RGB; grey is written grey again, except in WebP, which has only RGB.
    written = "grey" if kept else "RGB"
    assert heard == (
        []
        if kept
        else [f"{name}: the source's ICC profile is for {space.decode().strip()} pixels, not {written}; not written"]
    )
    assert read_photo_tags(tmp_path / name).icc_profile == (profile if kept else None)


@pytest.mark.parametrize(
    ("name", "dtype", "alpha", "mode"),
    [
        ("g.png", np.uint8, False, "L"),
        ("g.png", np.uint8, True, "LA"),
        ("g.jpg", np.uint8, False, "L"),
        ("g.tif", np.uint8, True, "LA"),
        ("g.png", np.uint16, False, "I;16"),
        ("g.tif", np.uint16, False, "I;16"),
        ("g.png", np.uint16, True, "RGBA"),  # 16-bit grey with alpha goes as RGBA
        ("g.webp", np.uint8, False, "RGB"),
    ],
)
def test_a_grey_source_is_written_grey_where_the_format_has_grey(
    tmp_path: Path, name: str, dtype: type, alpha: bool, mode: str
) -> None:
    from PIL import Image

    scale = 257 if dtype == np.uint16 else 1
    grey = pattern(1, 20, 12)[..., :1].astype(dtype) * scale
    rgb = np.repeat(grey, 3, axis=2)
    rgb[..., 0] += 2 * scale  # the network's outputs for R, G and B disagree by a few levels
    image = np.dstack([rgb, np.full_like(grey, 128 * scale)]) if alpha else rgb
    write_image(tmp_path / name, image, tags=PhotoTags(grey=True))
    with Image.open(tmp_path / name) as written:
        assert written.mode.replace("I;16B", "I;16") == mode
    back = read_image(tmp_path / name)
    assert back.dtype == (dtype if name.endswith((".png", ".tif")) else np.uint8)
    if mode not in ("RGB", "RGBA"):
        assert (back[..., 0] == back[..., 1]).all() and (back[..., 1] == back[..., 2]).all()
        # 0.299 of the +2 on R reaches the luma
        want = (grey[..., 0].astype(np.int64) + round(0.299 * 2 * scale)) // (1 if back.dtype == dtype else 257)
        assert np.abs(back[..., 0].astype(np.int64) - want).max() <= (4 if name.endswith(".jpg") else 1)


@pytest.mark.parametrize(("name", "dtype"), [("o.bmp", np.uint8), ("o.tiff", np.uint16)])
def test_formats_without_room_for_the_tags_say_so(tmp_path: Path, name: str, dtype: type) -> None:
    icc, exif = _camera_tags()
    heard: list[str] = []
    write_image(tmp_path / name, np.zeros((8, 8, 3), dtype), tags=PhotoTags(icc, exif), warn=heard.append)
    assert len(heard) == 1 and "ICC profile and EXIF" in heard[0]
    assert read_photo_tags(tmp_path / name).icc_profile is None


def _rgba(dtype: type = np.uint8) -> np.ndarray:
    """A 12 x 20 RGBA picture: the pattern with a soft-edged transparent corner."""
    rgb = pattern(2, 20, 12).astype(dtype) * (257 if dtype == np.uint16 else 1)
    yy, xx = np.mgrid[0:12, 0:20]
    alpha = np.clip((xx + yy) * 10, 0, 255).astype(dtype) * (257 if dtype == np.uint16 else 1)
    return np.dstack([rgb, alpha]).astype(dtype)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        *[("a.png", np.uint8), ("a.webp", np.uint8), ("a.tiff", np.uint8), ("a.png", np.uint16), ("a.tiff", np.uint16)],
        *[("a.tga", np.uint8), ("a.jp2", np.uint8), ("a.qoi", np.uint8)],
    ],
)
def test_alpha_round_trips(tmp_path: Path, name: str, dtype: type) -> None:
    rgba = _rgba(dtype)
    write_image(tmp_path / name, rgba)
    np.testing.assert_array_equal(read_alpha(tmp_path / name), rgba[..., 3])
    back = read_image(tmp_path / name)
    assert back.dtype == dtype and back.shape == (12, 20, 3)
    if name != "a.webp":  # lossless
        np.testing.assert_array_equal(back, rgba[..., :3])


def test_opaque_and_alpha_free_images_have_no_alpha(tmp_path: Path) -> None:
    from PIL import Image

    opaque = _rgba()
    opaque[..., 3] = 255
    write_image(tmp_path / "opaque.png", opaque)
    write_image(tmp_path / "rgb.png", opaque[..., :3])
    assert read_alpha(tmp_path / "opaque.png") is None and read_alpha(tmp_path / "rgb.png") is None
    indexed = Image.fromarray(pattern(0, 8, 6)).convert("P")
    clear = int(np.asarray(indexed)[0, 0])
    indexed.save(tmp_path / "indexed.png", transparency=clear)  # the top-left pixel's palette entry is transparent
    alpha = read_alpha(tmp_path / "indexed.png")
    assert alpha is not None and alpha[0, 0] == 0
    np.testing.assert_array_equal(alpha, np.where(np.asarray(indexed) == clear, 0, 255))


def test_alpha_is_turned_upright_with_the_picture(tmp_path: Path) -> None:
    from PIL import Image

    rgba = _rgba()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgba).save(tmp_path / "turned.png", exif=exif)
    np.testing.assert_array_equal(read_alpha(tmp_path / "turned.png"), np.rot90(rgba[..., 3], -1))


def test_alpha_is_dropped_with_a_warning_where_the_format_has_none(tmp_path: Path) -> None:
    heard: list[str] = []
    write_image(tmp_path / "flat.jpg", _rgba(), warn=heard.append)
    assert len(heard) == 1 and "no alpha channel" in heard[0]
    assert read_image(tmp_path / "flat.jpg").shape == (12, 20, 3)
    with pytest.raises(OptionError, match="H x W x 3"):
        write_image(tmp_path / "bad.png", np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize(
    "name",
    [
        "a.png",
        "a.jpg",
        "a.bmp",
        "a.tiff",
        "a.webp",
        "a.avif",
        "a.gif",
        "a.heic",
        "a.ppm",
        "a.pnm",
        "a.tga",
        "a.jp2",
        "a.j2k",
        "a.qoi",
    ],
)
def test_images_round_trip(tmp_path: Path, name: str) -> None:
    image = pattern(3, 40, 24)
    write_image(tmp_path / name, image)
    back = read_image(tmp_path / name)
    assert back.shape == image.shape and back.dtype == np.uint8
    floor = 30 if name.endswith((".jpg", ".webp", ".avif", ".gif", ".heic")) else 60  # lossy: measured 33.1-34.0 dB
    assert psnr(back, image) > floor
    # Guards: a pixel's shift 24.1 dB, BT.709 read as BT.601 27.9 (and back 28.6), limited range shown as full 29.1.
    wrong = [np.roll(image, 1, axis=1), misread_matrix(image), misread_matrix(image, coded="601", read="709")]
    assert max(psnr(w, image) for w in [*wrong, misread_range(image)]) < floor


def test_netpbm_grey_and_bilevel_names_get_grey_and_bilevel_pictures(tmp_path: Path) -> None:
    image = pattern(3, 40, 24)
    write_image(tmp_path / "a.pgm", image)
    write_image(tmp_path / "a.pbm", image)
    grey, bilevel = read_image(tmp_path / "a.pgm"), read_image(tmp_path / "a.pbm")
    assert (grey[..., 0] == grey[..., 2]).all() and (bilevel[..., 0] == bilevel[..., 1]).all()
    assert len(np.unique(grey)) > 2 and set(np.unique(bilevel)) == {0, 255}
    assert (tmp_path / "a.pgm").read_bytes()[:2] == b"P5" and (tmp_path / "a.pbm").read_bytes()[:2] == b"P4"


@pytest.mark.parametrize("name", ["deep.png", "deep.tiff"])
def test_sixteen_bit_images_keep_sixteen_bits(tmp_path: Path, name: str) -> None:
    image = (pattern(1, 20, 12).astype(np.uint16) * 257 + 77).astype(np.uint16)
    write_image(tmp_path / name, image)
    back = read_image(tmp_path / name)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image)


def test_a_phone_heic_photo_comes_upright_with_its_alpha(tmp_path: Path) -> None:
    """A HEIC's rotation lives in its irot box: libheif applies it, and the EXIF then says 1 (no second turn)."""
    from PIL import Image

    from elan_video.media.image import frame_count

    read_photo_tags(tmp_path / "none.heic")  # registers pillow-heif's opener with Pillow, as any HEIC read does
    rgba = _rgba()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgba).save(tmp_path / "phone.heic", exif=exif.tobytes(), quality=100)
    got, alpha = read_image(tmp_path / "phone.heic"), read_alpha(tmp_path / "phone.heic")
    upright, wrong_way = np.rot90(rgba[..., :3], -1), np.rot90(rgba[..., :3], 1)
    # HEVC's 4:2:0 chroma on a 12 x 20 picture: ~28 dB, far above the picture turned the other way.
    assert got.shape == (20, 12, 3) and psnr(got, upright) > 25 and psnr(got, upright) > psnr(got, wrong_way) + 5
    assert alpha is not None and np.abs(alpha.astype(int) - np.rot90(rgba[..., 3], -1)).max() <= 8
    assert frame_count(tmp_path / "phone.heic") == 1
    assert _exif_fields(read_photo_tags(tmp_path / "phone.heic").exif)[0] == 1


def test_an_undecodable_heic_is_an_input_error(tmp_path: Path) -> None:
    from elan_video.errors import InputError

    (tmp_path / "broken.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    with pytest.raises(InputError, match=r"broken\.heic: the HEIF image cannot be decoded"):
        read_image(tmp_path / "broken.heic")
