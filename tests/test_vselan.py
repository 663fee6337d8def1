"""The VapourSynth filter on real VapourSynth R81: formats, props, pixels, threads, vspipe."""

from __future__ import annotations

import os
import random
import runpy
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

# VapourSynth is a test dependency (the dev extra): CI must run these tests, so no importorskip.
import vapoursynth as vs
from conftest import REPO, detail_elan, kernel_offers_huge_pages, tiny_elan
from vselan import default_precision, elan

from elan_video.model.backends import precision_candidates
from elan_video.model.checkpoint import save_safetensors
from elan_video.model.upscaler import Upscaler, psnr, upscale_image

W, H = 32, 24
VSPIPE = Path(sys.executable).with_name("vspipe")


@pytest.fixture
def core():
    """The process's VapourSynth core; tests that change num_threads get it restored."""
    c = vs.core
    threads = c.num_threads
    yield c
    c.num_threads = threads


def images(count: int, *, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct H x W x 3 uint8 frames: smooth colour ramps plus noise, so every frame differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for n in range(count):
        ramp = np.stack([xx * 7 + n * 11, yy * 9 + n * 5, (xx + yy) * 4 + n * 17], -1) % 256
        noise = rng.integers(-40, 41, (H, W, 3))
        out.append(np.clip(ramp + noise, 0, 255).astype(np.uint8))
    return out


def rgb24_clip(core, frames: list[np.ndarray]) -> vs.VideoNode:
    """An RGB24 clip whose frame n holds frames[n] (no source plugins in the pip wheel: written via ModifyFrame)."""
    base = core.std.BlankClip(format=vs.RGB24, width=W, height=H, length=len(frames))

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][..., p])
        return out

    return base.std.ModifyFrame(base, fill)


def planes(frame: vs.VideoFrame) -> np.ndarray:
    """3 x H x W copy of a frame's planes in its sample dtype."""
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])


def reference(upscaler: Upscaler, frame: vs.VideoFrame, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """What the filter must produce for ``frame``: the library's network on the float data, 0..1, clamped."""
    x = torch.from_numpy(planes(frame)).float()[None] * 255.0
    return (upscaler.forward_tensor(x)[0] / 255.0).clamp(0, 1).to(dtype).numpy()


class CountingUpscaler(Upscaler):
    """The real Upscaler, instrumented: counts inferences and the most that ran at the same time."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls = 0
        self.peak = 0
        self._active = 0
        self._count_lock = threading.Lock()

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        with self._count_lock:
            self.calls += 1
            self._active += 1
            self.peak = max(self.peak, self._active)
        try:
            self._started()
            return super().forward_tensor(x)
        finally:
            with self._count_lock:
                self._active -= 1

    def _started(self) -> None:
        """Called in each inference once it is counted, before it runs."""


# -- import ----------------------------------------------------------------------------------------
def test_import_loads_no_model_and_no_torch():
    code = "import sys, vselan; print('torch' in sys.modules, 'elan_video.model.upscaler' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.skipif(not kernel_offers_huge_pages(), reason="the kernel offers no transparent huge pages")
def test_filter_asks_for_huge_pages_before_its_model_loads():
    """VapourSynth's worker threads map large blocks afresh; huge pages make that 512 times fewer faults."""
    code = (
        "import os, vapoursynth as vs, vselan\n"
        "clip = vs.core.std.BlankClip(width=16, height=16, format=vs.RGBS, length=1)\n"
        "vselan.elan(clip, 2, device='cpu').get_frame(0)\n"
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
    )
    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.split() == ["1"]


# -- formats ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 3])
def test_rgbs_output_geometry_and_format(core, scale):
    src = core.resize.Point(rgb24_clip(core, images(3)), format=vs.RGBS)
    out = elan(src, scale, model=tiny_elan(scale), precision="fp32")
    assert (out.format.name, out.width, out.height) == ("RGBS", W * scale, H * scale)
    assert (out.num_frames, out.fps) == (src.num_frames, src.fps)
    frame = out.get_frame(1)
    assert (frame.width, frame.height) == (W * scale, H * scale)
    values = planes(frame)
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0


def test_rgbh_computes_in_bf16_on_a_cpu_where_it_is_fast_and_returns_half(core):
    # bf16 only where this CPU's bf16 matmul measures faster than fp32 (AMX, AVX-512-BF16); an AVX2 CPU emulates
    # it about 15x slower than fp32 (35 s against 2.4 s for a 320x180 frame), so there an RGBH clip runs in fp32.
    native = "bf16" in precision_candidates(torch.device("cpu"))
    assert default_precision(True, "cpu") == ("bf16" if native else "fp32")
    assert default_precision(True, "cuda:0") == "fp16"
    assert default_precision(False, "cpu") == "auto"
    model = detail_elan(2)
    src = core.resize.Point(rgb24_clip(core, images(2)), format=vs.RGBH)
    out = elan(src, 2, model=model, device="cpu")
    assert out.format.name == "RGBH"
    got = planes(out.get_frame(1))
    assert got.dtype == np.float16
    # Same numbers as the library in the precision the clip's format chose; the other is measurably different.
    bf16 = reference(Upscaler(model, precision="bf16", device="cpu"), src.get_frame(1), torch.float16)
    fp32 = reference(Upscaler(model, precision="fp32", device="cpu"), src.get_frame(1), torch.float16)
    chosen, other = (bf16, fp32) if native else (fp32, bf16)
    # Share of values that differ: measured 0 (bf16 chosen) or 2 of 9216 (fp32, float rounding by one float16 step);
    # guard: against the other precision 43 % differ.
    assert np.count_nonzero(got != chosen) <= 0.01 * got.size
    assert np.count_nonzero(got != other) > 0.1 * got.size
    want = fp32.astype(np.float32)
    assert psnr(got.astype(np.float32), want, peak=1.0) > 60.0  # measured: 73.3 dB in bf16
    # Guards: frame 0's output (21.0 dB), and a pixel's shift (23.2).
    frame0 = reference(Upscaler(model, precision="fp32", device="cpu"), src.get_frame(0), torch.float16)
    assert psnr(frame0.astype(np.float32), want, peak=1.0) < 60.0
    assert psnr(np.roll(want, 1, axis=-1), want, peak=1.0) < 60.0


@pytest.mark.parametrize("fmt", ["RGB24", "RGB48", "YUV420P8", "YUV444P10", "YUV444PS", "GRAY8", "GRAYS"])
def test_other_formats_are_refused_with_a_conversion_hint(core, fmt):
    clip = core.std.BlankClip(format=getattr(vs, fmt), width=W, height=H, length=2)
    with pytest.raises(vs.Error) as info:
        elan(clip, 2, model=tiny_elan(2))
    message = str(info.value)
    assert message.startswith("elan: ") and fmt.lower() in message.lower()
    assert "core.resize.Bicubic(clip, format=vs.RGBS" in message
    # integer RGB must not be told to pass a YUV matrix (zimg refuses it); YUV and Gray need one
    assert ('matrix_in_s="709"' in message) == (not fmt.startswith("RGB"))


def test_hinted_conversion_makes_a_yuv_clip_acceptable(core):
    yuv = core.std.BlankClip(format=vs.YUV420P8, width=W, height=H, length=1, color=[120, 100, 150])
    rgbs = core.resize.Bicubic(yuv, format=vs.RGBS, matrix_in_s="709")
    assert elan(rgbs, 2, model=tiny_elan(2), precision="fp32").get_frame(0).format.name == "RGBS"


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"varsize": True}, "variable-size"), ({"varformat": True}, "variable-format")],
)
def test_variable_clips_are_refused(core, options, expected):
    clip = core.std.BlankClip(format=vs.RGBS, width=W, height=H, length=2, **options)
    with pytest.raises(vs.Error, match=f"^elan: {expected}"):
        elan(clip, 2, model=tiny_elan(2))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"scale": 5}, "scale must be 2, 3 or 4, got 5"),
        ({"scale": 3}, "scale 3 does not match the model"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"backend": "onnx"}, "backend must be one of"),
        ({"device": "tpu"}, "device must be cpu, cuda or cuda:N"),
        ({"num_streams": 0}, "num_streams must be an integer >= 1"),
        ({"tile": 8}, "tile must be at least 16"),
    ],
)
def test_bad_options_are_refused_at_call_time(core, kwargs, expected):
    clip = core.std.BlankClip(format=vs.RGBS, width=W, height=H, length=2)
    kwargs = {"scale": 2} | kwargs
    with pytest.raises(vs.Error, match="^elan: " + expected.replace("(", r"\(")):
        elan(clip, kwargs.pop("scale"), model=tiny_elan(2), **kwargs)


def test_missing_checkpoint_is_a_vs_error(core, tmp_path):
    clip = core.std.BlankClip(format=vs.RGBS, width=W, height=H, length=2)
    with pytest.raises(vs.Error, match=r"^elan: .*nothing\.safetensors"):
        elan(clip, 2, model=tmp_path / "nothing.safetensors")


def test_upscaler_model_cannot_be_combined_with_engine_options(core):
    clip = core.std.BlankClip(format=vs.RGBS, width=W, height=H, length=2)
    with pytest.raises(vs.Error, match=r"^elan: precision cannot be given with an Upscaler"):
        elan(clip, 2, model=Upscaler(tiny_elan(2), device="cpu"), precision="fp32")


# -- props -----------------------------------------------------------------------------------------
def test_every_frame_property_is_copied(core):
    src = core.resize.Point(rgb24_clip(core, images(3)), format=vs.RGBS, matrix_s="rgb")
    src = src.std.SetFrameProps(_FieldBased=0, _SARNum=8, _SARDen=9, Title="a title", Gains=[0.5, 1.5], Scene=[1, 2])
    src = src.std.RemoveFrameProps("_Duration*")  # the output's blank frames carry these; they must not leak

    def per_frame(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        out.props["_SceneChangePrev"] = int(n == 1)
        out.props["FrameLabel"] = f"frame {n}"
        return out

    src = src.std.ModifyFrame(src, per_frame)
    out = elan(src, 2, model=tiny_elan(2), precision="fp32")
    for n in range(src.num_frames):
        expected = dict(src.get_frame(n).props)
        assert dict(out.get_frame(n).props) == expected
    assert expected["FrameLabel"] == "frame 2"
    assert "_DurationNum" not in expected


# -- pixels ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 4])
def test_pixels_equal_the_library(core, scale):
    frames = images(2, seed=scale)
    model = detail_elan(scale)
    src = core.resize.Point(rgb24_clip(core, frames), format=vs.RGBS)
    out = elan(src, scale, model=model, device="cpu", precision="fp32")
    for n, image in enumerate(frames):
        got = planes(out.get_frame(n))
        # The float filter skips only the rounding to uint8: >= 50 dB against upscale_image (rounding alone: ~59).
        library = upscale_image(model, image, scale=scale, device="cpu", precision="fp32").astype(np.float32)
        assert psnr(got.transpose(1, 2, 0) * 255.0, library) >= 50.0
        # Guards: the other frame's output (20.5-20.8 dB), and a pixel's shift (23.0-26.8); measured above: 58.9.
        other = upscale_image(model, frames[1 - n], scale=scale, device="cpu", precision="fp32")
        assert max(psnr(other, library), psnr(np.roll(library, 1, axis=1), library)) < 50.0
        # Against the network on the same float data the only freedom is float reassociation: 1e-5 of 0..1.
        direct = reference(Upscaler(model, device="cpu", precision="fp32"), src.get_frame(n))
        assert np.abs(got - direct).max() <= 1e-5


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_runtimes_run_the_filter(core, small_onnx, backend):
    pytest.importorskip(backend, reason=f"needs {backend}: pip install 'elan-video[onnx]' / '[openvino]'")
    model, _ = small_onnx  # exported once for the session: the filter finds it in the cache
    frames = images(2, seed=5)
    out = elan(
        core.resize.Point(rgb24_clip(core, frames), format=vs.RGBS), 2, model=model, device="cpu", backend=backend
    )
    for n, image in enumerate(frames):
        got = planes(out.get_frame(n)).transpose(1, 2, 0) * 255.0
        library = upscale_image(model, image, device="cpu", precision="fp32").astype(np.float32)
        assert psnr(got, library) >= 45.0  # measured: 58.0-58.9 dB (the filter skips the uint8 rounding)
        assert psnr(np.roll(library, 1, axis=1), library) < 45.0  # guard, one pixel off: 23.0-23.2 dB


def test_tiles_are_passed_to_the_library(core):
    frames = images(1, seed=7)
    model = detail_elan(2)
    src = core.resize.Point(rgb24_clip(core, frames), format=vs.RGBS)
    out = elan(src, 2, model=model, device="cpu", precision="fp32", tile=16, tile_overlap=4)
    tiled = reference(Upscaler(model, device="cpu", precision="fp32", tile=16, tile_overlap=4), src.get_frame(0))
    assert np.abs(planes(out.get_frame(0)) - tiled).max() <= 1e-5
    # Guard: had the tiles not reached the library, the whole frame's output would differ by far more.
    whole = reference(Upscaler(model, device="cpu", precision="fp32"), src.get_frame(0))
    assert np.abs(whole - tiled).max() > 1e-2


# -- threads ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_streams", [1, 2])
def test_concurrent_out_of_order_requests(core, num_streams):
    core.num_threads = 4
    count = 12
    frames = images(count, seed=3)
    upscaler = CountingUpscaler(tiny_elan(2), device="cpu", precision="fp32")
    src = core.resize.Point(rgb24_clip(core, frames), format=vs.RGBS)
    out = elan(src, 2, model=upscaler, num_streams=num_streams)
    order = list(range(count))
    random.Random(num_streams).shuffle(order)
    futures = {n: out.get_frame_async(n) for n in order}
    results = {n: planes(future.result()) for n, future in futures.items()}
    serial = Upscaler(upscaler.model, device="cpu", precision="fp32")  # same weights, one thread, in order
    for n in range(count):
        assert np.abs(results[n] - reference(serial, src.get_frame(n))).max() <= 1e-5, f"frame {n}"
    assert upscaler.calls == count  # the one shared model ran every frame, once
    assert upscaler.peak <= num_streams
    if num_streams == 1:
        assert upscaler.peak == 1
    # frames() (the iterator vspipe-like consumers use) yields the same frames in order
    for n, frame in enumerate(out.frames(prefetch=4)):
        assert np.array_equal(planes(frame), results[n])


class WaitingUpscaler(CountingUpscaler):
    """Holds its first inference until a second one starts beside it (or 20 s pass), so that overlap is
    certain where the filter allows it, however fast the tiny model runs on a loaded machine."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._company = threading.Event()

    def _started(self) -> None:
        with self._count_lock:
            if self._active >= 2:
                self._company.set()
        if not self._company.wait(timeout=20):
            self._company.set()  # waited once in vain: the rest run unheld


def test_filter_runs_frames_concurrently(core):
    # One ModifyFrame node would run one selector at a time; the filter must let num_streams run together.
    core.num_threads = 4
    upscaler = WaitingUpscaler(tiny_elan(2), device="cpu", precision="fp32")
    src = core.resize.Point(rgb24_clip(core, images(16, seed=5)), format=vs.RGBS)
    out = elan(src, 2, model=upscaler, num_streams=3)
    for future in [out.get_frame_async(n) for n in range(16)]:
        future.result()
    assert upscaler.peak >= 2


# -- vspipe ----------------------------------------------------------------------------------------
def read_y4m(data: bytes) -> tuple[dict[str, str], list[bytes]]:
    """Header fields (W, H, F, C, ...) and raw frame payloads of a y4m stream."""
    header, _, rest = data.partition(b"\n")
    magic, *fields = header.decode().split(" ")
    assert magic == "YUV4MPEG2"
    info = {field[0]: field[1:] for field in fields}
    size = int(info["W"]) * int(info["H"]) * 3  # 4:4:4, 8 bit
    frames = []
    while rest:
        marker, _, rest = rest.partition(b"\n")
        assert marker.startswith(b"FRAME")
        frames.append(rest[:size])
        rest = rest[size:]
    return info, frames


def test_vspipe_runs_the_example_script(core, tmp_path):
    checkpoint = tmp_path / "detail_x2.safetensors"
    save_safetensors(detail_elan(2), checkpoint)
    script = REPO / "examples" / "elan.vpy"
    args = {"model": str(checkpoint), "width": str(W), "height": str(H), "frames": "3", "precision": "fp32"}
    command = [str(VSPIPE), str(script), "-", "-c", "y4m"]
    for key, value in args.items():
        command += ["-a", f"{key}={value}"]
    result = subprocess.run(command, capture_output=True, timeout=120)
    if b"couldn't be determined" in result.stderr:
        pytest.fail("vspipe is not configured for this Python: run `.venv/bin/vapoursynth config` (make does)")
    assert result.returncode == 0, result.stderr.decode()
    info, frames = read_y4m(result.stdout)
    assert (info["W"], info["H"], info["F"], info["C"]) == (str(2 * W), str(2 * H), "24:1", "444")
    assert len(frames) == 3 and all(len(f) == 2 * W * 2 * H * 3 for f in frames)

    # The same script evaluated here gives the same pixels (8-bit rounding may flip a value by one).
    runpy.run_path(str(script), init_globals=args, run_name="__vapoursynth__")
    try:
        expected = vs.get_output(0).clip
        wants = [planes(expected.get_frame(n)).astype(np.int16) for n in range(len(frames))]
        for n, payload in enumerate(frames):
            got = np.frombuffer(payload, np.uint8).astype(np.int16).reshape(wants[n].shape)
            assert np.abs(got - wants[n]).max() <= 1, f"frame {n}"
            assert wants[n][0].std() > 10  # a real picture, not a blank frame: its luma alone varies (std 22-23)
            # Guard: the pattern drifts, so a stale or early frame is off by far more than one (45-73 levels).
            assert np.abs(got - wants[(n + 1) % len(wants)]).max() > 1
    finally:
        vs.clear_outputs()
