"""upscale_video and colour: range, bit depth (10-bit in, 10-bit out, or a warning), grey video, HDR10
metadata, MJPEG's full range."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import detail_elan, misread_matrix, misread_range, shared_path, tiny_elan
from pipeline_helpers import FAST
from pipeline_helpers import up2 as up2  # the shared fixture, re-exported so that pytest finds it here
from video_clips import make_clip, video_frames

from elan_video.jobs.pipeline import upscale_video
from elan_video.media.video import VideoWarning, probe, read_frames
from elan_video.media.video.pixels import luma
from elan_video.model.upscaler import Upscaler, psnr, upscale_image


def test_ten_bit_source_stays_ten_bit_and_the_model_sees_sixteen_bit_rgb(tmp_path: Path) -> None:
    src = shared_path("data", "video", "realshort_hevc_main10_aac.mp4")
    model = detail_elan(2)
    summary = upscale_video(src, tmp_path / "deep.mkv", model=model, end=0.04, **FAST)
    assert (summary.codec, summary.pix_fmt, summary.frames) == ("libx265", "yuv420p10le", 2)
    assert probe(tmp_path / "deep.mkv").bit_depth == 10
    # Lossless 10-bit RGB shows what the model produced from the uint16 frames, to 10-bit precision.
    upscale_video(src, tmp_path / "rgb10.mkv", model=model, end=0.04, codec="ffv1", pix_fmt="gbrp10le", **FAST)
    source = next(read_frames(src)).image
    assert source.dtype == np.uint16
    want = upscale_image(model, source, **FAST)
    (_, got), (_, following) = video_frames(tmp_path / "rgb10.mkv", fmt="rgb48le")
    assert got.shape == (480, 640, 3)
    assert psnr(got, want, peak=65535.0) >= 50  # measured: 68.7 dB (10-bit rounding alone: 71.2)
    eight_bit = (want.astype(np.float64) / 257).round() * 257
    assert psnr(got, want, peak=65535.0) > psnr(eight_bit, want, peak=65535.0) + 6  # 8-bit rounding: 59.1 dB
    # Guards: the source's BT.601 decoded as BT.709 42.7 dB, its limited range shown as full 27.5, a pixel's shift
    # 31.7, the next frame's output 28.5 (the tamed tiny model's: 46.9, 44.7, 31.9 and 50.8).
    level = want.astype(np.float64) / 257
    wrong = [misread_matrix(level, coded="601", read="709"), misread_range(level), np.roll(level, 1, axis=1)]
    assert max(psnr(w * 257, want, peak=65535.0) for w in wrong) < 50
    assert psnr(following, want, peak=65535.0) < 50


def test_full_range_source_gives_full_range_output_with_the_same_colours(tmp_path: Path) -> None:
    src = tmp_path / "full.mp4"
    make_clip(src, frames=2, size=(48, 32), matrix=1, full_range=True, options={"crf": "0"})
    model = detail_elan(2)
    dst = tmp_path / "out.mp4"
    # 4:4:4 and x264's lossless crf 0 leave only the RGB<->YUV rounding, so a range mix-up (~10% contrast) shows.
    upscale_video(src, dst, model=model, crf=0, pix_fmt="yuv444p", **FAST)
    info = probe(dst)
    assert (info.colour.matrix, info.colour.range) == (1, 2)
    first, second = (upscale_image(model, f.image, **FAST) for f in read_frames(src))
    got = next(read_frames(dst)).image
    assert psnr(got, first) > 42  # measured: 48.6 dB
    # Guards: the output's codes written limited but tagged full (washed out) 28.9 dB; BT.709 read as BT.601 27.4;
    # a pixel's shift 28.0; the next frame's output 21.8 (the tamed tiny model's range and matrix mix-ups scored
    # 45.8 and 46.1, above this threshold).
    assert psnr(misread_range(first), first) < 42 and psnr(misread_matrix(first), first) < 42
    assert psnr(np.roll(first, 1, axis=1), first) < 42 and psnr(got, second) < 42


def test_a_grey_video_comes_out_without_a_tint(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "film.mkv"
    make_clip(src, frames=3, codec="ffv1", pix_fmt="gray")
    upscale_video(src, tmp_path / "out.mkv", model=up2, codec="ffv1", pix_fmt="gbrp")
    frames = [image.astype(int) for _, image in video_frames(tmp_path / "out.mkv")]
    assert len(frames) == 3
    # The network's R, G and B disagree on grey input (by up to 15 levels here); the writer gives all three the luma.
    network = [up2(f.image) for f in read_frames(src)]
    assert all((n[..., 0] != n[..., 1]).any() for n in network)
    assert all((f[..., 0] == f[..., 1]).all() and (f[..., 1] == f[..., 2]).all() for f in frames)
    # A picture, not a flat field: measured std 38.8-41.0 (the tamed tiny model's near-flat output: 2.7-2.9).
    assert max(f.std() for f in frames) > 20
    # The network's luma: measured identical (inf dB). Guards: the mean of its R, G and B 42.7-43.3 dB, a pixel's
    # shift 31.9-32.5, the next frame's luma 21.3 and 22.0.
    lumas = [luma(n) for n in network]
    assert all(psnr(f[..., 0], y) >= 50 for f, y in zip(frames, lumas, strict=True))
    assert all(psnr(f[..., 0], n.mean(axis=2)) < 50 for f, n in zip(frames, network, strict=True))
    assert all(psnr(np.roll(y, 1, axis=1), y) < 50 for y in lumas)
    assert all(psnr(frames[i][..., 0], lumas[i + 1]) < 50 for i in range(2))


def test_hdr10_metadata_an_encoder_cannot_take_is_reported(tmp_path: Path, up2: Upscaler) -> None:
    from test_video import make_hdr10_clip

    src = tmp_path / "hdr10.mkv"
    make_hdr10_clip(src)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        summary = upscale_video(src, tmp_path / "out.webm", model=up2)
    heard = "\n".join(summary.warnings)
    assert "libvpx-vp9 does not take the source's HDR10 mastering display" in heard
    assert "written with 8 bits" in heard  # PyAV's libvpx has no 10-bit VP9
    assert probe(tmp_path / "out.webm").colour.trc == 16


def test_ten_bit_y4m_in_ten_bit_y4m_out(tmp_path: Path) -> None:
    src = shared_path("data", "video", "foreman_qcif_30f_yuv420p10le.y4m")
    summary = upscale_video(src, tmp_path / "o.y4m", model=Upscaler(tiny_elan(2), scale=2, **FAST), end=0.08)
    assert summary.frames == 2 and summary.pix_fmt == "yuv420p10le"
    assert probe(tmp_path / "o.y4m").bit_depth == 10


def test_mjpeg_output_is_full_range_with_the_same_colours(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=2, size=(48, 32))
    upscale_video(src, tmp_path / "lossless.mkv", model=up2, codec="ffv1", pix_fmt="gbrp")
    # FFmpeg's MJPEG encoder refused the source's limited range ("Invalid argument"): JPEG's YUV is full range.
    upscale_video(src, tmp_path / "old_editor.avi", model=up2, codec="mjpeg")
    assert probe(tmp_path / "old_editor.avi").colour.range == 2
    want = [image.astype(float) for _, image in video_frames(tmp_path / "lossless.mkv")]
    got = [image.astype(float) for _, image in video_frames(tmp_path / "old_editor.avi")]
    assert len(got) == 2 and all(abs(g.mean() - w.mean()) < 2 for g, w in zip(got, want, strict=True))
    # The mean alone misses a range mix-up (it moves the mean by 1.3-1.8 levels here), so the pictures are compared
    # too: measured 33.9 dB. Guards: limited range shown as full 28.9 dB, BT.709 read as BT.601 27.4, a pixel's
    # shift 28.0-28.5, the next frame's 21.8.
    assert all(psnr(g, w) > 31 for g, w in zip(got, want, strict=True))
    wrong = [misread_range(want[0]), misread_matrix(want[0]), np.roll(want[0], 1, axis=1)]
    assert max(psnr(w, want[0]) for w in wrong) < 31 and psnr(got[0], want[1]) < 31


def test_ten_bits_an_encoder_cannot_keep_are_reported(tmp_path: Path) -> None:
    src = shared_path("data", "video", "foreman_qcif_30f_yuv420p10le.y4m")
    up = Upscaler(tiny_elan(2), scale=2, **FAST)
    # PyAV's libvpx is built without VP9's high bit depths.
    with pytest.warns(VideoWarning, match=r"libvpx-vp9 takes no 10-bit format here; .* written with 8 bits \(HEVC"):
        summary = upscale_video(src, tmp_path / "o.webm", model=up, end=0.04)
    assert summary.pix_fmt == "yuv420p"
