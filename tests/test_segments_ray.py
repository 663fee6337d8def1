"""Segments on Ray workers (``--workers N``, :mod:`elan_video.jobs.distributed`), with real Ray on a local 2-CPU
cluster: the output equals the one-worker output exactly (FFV1 lossless), a worker killed mid-segment costs that
segment only, and without Ray ``--workers 2`` says how to install it. The workers get only the bytes of the source
that their segment reads (:mod:`elan_video.jobs.source_bytes`), checked first without Ray.

Ray starts once for the module (about 6 s here); each job then starts its actors (a Python with torch and PyAV
each, about 3 s on 2 busy cores). One test runs the command line, which starts a Ray of its own for the job.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import detail_elan, shared_path
from video_clips import make_clip, packets, video_frames

from elan_video.jobs.folder import upscale_folder
from elan_video.jobs.pipeline import upscale_video
from elan_video.jobs.segments import encode_segment, plan_segments, segment_plan, worker_plan
from elan_video.jobs.source_bytes import segment_source
from elan_video.jobs.workdir import work_folder_for
from elan_video.media.video.encoding import plan_encoder
from elan_video.media.video.reader import VideoReader
from elan_video.model.checkpoint import save_safetensors
from elan_video.model.options import UpscaleOptions
from elan_video.model.upscaler import Upscaler, psnr

_SCRIPT = Path(sys.executable).with_name("elan-video")
ELAN_VIDEO = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "elan_video"]
REPO = Path(__file__).resolve().parents[1]
# A tiny model is all per-operator overhead: PyTorch's spinning threads would starve decoding on 2 cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# x264 with B-frames and a keyframe every 6 frames (0.24 s at 25 fps): segments of 0.3 s cut at 0.48 s, 0.96 s...
BFRAMES = {"bf": "3", "g": "6", "keyint_min": "6", "sc_threshold": "0"}
LOSSLESS = {"codec": "ffv1", "pix_fmt": "gbrp", "segment": 0.3}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An H.264 clip with B-frames across every cut, and audio."""
    src = tmp_path_factory.mktemp("ray") / "b.mp4"
    make_clip(
        src, frames=36, size=(32, 24), options=BFRAMES, audio_from=shared_path("data", "video", "imageio_realshort.mp4")
    )
    return src


@pytest.fixture(scope="module")
def up2() -> Upscaler:
    return Upscaler(detail_elan(2), scale=2, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def reference(clip: Path, up2: Upscaler) -> Path:
    """The clip upscaled in segments on this process alone (no Ray)."""
    out = clip.with_name("one-worker.mkv")
    summary = upscale_video(clip, out, model=up2, **LOSSLESS)
    assert summary.segments is not None and summary.segments.total == 3
    return out


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def _assert_same(got: Path, want: Path) -> None:
    """Identical frames at identical timestamps, and the same audio packets."""
    a, b = video_frames(got), video_frames(want)
    assert [t for t, _ in a] == [t for t, _ in b] and len(a) == 36
    assert all((x == y).all() for (_, x), (_, y) in zip(a, b, strict=True))
    assert packets(got, "audio") == packets(want, "audio") != []


# -- the bytes a worker is sent (no Ray) ------------------------------------------------------------------------


def test_a_segment_decoded_from_the_bytes_sent_equals_one_decoded_from_the_file(tmp_path: Path, up2: Upscaler) -> None:
    src = tmp_path / "b.mkv"
    make_clip(src, frames=72, size=(32, 24), options={**BFRAMES, "g": "12", "keyint_min": "12", "crf": "0"})
    with VideoReader(src) as reader:
        info = reader.info
    plan = plan_encoder(tmp_path / "out.mkv", info, scale=2, codec="ffv1", pix_fmt="gbrp")
    segments = plan_segments(src, seconds=0.9)
    assert len(segments) == 3
    for segment in segments:
        local, remote = io.BytesIO(), io.BytesIO()
        encode_segment(src, segment, plan, up2, local, deinterlace=None, queue_size=4, cpu_threads=1)
        sent = segment_source(src, info, segment, deinterlace=None)
        elsewhere = Path("/nowhere") / src.name  # the worker has no such file
        encode_segment(
            elsewhere, segment, plan, up2, remote, deinterlace=None, queue_size=4, cpu_threads=1,
            info=info, opener=sent.open,
        )  # fmt: skip
        assert not sent.misses and remote.getvalue() == local.getvalue()

    # A hole where the reader needs bytes is reported, and the same segment with those bytes added is whole.
    segment = segments[1]
    sent = segment_source(src, info, segment, deinterlace=None)
    offset, data = sent.chunks[-1]
    sent.chunks[-1] = (offset, data[: len(data) // 2])
    encode_segment(
        Path("/nowhere") / src.name, segment, plan, up2, io.BytesIO(), deinterlace=None, queue_size=4,
        cpu_threads=1, info=info, opener=sent.open,
    )  # fmt: skip
    assert sent.misses
    again, out, local = sent.adding(src, sent.misses), io.BytesIO(), io.BytesIO()
    encode_segment(
        Path("/nowhere") / src.name, segment, plan, up2, out, deinterlace=None, queue_size=4, cpu_threads=1,
        info=info, opener=again.open,
    )  # fmt: skip
    encode_segment(src, segment, plan, up2, local, deinterlace=None, queue_size=4, cpu_threads=1)
    assert not again.misses and out.getvalue() == local.getvalue()


def test_a_worker_is_sent_the_header_and_its_segment_not_the_whole_file(tmp_path: Path) -> None:
    src = tmp_path / "long.mkv"
    make_clip(src, frames=1500, size=(64, 48), options={**BFRAMES, "g": "250", "keyint_min": "250", "crf": "0"})
    with VideoReader(src) as reader:
        info = reader.info
    segments = plan_segments(src, seconds=10)
    assert len(segments) == 6
    sizes = [segment_source(src, info, segment, deinterlace=None).nbytes for segment in segments]
    # FFmpeg's probe reads the first 5 s or so; beyond that, each segment's own sixth of the file and a little.
    assert max(sizes[2:]) < 0.5 * src.stat().st_size


def _x265_header(plan_options: dict[str, str]) -> bytes:
    encoder = av.CodecContext.create("libx265", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 640, 480, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, 25), Fraction(25)
    encoder.options = plan_options
    encoder.flags |= av.codec.context.Flags.global_header
    encoder.open()
    return bytes(encoder.extradata)


def test_x265_segments_have_one_header_whatever_the_workers_threads(tmp_path: Path) -> None:
    src = tmp_path / "s.mp4"
    make_clip(src, frames=2, size=(320, 240))
    with VideoReader(src) as reader:
        plan = segment_plan(plan_encoder(tmp_path / "o.mkv", reader.info, scale=2, codec="libx265"))
    headers = {_x265_header(worker_plan(plan, threads).options) for threads in (1, 3, 16)}
    assert len(headers) == 1
    # Guard: without the pins, x265 writes its thread counts (and the CPU's features) into the header.
    unpinned = {_x265_header({**plan.options, "x265-params": f"log-level=error:pools={n}:frame-threads={n}"})
                for n in (1, 3)}  # fmt: skip
    assert len(unpinned) == 2


# -- on Ray -----------------------------------------------------------------------------------------------------


def test_two_workers_give_the_one_worker_output(ray_cluster: None, clip: Path, up2: Upscaler, reference: Path) -> None:
    out = clip.with_name("two-workers.mkv")
    summary = upscale_video(clip, out, model=up2, workers=2, **LOSSLESS)
    assert summary.segments is not None
    assert (summary.segments.total, summary.segments.resumed, summary.segments.processed) == (3, 0, 3)
    assert summary.frames == 36 and summary.frames_lost == 0 and not summary.warnings
    assert not work_folder_for(out).exists()
    _assert_same(out, reference)


def test_a_worker_killed_mid_segment_costs_only_that_segment(
    ray_cluster: None, clip: Path, up2: Upscaler, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = clip.with_name("crashed")
    monkeypatch.setenv("ELAN_VIDEO_TEST_CRASH_ONCE", str(crashed))  # a worker exits at its third frame, once
    out = clip.with_name("after-crash.mkv")
    frames: list[int] = []
    summary = upscale_video(
        clip, out, model=up2, workers=2, progress=lambda done, total: frames.append(done), **LOSSLESS
    )
    assert crashed.exists()  # a worker did die mid-segment
    assert summary.segments is not None and summary.segments.processed == 3 and summary.frames == 36
    assert frames[-1] == 36
    _assert_same(out, reference)


def test_a_folder_of_videos_on_two_workers_and_one_corrupt_file(
    ray_cluster: None, tmp_path: Path, up2: Upscaler
) -> None:
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    make_clip(folder / "a.mkv", frames=36, size=(32, 24), options=BFRAMES)
    make_clip(folder / "b.mkv", frames=24, size=(24, 16), options=BFRAMES)
    (folder / "c.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(4000))  # a header, then nothing usable
    errors: list[tuple[str, str]] = []
    done: list[str] = []
    result = upscale_folder(
        folder, out, options=UpscaleOptions(model=up2), workers=2,
        on_error=lambda path, exc: errors.append((path.name, str(exc))),
        on_done=lambda summary: done.append(summary.destination.name), **LOSSLESS,
    )  # fmt: skip
    assert (result.videos, result.images, result.failed) == (2, 0, 1)
    assert [name for name, _ in errors] == ["c.mp4"] and "c.mp4" in errors[0][1]
    assert sorted(done) == ["a.mkv", "b.mkv"]
    assert sorted(p.name for p in out.iterdir()) == ["a.mkv", "b.mkv"]  # no work folder, no partial file left
    for name, frames in (("a.mkv", 36), ("b.mkv", 24)):
        alone = upscale_video(folder / name, tmp_path / f"alone-{name}", model=up2, **LOSSLESS)
        assert alone.frames == frames
        got, want = video_frames(out / name), video_frames(tmp_path / f"alone-{name}")
        assert [t for t, _ in got] == [t for t, _ in want]
        assert all((x == y).all() for (_, x), (_, y) in zip(got, want, strict=True))


def test_workers_on_this_machine_share_one_precision_decision_named_in_the_summary(
    ray_cluster: None, clip: Path, reference: Path
) -> None:
    # precision "auto" is settled here, on the clip's first frame, before the workers start: each would otherwise
    # measure it alone (and time every runtime, for backend "auto") with no word to the user, and the summary
    # could only say "auto".
    up = Upscaler(detail_elan(2), scale=2, device="cpu", precision="auto", backend="eager")
    out = clip.with_name("settled.mkv")
    summary = upscale_video(clip, out, model=up, workers=2, **LOSSLESS)
    assert summary.precision in ("fp32", "bf16", "fp16") and summary.backend == "eager", summary
    assert (up.precision, summary.frames) == (summary.precision, 36)
    got, want = video_frames(out), video_frames(reference)  # the reference ran fp32
    assert [t for t, _ in got] == [t for t, _ in want]
    assert min(psnr(x, y) for (_, x), (_, y) in zip(got, want, strict=True)) >= 45


def test_a_folder_whose_files_take_different_models_has_a_pool_for_each(ray_cluster: None, tmp_path: Path) -> None:
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    make_clip(folder / "a.mkv", frames=24, size=(32, 24), options=BFRAMES)
    make_clip(folder / "b.mkv", frames=24, size=(24, 16), options=BFRAMES)
    models = {"a.mkv": tmp_path / "first.safetensors", "b.mkv": tmp_path / "second.safetensors"}
    save_safetensors(detail_elan(2, seed=1), models["a.mkv"])
    save_safetensors(detail_elan(2, seed=2, body=1.5), models["b.mkv"])
    done: dict[str, str | None] = {}
    result = upscale_folder(
        folder, out, options=UpscaleOptions(device="cpu", precision="fp32"), workers=2,
        model_for=lambda path: str(models[path.name]),
        on_done=lambda summary: done.update({summary.destination.name: summary.weights}), **LOSSLESS,
    )  # fmt: skip
    assert (result.videos, result.failed) == (2, 0)
    assert done == {"a.mkv": "first.safetensors", "b.mkv": "second.safetensors"}
    for name, model in models.items():  # each file as its own model alone makes it, not as the other's
        for weights in models.values():
            alone = tmp_path / f"alone-{weights.stem}-{name}"
            upscale_video(folder / name, alone, model=str(weights), device="cpu", precision="fp32", **LOSSLESS)
            got, want = video_frames(out / name), video_frames(alone)
            same = all((x == y).all() for (_, x), (_, y) in zip(got, want, strict=True))
            assert same == (weights == model), (name, weights.name)


def test_command_line_starts_ray_for_the_job(clip: Path, reference: Path) -> None:
    pytest.importorskip("ray")
    model = clip.with_name("detail-x2.safetensors")
    save_safetensors(detail_elan(2), model)
    out = clip.with_name("cli.mkv")
    options = ["--model", str(model), "--device", "cpu", "--precision", "fp32", "--backend", "eager"]
    options += ["--codec", "ffv1", "--pix-fmt", "gbrp"]
    command = [*ELAN_VIDEO, str(clip), str(out), *options, "--segment", "0.3", "--workers", "2", "--json", "-q"]
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["segments"] == {"total": 3, "resumed": 0, "processed": 3} and summary["frames"] == 36
    _assert_same(out, reference)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray cluster as a user starts one (`ray start --head`, token authentication on), for this test only: its
    address and the environment a process joining it needs."""
    pytest.importorskip("ray")
    env = {**ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head_env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # no 30 s drain on SIGTERM: nothing to drain
    port = _free_port()
    log = tmp_path / "ray-head.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}", "--num-cpus=2",
               "--include-dashboard=false", "--disable-usage-stats", "--block"]  # fmt: skip
    with log.open("w") as sink:
        head = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=head_env)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head's processes end with it
        head.wait(timeout=60)


def test_command_line_joins_a_running_cluster(
    ray_head: tuple[str, dict[str, str]], clip: Path, reference: Path
) -> None:
    address, env = ray_head
    model = clip.with_name("detail-x2.safetensors")
    save_safetensors(detail_elan(2), model)
    out = clip.with_name("cluster.mkv")
    options = ["--model", str(model), "--device", "cpu", "--precision", "fp32", "--backend", "eager"]
    options += ["--codec", "ffv1", "--pix-fmt", "gbrp"]
    command = [*ELAN_VIDEO, str(clip), str(out), *options, "--segment", "0.3", "--ray", address, "--json", "-q"]
    # Without the cluster's token: Ray retries (5 s here, 20 by default), logging each try; the user sees one line.
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(clip.parent)}
    done = subprocess.run(command, cwd=REPO, env=no_token, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"elan-video: error: the Ray cluster at {address} uses token authentication: set RAY_AUTH_MODE=token and "
        "its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token copied from the head node)"
    ]
    assert not out.exists() and not work_folder_for(out).exists()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["segments"] == {"total": 3, "resumed": 0, "processed": 3} and summary["frames"] == 36
    _assert_same(out, reference)
    # precision "auto" is the cluster's workers' to decide (the driver's machine may have no GPU): the summary
    # names what they chose, not "auto".
    auto = clip.with_name("cluster-auto.mkv")
    command = [*command[:2], str(auto), *command[3:]]
    command[command.index("fp32")] = "auto"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["backend"], summary["precision"] in ("fp32", "bf16")) == ("eager", True), summary
    got, want = video_frames(auto), video_frames(reference)
    assert min(psnr(x, y) for (_, x), (_, y) in zip(got, want, strict=True)) >= 45


def test_an_unreachable_cluster_is_one_line_and_nothing_written(tmp_path: Path, clip: Path) -> None:
    pytest.importorskip("ray")
    port = _free_port()  # nothing listens there
    out = tmp_path / "out.mkv"
    command = [*ELAN_VIDEO, str(clip), str(out), "--device", "cpu", "--segment", "0.3", "--ray", f"127.0.0.1:{port}"]
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"elan-video: error: cannot reach the Ray cluster at 127.0.0.1:{port}: ")
    assert not out.exists() and not work_folder_for(out).exists()


# -- without Ray ------------------------------------------------------------------------------------------------

_WITHOUT_RAY = """
import sys
from elan_video.cli import main
import elan_video.jobs.pipeline
assert "ray" not in sys.modules  # imported only when a job asks for workers
sys.modules["ray"] = None  # `import ray` raises ImportError, as where it is not installed
sys.argv = ["elan-video", *sys.argv[1:]]
main()
"""


def test_without_ray_two_workers_say_how_to_install_it_and_one_works(tmp_path: Path, clip: Path) -> None:
    out = tmp_path / "out.mkv"
    command = [sys.executable, "-c", _WITHOUT_RAY, str(clip), str(out), "--segment", "0.3", "--device", "cpu", "-q"]
    command += ["--backend", "eager"]  # the bundled weights: no ONNX export for a test about Ray
    done = subprocess.run([*command, "--workers", "2"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "elan-video: error: --workers 2 runs on Ray, which is not installed: pip install 'elan-video[ray]'"
    ]
    assert not out.exists() and not work_folder_for(out).exists()
    done = subprocess.run([*command, "--workers", "1", "--json"], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["segments"]["processed"] == 3
