"""upscale_video's resources and reports: progress against the estimated total, memory that does not grow
with the video's length, and the video benchmark's stages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import tiny_elan
from pipeline_helpers import FAST
from pipeline_helpers import up2 as up2  # the shared fixture, re-exported so that pytest finds it here
from video_clips import make_clip

from elan_video.jobs.pipeline import VideoSummary, upscale_video
from elan_video.model.upscaler import Upscaler


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

    summary = upscale_video(src, tmp_path / "out.mp4", model=up, progress=progress)
    assert summary.frames == frames
    growth = max(samples.values()) - samples[100]
    # Keeping every decoded and upscaled frame would cost this much; streaming must stay far below it.
    retained_all = (frames - 100) * 3 * side * side * (1 + 4)
    assert growth < min(50 * 2**20, retained_all // 3), f"resident memory grew {growth / 2**20:.1f} MB"


def test_video_bench_measures_each_stage_and_the_whole(up2: Upscaler) -> None:
    from elan_video.bench.video import run_video_bench

    result = run_video_bench(up2, size=(48, 32), frames=6)
    assert (result["frames"], result["out_width"], result["out_height"]) == (6, 96, 64)
    for key in ("decode_fps", "infer_fps", "encode_fps", "total_fps"):
        assert isinstance(result[key], float) and result[key] > 0
    # Decoding 48x32 H.264 is far cheaper than running even the tiny network on it.
    assert result["decode_fps"] > result["infer_fps"]
