"""Which bundled weights the command line gives a source: the codec-aware ones for lossily coded video only."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_path
from video_clips import make_clip

from elan_video.jobs.default_weights import coded_lossily, default_weights


@pytest.mark.parametrize(
    ("name", "lossy"),
    [
        ("imageio_realshort.mp4", True),  # H.264
        ("realshort_hevc_main10_aac.mp4", True),
        ("realshort_odd319x239_vp9_opus.webm", True),
        ("openh264_test_qcif_cabac.264", True),  # a raw elementary stream
        ("foreman_qcif_30f_yuv420p10le.y4m", False),  # raw pictures
    ],
)
def test_real_clips_are_told_apart_by_their_codec(name: str, lossy: bool) -> None:
    path = shared_path("data", "video", name)
    assert coded_lossily(path) is lossy
    assert default_weights(path, scale=2) == ("elan-light-x2-video" if lossy else "elan-light-x2")
    assert default_weights(path, scale=3) == "elan-light-x3"  # no codec-aware x3


def test_lossless_codecs_images_and_unreadable_files_get_the_clean_weights(tmp_path: Path) -> None:
    for codec, pix_fmt, suffix in (
        ("ffv1", "yuv420p", ".mkv"),
        ("png", "rgb24", ".mov"),
        ("libx264", "yuv420p", ".mp4"),
    ):
        make_clip(tmp_path / f"clip{suffix}", frames=2, size=(16, 16), codec=codec, pix_fmt=pix_fmt)
    assert not coded_lossily(tmp_path / "clip.mkv") and not coded_lossily(tmp_path / "clip.mov")
    assert coded_lossily(tmp_path / "clip.mp4")  # the guard: the same clip coded lossily
    assert not coded_lossily(shared_path("data", "sr", "Set5", "HR", "baby.png"))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    assert not coded_lossily(tmp_path / "broken.mp4") and not coded_lossily(tmp_path / "missing.mp4")
    assert default_weights(tmp_path / "clip.mp4", scale=4) == "elan-light-x4-video"
