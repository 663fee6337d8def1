"""DESTINATION "-": the upscaled video as Y4M frames on standard output, for a player or another encoder, and the
Y4M header's frame rate (a player has nothing else to time the frames by)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import av
import pytest
from click.testing import CliRunner
from conftest import detail_elan
from PIL import Image
from video_clips import make_clip, pattern, tiny_checkpoint

from elan_video.cli import main
from elan_video.errors import OptionError, VideoWarning
from elan_video.jobs.pipeline import upscale_video
from elan_video.model.upscaler import Upscaler


def _fast(folder: Path) -> list[str]:
    model = str(tiny_checkpoint(folder))
    return ["--model", model, "--device", "cpu", "--precision", "fp32", "--backend", "eager"]


def _command(*args: str | Path, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """The real command in a process of its own: FFmpeg writes to file descriptor 1 itself."""
    argv = [sys.executable, "-m", "elan_video", *(str(a) for a in args)]
    return subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)


def _header(y4m: bytes) -> dict[str, str]:
    fields = y4m.split(b"\n", 1)[0].decode().split()
    assert fields[0] == "YUV4MPEG2"
    return {f[0]: f[1:] for f in fields[1:]}


def test_a_y4m_file_states_the_frame_rate_not_the_time_base(tmp_path: Path) -> None:
    # An MP4 at 25 fps with a 1/2500 time base: a header stating the time base (F2500:1) plays it 100x fast.
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=4, size=(16, 12), rate=Fraction(25), time_base=Fraction(1, 2500))
    up = Upscaler(detail_elan(2), scale=2, device="cpu", precision="fp32")
    upscale_video(src, tmp_path / "out.y4m", model=up)
    assert _header((tmp_path / "out.y4m").read_bytes())["F"] == "25:1"
    with av.open(str(tmp_path / "out.y4m")) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert times == pytest.approx([0.0, 0.04, 0.08, 0.12])


def test_standard_output_carries_the_y4m_the_file_would_hold(tmp_path: Path) -> None:
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=5, size=(32, 24))
    file_run = CliRunner().invoke(main, [str(src), str(tmp_path / "ref.y4m"), *_fast(tmp_path)])
    assert file_run.exit_code == 0, file_run.stderr
    process = _command(src, "-", *_fast(tmp_path))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert out == (tmp_path / "ref.y4m").read_bytes() and out.count(b"FRAME") == 5
    assert _header(out)["W"] == "64" and "-: 64x48, 5 frames" in err.decode()
    assert not list(tmp_path.glob(".*partial*")) and not (tmp_path / "-").exists()


def test_a_reader_that_stops_early_ends_the_job_with_one_line(tmp_path: Path) -> None:
    # 320x240 frames of 115 KB: more than a pipe holds, so the writer meets the closed end.
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=8, size=(160, 120))
    process = _command(src, "-", *_fast(tmp_path), "-q")
    assert process.stdout is not None and process.stdout.read(100).startswith(b"YUV4MPEG2 W320 H240")
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    lines = err.decode().strip().splitlines()
    assert lines == ["elan-video: error: -: could not be written (Broken pipe)"]


def test_what_standard_output_cannot_take_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=3, size=(16, 12))
    Image.fromarray(pattern(0, 16, 12)).save(tmp_path / "still.png")
    cases = [
        ([src, "-", "--json"], "--json prints to standard output, which carries the video here (-)"),
        ([src, "-", "--crf", "20"], "standard output (-) carries raw Y4M frames; crf applies to files"),
        ([tmp_path / "still.png", "-"], "still.png is an image; standard output (-) takes a video"),
        ([tmp_path, "-"], "a folder's files go to a folder, not to standard output (-)"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, [*(str(a) for a in args), *_fast(tmp_path)])
        assert result.exit_code == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    with pytest.raises(OptionError, match=r"standard output \(-\) is written here, in one stream"):
        upscale_video(src, "-", model=Upscaler(detail_elan(2), scale=2, device="cpu"), workers=2)


def test_a_variable_rate_video_to_y4m_plays_evenly_and_says_so(tmp_path: Path) -> None:
    # Frames at 0, 10, 20, 500 and 510 ms of a "25 fps" clip: Y4M can only show them 40 ms apart, in order.
    src = tmp_path / "vfr.mkv"
    stamps = [0, 10, 20, 500, 510]
    make_clip(src, size=(16, 12), time_base=Fraction(1, 1000), pts=stamps, codec="ffv1", pix_fmt="yuv444p")
    up = Upscaler(detail_elan(2), scale=2, device="cpu", precision="fp32")
    with pytest.warns(VideoWarning, match=r"Y4M keeps no timestamps: 4 of 5 frames .* evenly at 25\.000 fps"):
        assert upscale_video(src, tmp_path / "out.y4m", model=up).frames == 5
    with av.open(str(tmp_path / "out.y4m")) as c:
        assert [f.pts for f in c.decode(video=0)] == [0, 1, 2, 3, 4]
    # Guard: an evenly timed clip, from a start time too, is not warned about.
    even = tmp_path / "even.mp4"
    make_clip(even, frames=4, size=(16, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoWarning)
        assert upscale_video(even, tmp_path / "even.y4m", model=up, start=0.04).frames == 3


def test_in_the_library_dash_writes_file_descriptor_1_and_warns_what_y4m_loses(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    src = tmp_path / "anamorphic.mp4"
    make_clip(src, frames=3, size=(16, 12), sar=Fraction(8, 9))
    up = Upscaler(detail_elan(2), scale=2, device="cpu", precision="fp32")
    with pytest.warns(VideoWarning, match=r"standard output's Y4M does not record the source's sample aspect ratio"):
        summary = upscale_video(src, "-", model=up)
    out = capfdbinary.readouterr().out
    assert summary.frames == 3 and out.count(b"FRAME") == 3 and _header(out)["W"] == "32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anamorphic.mp4"]


def test_a_terminal_as_standard_output_is_refused(tmp_path: Path) -> None:
    import os
    import pty

    src = tmp_path / "clip.mp4"
    make_clip(src, frames=3, size=(16, 12))
    leader, terminal = pty.openpty()
    try:
        process = _command(src, "-", *_fast(tmp_path), stdout=terminal)
        _, err = process.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(leader)
    assert process.returncode == 1
    assert err.decode().strip() == (
        "elan-video: error: standard output (-) is a terminal; pipe it into a player or an encoder (| mpv -)"
    )
