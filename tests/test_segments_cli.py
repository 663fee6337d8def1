"""``elan-video IN OUT`` in segments (the default) as a user runs it: killed with SIGKILL mid-job, then the same
command resumes; ``--json``; ``--no-resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from video_clips import make_clip, tiny_checkpoint, video_frames

from elan_video.jobs.segments import plan_segments
from elan_video.jobs.workdir import work_folder_for

_SCRIPT = Path(sys.executable).with_name("elan-video")
ELAN_VIDEO = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "elan_video"]
REPO = Path(__file__).resolve().parents[1]
# A tiny model is all per-operator overhead: with every core, PyTorch's spinning threads starve the decoder and
# encoder on a busy 2-core machine (a 2.5 s job took 30 s).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(src: Path, dst: Path, model: Path, *extra: str) -> list[str]:
    options = ["--model", str(model), "--device", "cpu", "--precision", "fp32", "--backend", "eager"]
    options += ["--codec", "ffv1", "--pix-fmt", "gbrp"]
    return [*ELAN_VIDEO, str(src), str(dst), *options, "--segment", "0.4", "-q", *extra]


def _finished_segments(folder: Path) -> int:
    try:
        return len(json.loads((folder / "manifest.json").read_text())["segments"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_of_the_process_group_then_the_same_command_resumes(tmp_path: Path) -> None:
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=100, size=(48, 32), options={"g": "10", "keyint_min": "10", "sc_threshold": "0"})
    total = len(plan_segments(src, seconds=0.4))
    assert total >= 5
    model = tiny_checkpoint(tmp_path)
    dst = tmp_path / "out.mkv"
    folder = work_folder_for(dst)
    proc = subprocess.Popen(
        _command(src, dst, model), cwd=REPO, env=ENV, start_new_session=True, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while _finished_segments(folder) < 2:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no segment finished"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a crash or `kill -9` of the group would
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and not dst.exists()

    done = subprocess.run(
        _command(src, dst, model, "--json"), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["segments"]["total"] == total and summary["segments"]["resumed"] >= 2
    assert summary["segments"]["resumed"] + summary["segments"]["processed"] == total
    assert summary["frames"] == 100 and summary["output"] == str(dst) and summary["fps"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "out.mkv", model.name]

    reference = tmp_path / "reference.mkv"
    fresh = subprocess.run(
        _command(src, reference, model, "--json", "--no-resume"),
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout.strip().splitlines()[-1])["segments"]["resumed"] == 0
    got, want = video_frames(dst), video_frames(reference)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert all((a == b).all() for (_, a), (_, b) in zip(got, want, strict=True))
