"""upscale_video on damaged, missing or unusual input and failures: truncated files, lost frames counted (and
none where there are none), no video stream, an existing output, and no temporary file left behind."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import shared_path, tiny_elan
from pipeline_helpers import up2 as up2  # the shared fixture, re-exported so that pytest finds it here
from video_clips import make_audio_only, make_clip, video_frames

from elan_video.errors import InputError
from elan_video.jobs.pipeline import upscale_video
from elan_video.media.video import OutputError, VideoWarning, probe
from elan_video.model.upscaler import Upscaler


def _leftovers(folder: Path, keep: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - keep


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
