"""upscale_video and everything beside the picture: subtitles, global tags and chapters, a camera's timecode,
Matroska attachments, which track plays by default, cover art, and a second video stream."""

from __future__ import annotations

import contextlib
from pathlib import Path

import av
import numpy as np
import pytest
from pipeline_helpers import up2 as up2  # the shared fixture, re-exported so that pytest finds it here
from video_clips import SRT, make_clip, make_tone, packets, pattern

from elan_video.errors import InputError
from elan_video.jobs.pipeline import upscale_video
from elan_video.media.video import VideoWarning, probe
from elan_video.model.upscaler import Upscaler


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
