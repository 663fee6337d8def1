"""upscale_video on a CUDA GPU (pinned double buffers, copy streams) against the CPU pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import detail_elan
from video_clips import make_clip, video_frames

from elan_video.jobs.pipeline import upscale_video
from elan_video.model.upscaler import psnr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pinned double buffers, copy streams)")
def test_cuda_pipeline_matches_the_cpu_pipeline(tmp_path: Path) -> None:
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=7, size=(48, 32))
    model = detail_elan(2)
    for device, batch in (("cpu", 1), ("cuda", 1), ("cuda", 3)):
        upscale_video(
            src, tmp_path / f"{device}{batch}.mkv", model=model, device=device, precision="fp32", batch=batch,
            codec="ffv1", pix_fmt="gbrp",
        )  # fmt: skip
    cpu = video_frames(tmp_path / "cpu1.mkv")
    # Guards, on the CPU's frames (measured on a machine without CUDA): a pixel's shift 27.8-28.7 dB, the next
    # frame's output 22.0-26.7 (the tamed tiny model's: 30.3-30.9 and 46.2-49.7, the next frame above 45).
    assert all(psnr(np.roll(b, 1, axis=1), b) < 45 for _, b in cpu)
    assert all(psnr(cpu[i][1], cpu[i + 1][1]) < 45 for i in range(len(cpu) - 1))
    for name in ("cuda1.mkv", "cuda3.mkv"):
        gpu = video_frames(tmp_path / name)
        assert [t for t, _ in gpu] == [t for t, _ in cpu]
        # Not yet measured on a GPU (written on a machine without one).
        assert all(psnr(a, b) > 45 for (_, a), (_, b) in zip(gpu, cpu, strict=True))
