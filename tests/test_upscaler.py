"""upscale_image / Upscaler: dtypes, shapes, tiling, batching and option validation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import detail_elan, kernel_offers_huge_pages, misread_range, shared_path, tiny_elan
from PIL import Image

import elan_video as ev
from elan_video.model.memory import auto_tile, frame_bytes, free_memory, tiling_bytes
from elan_video.model.upscaler import MIN_PSNR_DB, psnr


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photograph crop (Set14 'comic' is full of edges), 60 x 84."""
    image = np.asarray(Image.open(shared_path("data", "sr", "Set14", "HR", "comic.png")).convert("RGB"))
    return np.ascontiguousarray(image[40:100, 30:114])


def _network(model: ev.ELAN, image: np.ndarray) -> np.ndarray:
    """What upscale_image must return: the faithful network on the image, clamped and rounded."""
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = model(x)[0].clamp(0, 255).round().permute(1, 2, 0)
    return y.to(torch.uint8).numpy()


def test_uint8_matches_the_network(photo: np.ndarray) -> None:
    model = detail_elan(3)
    out = ev.upscale_image(model, photo, precision="fp32")
    want = _network(model, photo)
    assert out.shape == (180, 252, 3) and out.dtype == np.uint8
    assert psnr(out, want) >= 50.0  # measured: 93.4 dB (66.5 with CUDA's TF32 convolutions, emulated)
    assert psnr(np.roll(want, 1, axis=1), want) < 50.0  # a pixel's shift: 25.7 dB


def test_uint16_keeps_its_depth(photo: np.ndarray) -> None:
    model = detail_elan(2)
    # Full 16-bit scale with low bits set; white stays 65535 (255 * 257 + 128 would wrap round to 127).
    deep = np.minimum(photo.astype(np.uint32) * 257 + 128, 65535).astype(np.uint16)
    out = ev.upscale_image(model, deep, precision="fp32")
    want = _network(model, photo).astype(np.float64)
    assert out.dtype == np.uint16 and out.shape == (120, 168, 3)
    assert psnr(out.astype(np.float64) / 257, want) >= 50.0  # measured: 53.1 dB (the low bits: half a level up)
    assert len(np.unique(out % 257)) > 10  # real 16-bit values, not 8-bit ones scaled up
    # Guards: the wrapped white (the input this test had) 26.5 dB; limited range shown as full 28.9; a shift 25.4.
    wrapped = ev.upscale_image(model, photo.astype(np.uint16) * 257 + 128, precision="fp32")
    assert psnr(wrapped.astype(np.float64) / 257, want) < 50.0
    assert psnr(misread_range(want), want) < 50.0 and psnr(np.roll(want, 1, axis=1), want) < 50.0


@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), (40, 16), (24, 4)])
def test_tiled_result_stays_within_45_db_of_untiled(photo: np.ndarray, tile: int, overlap: int) -> None:
    model = detail_elan(2)
    whole = ev.upscale_image(model, photo, precision="fp32")
    tiled = ev.upscale_image(model, photo, precision="fp32", tile=tile, tile_overlap=overlap, batch=3)
    assert tiled.shape == whole.shape
    # Measured: 51.9 dB (32, 8), 57.9 (40, 16), 50.2 (24, 4); tiles of 40 and 24 are cut as 48 and 32 (whole
    # attention windows). With tiles cut from the unpadded picture: 39.7, 51.6, 49.9 (the tile of 32 that ended at
    # row 60 saw zeros where the whole frame, reflect-padded to 64 x 96, has rows 60-63).
    assert psnr(tiled, whole) >= MIN_PSNR_DB
    # Guard: the same tiles with nothing to blend over show their seams (36.8 dB for 32 and 24, 40.0 for 40).
    seams = ev.upscale_image(model, photo, precision="fp32", tile=tile, tile_overlap=0)
    assert psnr(seams, whole) < MIN_PSNR_DB


def test_tiling_without_overlap_shows_seams(photo: np.ndarray) -> None:
    """Guards the test above: with no overlap the blend has nothing to hide, so the error is visible."""
    model = detail_elan(2)
    whole = ev.upscale_image(model, photo, precision="fp32")
    seams = ev.upscale_image(model, photo, precision="fp32", tile=24, tile_overlap=0)
    assert psnr(seams, whole) < MIN_PSNR_DB - 5  # measured: 36.8 dB


def test_tiling_takes_odd_sides_16_bit_pixels_and_a_partial_last_batch(photo: np.ndarray) -> None:
    """37 x 83 is padded to 48 x 96 and cropped back; the tile of 40 is cut as 48, taller than the picture, and
    its row of 3 tiles goes through the network in batches of 2 and 1."""
    model = detail_elan(2)
    deep = photo[:37, :83].astype(np.uint16) * 257
    whole = ev.Upscaler(model, precision="fp32")(deep)
    up = ev.Upscaler(model, precision="fp32", tile=40, tile_overlap=8, batch=2)
    assert up.tile_for(37, 83) == 48
    tiled = up(deep)
    assert tiled.dtype == np.uint16 and tiled.shape == whole.shape == (74, 166, 3)
    assert np.array_equal(tiled, ev.Upscaler(model, precision="fp32", tile=48, tile_overlap=8)(deep))
    assert psnr(tiled / 257, whole / 257) >= MIN_PSNR_DB  # measured: 59.0 dB
    seams = ev.Upscaler(model, precision="fp32", tile=48, tile_overlap=0)(deep)
    assert psnr(seams / 257, whole / 257) < MIN_PSNR_DB  # the guard: 43.7 dB
    # One row, thinner than the padding it needs (reflected across, repeated down): 53.5 dB, 38.1 without overlap.
    row = np.ascontiguousarray(photo[:1, :33])
    whole = ev.upscale_image(model, row, precision="fp32")
    assert psnr(ev.upscale_image(model, row, precision="fp32", tile=16, tile_overlap=4), whole) >= MIN_PSNR_DB
    assert psnr(ev.upscale_image(model, row, precision="fp32", tile=16, tile_overlap=0), whole) < MIN_PSNR_DB


def test_a_frame_too_big_for_the_memory_budget_is_tiled_and_one_that_fits_is_not() -> None:
    image = np.asarray(Image.open(shared_path("data", "sr", "Set14", "HR", "comic.png")).convert("RGB"))[:160, :200]
    model = detail_elan(2)
    whole = ev.upscale_image(model, image, precision="fp32", tile=1024)
    roomy = ev.Upscaler(model, precision="fp32", max_memory=frame_bytes(160, 200, channels=model.c_elan))
    assert roomy.tile_for(160, 200) is None
    assert np.array_equal(roomy(image), whole)
    tight = ev.Upscaler(model, precision="fp32", max_memory=frame_bytes(130, 130, channels=model.c_elan))
    assert tight.tile_for(160, 200) == 128
    tiled = tight(image)
    assert not np.array_equal(tiled, whole)  # it really went tile by tile
    assert psnr(tiled, whole) >= MIN_PSNR_DB  # measured: 60.7 dB (47.8 with tiles cut from the unpadded frame)
    # Over a whole frame a seam is diluted (tiles of 128 without overlap still score 48.2 dB), so the blend is
    # also judged where the tiles meet: input rows 32 and 128, columns 80 and 128 (the frame is padded to 160 x 208
    # before it is cut), 4 output pixels either side.
    rows, cols = np.r_[60:68, 252:260], np.r_[156:164, 252:260]

    def where_tiles_meet(picture: np.ndarray) -> np.ndarray:
        return np.concatenate([picture[rows].reshape(-1), picture[:, cols].reshape(-1)])

    assert psnr(where_tiles_meet(tiled), where_tiles_meet(whole)) >= MIN_PSNR_DB  # measured: 59.7 dB
    seams = ev.upscale_image(model, image, precision="fp32", tile=128, tile_overlap=0)
    assert psnr(where_tiles_meet(seams), where_tiles_meet(whole)) < MIN_PSNR_DB  # the guard: 37.7 dB


def test_the_memory_estimate_follows_the_device_and_precision() -> None:
    budget = frame_bytes(1000, 1000, channels=60)  # a CPU fp32 megapixel
    cpu = auto_tile(3000, 4000, budget=budget, channels=60, scale=2)
    cuda32 = auto_tile(3000, 4000, budget=budget, channels=60, scale=2, device="cuda", precision="fp32")
    cuda16 = auto_tile(3000, 4000, budget=budget, channels=60, scale=2, device="cuda", precision="bf16")
    assert cpu is not None and cuda32 is not None and cuda16 is not None
    assert cpu < cuda32 < cuda16  # CUDA's caching allocator needs about half the CPU heap's peak
    assert auto_tile(1200, 1200, budget=budget, channels=60, scale=2, device="cuda", precision="fp16") is None
    # "auto" may still choose fp32, so it is planned for as fp32.
    assert auto_tile(3000, 4000, budget=budget, channels=60, scale=2, device="cuda", precision="auto") == cuda32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_upscaler_plans_its_tiles_with_the_cuda_estimate() -> None:
    model = tiny_elan(2)
    budget = frame_bytes(130, 130, channels=model.c_elan, device="cuda", precision="bf16")
    up = ev.Upscaler(model, device="cuda", precision="bf16", max_memory=budget)
    assert up.tile_for(160, 200) == 128
    assert up.tile_for(120, 120) is None


def test_a_picture_whose_output_alone_exceeds_free_memory_is_refused_before_any_work() -> None:
    up = ev.Upscaler(tiny_elan(2), precision="fp32")
    side = 200_000  # 40 gigapixels: 3 TB of float32 output
    with pytest.raises(ev.InputError, match=r"a 200000x200000 picture upscaled x2 needs \d+\.\d GB for its output"):
        up.tile_for(side, side)
    assert up.tile_for(64, 64) is None


def test_auto_tile_is_the_largest_multiple_of_16_within_the_budget() -> None:
    budget = frame_bytes(1000, 1000, channels=60, batch=2)
    assert auto_tile(900, 1100, budget=budget, channels=60, scale=2, batch=2) is None  # 0.99 MP fits
    for scale, batch in ((2, 2), (2, 8), (4, 2)):
        tile = auto_tile(3000, 4000, budget=budget, channels=60, scale=scale, batch=batch)
        assert tile is not None and tile % 16 == 0
        # The tiles' calls and the whole frame's input, blended output and weights, which stay meanwhile.
        held = tiling_bytes(3000, 4000, scale=scale)
        assert frame_bytes(tile, tile, channels=60, batch=batch) + held <= budget
        assert frame_bytes(tile + 16, tile + 16, channels=60, batch=batch) + held > budget
    assert auto_tile(3000, 4000, budget=1, channels=60, scale=2) == 128  # never below a usable size
    assert free_memory(torch.device("cpu")) > 0


def test_batch_of_frames_equals_one_by_one(photo: np.ndarray) -> None:
    up = ev.Upscaler(tiny_elan(2), precision="fp32", batch=2)
    frames = np.stack([photo, photo[::-1].copy(), 255 - photo])
    batched = up.upscale_batch(frames)
    for frame, out in zip(frames, batched, strict=True):
        assert np.array_equal(out, up(frame))


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"scale": 5}, "scale must be 2, 3 or 4, got 5"),
        ({"scale": 3}, "does not match"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"backend": "onnx"}, "backend must be one of"),
        ({"tile": 8}, "tile must be at least 16"),
        ({"tile": 32, "tile_overlap": 16}, "tile_overlap"),
        ({"batch": 0}, "batch must be at least 1"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_bad_options_are_named(options: dict, needle: str) -> None:
    with pytest.raises(ev.OptionError, match=needle):
        ev.Upscaler(tiny_elan(2), **options)


@pytest.mark.parametrize(
    ("image", "needle"),
    [
        (np.zeros((8, 8), np.uint8), "shape"),
        (np.zeros((8, 8, 4), np.uint8), "shape"),
        (np.zeros((8, 8, 3), np.float32), "dtype"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_bad_images_are_named(image: object, needle: str) -> None:
    with pytest.raises(ev.InputError, match=needle):
        ev.upscale_image(tiny_elan(2), image)  # type: ignore[arg-type]


_READ_ONLY_INPUT = """
import warnings
import numpy as np
from PIL import Image
from conftest import tiny_elan
import elan_video as ev
warnings.simplefilter("error")  # in a fresh process: torch warns about a read-only array once per process
photo = np.asarray(Image.new("RGB", (12, 10), (200, 90, 30)))
assert not photo.flags.writeable
print(ev.upscale_image(tiny_elan(2), photo, device="cpu").shape)
"""


def test_a_read_only_array_such_as_pillow_gives_is_taken_without_a_warning() -> None:
    import subprocess
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", _READ_ONLY_INPUT], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "(20, 24, 3)", "")


def test_cpu_upscaler_keeps_freed_memory_for_reuse() -> None:
    import sys

    from elan_video.model.allocator import reuse_freed_memory

    ev.Upscaler(tiny_elan(2), device="cpu")
    assert reuse_freed_memory.cache_info().currsize == 1  # applied once, by the Upscaler
    if sys.platform.startswith("linux"):
        assert reuse_freed_memory() is True


_HEAP_OR_MAPPING = """
import ctypes, sys
from elan_video.model.allocator import reuse_freed_memory
if sys.argv[1] == "tuned":
    reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
address = libc.malloc(200 << 20)  # a 720p frame's activation: over glibc's 32 MB mmap limit
for line in open("/proc/self/maps"):
    low, high = (int(end, 16) for end in line.split()[0].split("-"))
    if low <= address < high:
        print(line.split()[-1] if line.split()[-1] == "[heap]" else "mapping")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_blocks_over_glibcs_mmap_limit_come_from_the_reused_heap_once_tuned() -> None:
    """A fresh mapping per block is what cost a 720p frame 16.9 million page faults (docs/benchmarks.md)."""
    import subprocess

    where = {
        mode: subprocess.run(
            [sys.executable, "-c", _HEAP_OR_MAPPING, mode], capture_output=True, text=True, check=True
        ).stdout.strip()
        for mode in ("default", "tuned")
    }
    assert where == {"default": "mapping", "tuned": "[heap]"}


_HUGE_PAGES_ON_A_WORKER_THREAD = """
import sys, threading
from elan_video.model.allocator import use_huge_pages
print(use_huge_pages() if sys.argv[1] == "asked" else "-")
import torch
def allocate():
    x = torch.ones(100 << 20, dtype=torch.uint8)  # over glibc's 64 MB limit for a thread's own heap
    address, huge = x.data_ptr(), 0
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) > 4:
            low, high = (int(end, 16) for end in fields[0].split("-"))
            inside = low <= address < high
        elif inside and fields[0] == "AnonHugePages:":
            huge = int(fields[1])
    print(huge > 0)
thread = threading.Thread(target=allocate)
thread.start()
thread.join()
print(use_huge_pages())  # torch is loaded now: the answer stands as it was, nothing is changed
"""


@pytest.mark.skipif(not kernel_offers_huge_pages(), reason="the kernel offers no transparent huge pages")
def test_huge_pages_back_a_worker_threads_tensors_when_asked_before_torch_loads() -> None:
    """What made the VapourSynth filter's 720p frame 51 s instead of 79 s (docs/benchmarks.md)."""
    import os
    import subprocess

    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    seen = {
        mode: subprocess.run(
            [sys.executable, "-c", _HUGE_PAGES_ON_A_WORKER_THREAD, mode],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.split()
        for mode in ("default", "asked")
    }
    assert seen == {"default": ["-", "False", "False"], "asked": ["True", "True", "True"]}
    refused = subprocess.run(
        [sys.executable, "-c", _HUGE_PAGES_ON_A_WORKER_THREAD, "asked"],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "THP_MEM_ALLOC_ENABLE": "0"},
    )
    assert refused.stdout.split() == ["False", "False", "False"]  # the user's setting wins
