"""Animated images (APNG, GIF, animated WebP and AVIF): every picture upscaled, timing, loop and transparency kept."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import detail_elan, shared_path
from PIL import Image
from video_clips import make_alpha_clip, make_clip, pattern, video_frames

from elan_video.errors import OptionError
from elan_video.jobs.pipeline import upscale_video
from elan_video.media.animation import read_animation, write_animation
from elan_video.media.video import VideoWarning, probe
from elan_video.model.upscaler import Upscaler


@pytest.fixture(scope="module")
def up2() -> Upscaler:
    """A tiny network whose pictures differ visibly, so a picture swapped, dropped or repeated is caught."""
    return Upscaler(detail_elan(2), scale=2, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def bundled2() -> Upscaler:
    """The trained x2 network: a transparent block stays transparent only through a network that upscales."""
    return Upscaler("elan-light-x2", scale=2, device="cpu", precision="fp32")


def _save(path: Path, pictures: list[np.ndarray], **options: object) -> None:
    images = [Image.fromarray(p) for p in pictures]
    images[0].save(path, save_all=True, append_images=images[1:], **options)


def _with_hole(picture: np.ndarray, index: int) -> np.ndarray:
    """RGBA: opaque, except a transparent 8 x 8 block at the top left of odd pictures."""
    alpha = np.full(picture.shape[:2], 255, np.uint8)
    if index % 2:
        alpha[:8, :8] = 0
    return np.dstack([picture, alpha])


def test_apng_keeps_every_picture_its_durations_and_loop(tmp_path: Path, up2: Upscaler) -> None:
    pictures = [pattern(i, 20, 12) for i in range(3)]
    _save(tmp_path / "anim.png", pictures, duration=[100, 200, 300], loop=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)
        summary = upscale_video(tmp_path / "anim.png", tmp_path / "out.png", model=up2)
    assert (summary.frames, summary.input_size, summary.output_size) == (3, (20, 12), (40, 24))
    out = read_animation(tmp_path / "out.png")
    assert out.durations_ms == [100, 200, 300] and out.loop == 2
    for got, picture in zip(out.frames, pictures, strict=True):
        np.testing.assert_array_equal(got, up2(picture))  # PNG is lossless: exactly the network's pictures


def test_gif_keeps_its_transparency_and_plays_once_when_it_did(tmp_path: Path, bundled2: Upscaler) -> None:
    pictures = [_with_hole(pattern(i, 24, 16), i) for i in range(3)]
    _save(tmp_path / "anim.gif", pictures, duration=[40, 80, 120], disposal=2, optimize=False)
    source = read_animation(tmp_path / "anim.gif")
    assert source.loop is None and source.frames[0].shape == (16, 24, 4)  # no loop extension: plays once
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)
        upscale_video(tmp_path / "anim.gif", tmp_path / "out.gif", model=bundled2)
    out = read_animation(tmp_path / "out.gif")
    assert len(out.frames) == 3 and out.durations_ms == [40, 80, 120] and out.loop is None
    for index, (got, picture) in enumerate(zip(out.frames, source.frames, strict=True)):
        assert got.shape == (32, 48, 4)
        hole = got[2:14, 2:14, 3]  # inside the upscaled 16 x 16 block, away from its soft edge
        assert (hole == 0).all() if index % 2 else (hole == 255).all()
        assert (got[20:, 20:, 3] == 255).all()
        want = bundled2(np.ascontiguousarray(picture[..., :3])).astype(int)
        opaque = got[..., 3] == 255
        # GIF's 256-colour palette, chosen per picture: close, not exact (measured: 2.7-2.9 levels on average).
        error = np.abs(got[..., :3].astype(int) - want)[opaque]
        assert error.mean() < 4.5
        # Guards: the next picture's output is 16-37 levels off, a pixel's shift 6.1-8.3.
        later = bundled2(np.ascontiguousarray(source.frames[(index + 1) % 3][..., :3])).astype(int)
        for wrong in (later, np.roll(want, 1, axis=1)):
            assert np.abs(wrong - want)[opaque].mean() > 4.5


def test_animated_webp_becomes_an_animated_gif(tmp_path: Path, up2: Upscaler) -> None:
    pictures = [pattern(i, 20, 12) for i in range(4)]
    _save(tmp_path / "anim.webp", pictures, duration=50, loop=0, lossless=True)
    summary = upscale_video(tmp_path / "anim.webp", tmp_path / "out.gif", model=up2, outscale=1.5)
    out = read_animation(tmp_path / "out.gif")
    assert summary.frames == 4 and summary.output_size == (30, 18)
    assert [f.shape for f in out.frames] == [(18, 30, 3)] * 4
    assert out.durations_ms == [50] * 4 and out.loop == 0


def test_an_apng_with_transparency_becomes_an_animated_avif(tmp_path: Path, bundled2: Upscaler) -> None:
    pictures = [_with_hole(pattern(i, 24, 16), i) for i in range(3)]
    _save(tmp_path / "anim.png", pictures, duration=[30, 40, 50])
    assert upscale_video(tmp_path / "anim.png", tmp_path / "out.avif", model=bundled2).frames == 3
    out = read_animation(tmp_path / "out.avif")
    assert [f.shape for f in out.frames] == [(32, 48, 4)] * 3 and out.durations_ms == [30, 40, 50]
    assert out.frames[1][:12, :12, 3].max() <= 16 and out.frames[0][:12, :12, 3].min() >= 240


def test_an_animation_written_to_a_still_format_keeps_its_first_picture(tmp_path: Path, up2: Upscaler) -> None:
    pictures = [pattern(i, 20, 12) for i in range(3)]
    _save(tmp_path / "anim.png", pictures, duration=100)
    with pytest.warns(
        VideoWarning, match=r"only the first is upscaled \(.gif, .png, .webp, .avif outputs keep them all\)"
    ):
        summary = upscale_video(tmp_path / "anim.png", tmp_path / "first.bmp", model=up2)
    assert summary.frames == 1
    with Image.open(tmp_path / "first.bmp") as image:
        np.testing.assert_array_equal(np.asarray(image), up2(pictures[0]))


def test_a_still_gif_goes_to_png_and_back_with_its_transparency(tmp_path: Path, bundled2: Upscaler) -> None:
    picture = _with_hole(pattern(0, 24, 16), 1)
    Image.fromarray(picture).save(tmp_path / "still.gif")
    assert upscale_video(tmp_path / "still.gif", tmp_path / "still.png", model=bundled2).frames == 1
    with Image.open(tmp_path / "still.png") as image:
        png = np.asarray(image)
    assert png.shape == (32, 48, 4)
    assert png[:12, :12, 3].max() <= 16 and png[20:, 20:, 3].min() >= 240  # 8-bit alpha, as the network gave it
    upscale_video(tmp_path / "still.png", tmp_path / "again.gif", model=bundled2)
    gif = read_animation(tmp_path / "again.gif").frames[0]
    assert gif.shape == (64, 96, 4)
    assert set(np.unique(gif[..., 3])) == {0, 255}  # GIF's transparency is one bit


@pytest.mark.parametrize("name", ["anim.gif", "anim.png", "anim.webp"])
def test_an_animation_may_become_a_video_with_its_timestamps(tmp_path: Path, up2: Upscaler, name: str) -> None:
    pictures = [pattern(i, 20, 12) for i in range(3)]
    _save(tmp_path / name, pictures, duration=[100, 200, 300], **({"lossless": True} if name.endswith("webp") else {}))
    summary = upscale_video(tmp_path / name, tmp_path / "out.mkv", model=up2, codec="ffv1", pix_fmt="gbrp")
    assert summary.frames == 3 and probe(tmp_path / "out.mkv").width == 40
    written = video_frames(tmp_path / "out.mkv")
    assert [t for t, _ in written] == pytest.approx([0.0, 0.1, 0.3])
    if not name.endswith("gif"):  # lossless sources: exactly the network's pictures (GIF's palette is not)
        for (_, got), picture in zip(written, pictures, strict=True):
            np.testing.assert_array_equal(got, up2(picture))


def test_a_still_png_does_not_become_a_video(tmp_path: Path, up2: Upscaler) -> None:
    Image.fromarray(pattern(0, 20, 12)).save(tmp_path / "still.png")
    with pytest.raises(OptionError, match=r"still\.png is an image but .*out\.mp4 names a video"):
        upscale_video(tmp_path / "still.png", tmp_path / "out.mp4", model=up2)


def test_write_animation_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    picture = pattern(0, 8, 8)
    with pytest.raises(OptionError, match=r"animations are written as \.gif, \.png, \.webp, \.avif, not \.jpg"):
        write_animation(tmp_path / "a.jpg", [picture], durations_ms=[10], loop=0)
    with pytest.raises(OptionError, match="2 pictures need as many durations, got 1"):
        write_animation(tmp_path / "a.gif", [picture, picture], durations_ms=[10], loop=0)
    with pytest.raises(OptionError, match="must all be H x W x 3 or x 4 uint8 of one size"):
        write_animation(tmp_path / "a.gif", [picture, picture[:4]], durations_ms=[10, 10], loop=0)
    with pytest.raises(OptionError, match="uint16"):
        write_animation(tmp_path / "a.png", [picture.astype(np.uint16)], durations_ms=[10], loop=0)
    assert not list(tmp_path.iterdir())


def test_the_icc_profile_is_kept_where_the_format_has_room_and_reported_where_not(tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pictures = [pattern(i, 8, 8) for i in range(2)]
    heard: list[str] = []
    write_animation(tmp_path / "a.png", pictures, durations_ms=[10, 10], loop=0, icc_profile=icc, warn=heard.append)
    write_animation(tmp_path / "a.gif", pictures, durations_ms=[10, 10], loop=0, icc_profile=icc, warn=heard.append)
    assert heard == ["a.gif: GIF cannot hold the source's ICC profile; not written"]
    with Image.open(tmp_path / "a.png") as image:
        assert image.info.get("icc_profile") == icc


def test_a_video_becomes_an_animated_gif_or_webp_frame_for_frame(tmp_path: Path, up2: Upscaler) -> None:
    # 30 fps with a variable gap: durations follow the timestamps (GIF in hundredths of a second, not drifting).
    clip = tmp_path / "clip.mkv"
    make_clip(clip, size=(20, 12), rate=Fraction(30), time_base=Fraction(1, 3000), pts=[0, 100, 200, 500, 600],
              codec="ffv1", pix_fmt="yuv444p")  # fmt: skip
    decoded = [picture for _, picture in video_frames(clip)]
    for name, durations in (("out.webp", [33, 34, 100, 33, 33]), ("out.gif", [30, 40, 100, 30, 30])):
        summary = upscale_video(clip, tmp_path / name, model=up2, end=1.0)
        out = read_animation(tmp_path / name)
        assert summary.frames == 5 and summary.output_size == (40, 24) and out.loop == 0
        assert out.durations_ms == durations
        for index, got in enumerate(out.frames):
            want = up2(decoded[index]).astype(int)
            error = np.abs(got.astype(int) - want).mean()
            assert error < 6.0  # measured: 3.5-3.7 levels (WebP, lossy 4:2:0 at quality 95), 3.6-4.6 (GIF's palette)
            # Guard: the next frame (a picture dropped, repeated or out of order) is 17-54 levels off.
            other = up2(decoded[(index + 1) % 5]).astype(int)
            assert np.abs(got.astype(int) - other).mean() > 2 * error


def test_a_video_to_an_animation_refuses_video_options_and_oversized_clips(
    tmp_path: Path, up2: Upscaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elan_video.jobs import pipeline

    clip = tmp_path / "clip.mp4"
    make_clip(clip, size=(20, 12), frames=6, audio_from=shared_path("data", "video", "imageio_realshort.mp4"))
    with pytest.raises(OptionError, match=r"clip\.mp4 is a video but .*out\.png names an image; .* or \.gif or \.webp"):
        upscale_video(clip, tmp_path / "out.png", model=up2)
    with pytest.raises(OptionError, match=r"out\.gif: an animated image; crf applies to videos only"):
        upscale_video(clip, tmp_path / "out.gif", model=up2, crf=20)
    # 6 pictures of 40 x 24 x 3 bytes: over a limit of 10 KiB, refused before decoding, nothing written.
    monkeypatch.setattr(pipeline, "ANIMATION_MEMORY", 10 << 10)
    with pytest.raises(OptionError, match=r"6 upscaled pictures need .* choose a shorter --start/--end range"):
        upscale_video(clip, tmp_path / "out.gif", model=up2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    monkeypatch.setattr(pipeline, "ANIMATION_MEMORY", 1 << 20)
    with pytest.warns(VideoWarning, match=r"the sound and subtitles of .*clip\.mp4 are not kept"):
        assert upscale_video(clip, tmp_path / "out.gif", model=up2).frames == 6


def test_a_video_with_alpha_becomes_a_webp_with_alpha(tmp_path: Path, up2: Upscaler) -> None:
    pictures = make_alpha_clip(tmp_path / "a.mov", codec="qtrle", pix_fmt="argb")
    assert upscale_video(tmp_path / "a.mov", tmp_path / "out.webp", model=up2).frames == 4
    out = read_animation(tmp_path / "out.webp")
    assert [f.shape for f in out.frames] == [(48, 64, 4)] * 4 and out.durations_ms == [100] * 4
    enlarged = [np.kron(p[..., 3], np.ones((2, 2), np.uint8)).astype(int) for p in pictures]  # the source's alpha
    for index, got in enumerate(out.frames):
        assert np.abs(got[..., 3].astype(int) - enlarged[index]).mean() < 8  # measured: 3.8-4.3 levels
        # Guard: alpha dropped (opaque: 52-96 levels off) or a neighbouring picture's (13-16) falls outside.
        neighbour = enlarged[index + 1 if index < 3 else index - 1]
        assert np.abs(255 - enlarged[index]).mean() > 8 and np.abs(neighbour - enlarged[index]).mean() > 8
