"""Peak memory of the driver of a job on Ray workers (issue 25: the driver stays bounded however long the video).

    python tools/driver-memory.py FRAMES [--size 640x360] [--segment 2]

Writes a synthetic H.264 clip (B-frames, a keyframe every 50 frames) of FRAMES frames into /tmp, upscales it x2
with the test suite's small picture-making network on two local Ray workers, and prints the driver's peak
resident memory against its peak after Ray and the model were loaded. Run from the repository root.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", type=int)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--segment", type=float, default=2.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import ray
    from conftest import detail_elan
    from video_clips import make_clip

    from elan_video.jobs.pipeline import upscale_video
    from elan_video.model.upscaler import Upscaler

    folder = Path(tempfile.mkdtemp(prefix="driver-memory-"))
    src = folder / "long.mp4"
    make_clip(src, frames=args.frames, size=(width, height), options={"bf": "3", "g": "50", "crf": "18"})
    up = Upscaler(detail_elan(2), scale=2, device="cpu", precision="fp32")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    before = _peak_mib()
    began = time.perf_counter()
    summary = upscale_video(src, folder / "out.mp4", model=up, workers=2, segment=args.segment)
    seconds = time.perf_counter() - began
    ray.shutdown()
    print(
        f"source {src.stat().st_size / 1e6:.1f} MB, {summary.frames} frames {width}x{height} -> x2, {summary.segments}"
    )
    print(f"output {(folder / 'out.mp4').stat().st_size / 1e6:.1f} MB in {seconds:.0f} s")
    print(f"driver peak RSS {_peak_mib():.0f} MiB (after Ray and the model: {before:.0f} MiB)")


if __name__ == "__main__":
    main()
