"""upscale_video and the source's audio: copied packet for packet, re-encoded where the container refuses it,
its channels and language, and its timing with time ranges, MPEG-TS and MXF."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import shared_path, tiny_elan
from pipeline_helpers import FAST
from pipeline_helpers import up2 as up2  # the shared fixture, re-exported so that pytest finds it here
from video_clips import make_clip, make_tone, packets, video_frames

from elan_video.jobs.pipeline import upscale_video
from elan_video.media.video import VideoWarning
from elan_video.model.upscaler import Upscaler


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
        ("stereo", "out.3gp", ("aac", "stereo")),
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
