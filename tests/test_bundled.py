"""The bundled ELAN-light weights: loadable by name, the authors' keys and configuration, sane on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import shared_path
from PIL import Image
from safetensors import safe_open
from video_clips import make_clip, video_frames

import elan_video as ev
from elan_video.cli import main
from elan_video.model.checkpoint import BLENDED, BUNDLED
from elan_video.training.data import bicubic_upscale, read_image
from elan_video.training.evaluate import evaluate, evaluate_degraded
from elan_video.training.metrics import psnr

WEIGHTS = Path(ev.__file__).parent / "weights"
# Set5 Y-PSNR the bundled weights must keep: README's measured values less 0.05 dB. The targets are
# 37.0 / 33.0 / 30.7 (paper 38.17 / 34.61 / 32.43), so these floors also hold the weights to the targets.
SET5_FLOOR_DB = {2: 37.42, 3: 33.82, 4: 31.58}
# The codec-aware x2 / x3 / x4: measured 36.93 / 33.44 / 31.19 on Set5 (0.55 / 0.44 / 0.44 dB under the clean ones;
# the issue allows 0.6), floors 0.05 dB lower. On x264-coded pans (CRF 28) over two Set5 crops they gain +0.68 /
# +0.97 / +1.14 dB over bicubic where the clean ones gain +0.01 / +0.20 / +0.44.
VIDEO_SET5_FLOOR_DB = {2: 36.88, 3: 33.39, 4: 31.14}
VIDEO_CRF28_MARGIN_DB = 0.4
# The strong x2 on the same crops: +1.16 dB at CRF 28 where the -video x2 gains +0.68, and on the clean LR of the
# crops +2.22 where the -video x2 gains +3.61: it is for coarsely coded video only.
STRONG_CRF28_MARGIN_DB = 0.2
STRONG_CLEAN_LOSS_DB = 0.5
# The medium x2 (halfway between -video and the strong x2) on the same crops at CRF 23: +1.70 dB where -video gains
# +1.48.
MEDIUM_CRF23_MARGIN_DB = 0.12
# Y-PSNR on the 48 x 48 crop of 'bird' below: measured 45.4 / 40.1 / 34.3 dB, MATLAB bicubic 40.6 / 34.8 / 30.1.
BIRD_CROP_FLOOR_DB = {2: 43.0, 3: 37.5, 4: 32.0}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bundled_weights_load_by_name_with_the_light_config(scale: int) -> None:
    path = WEIGHTS / f"elan-light-x{scale}.safetensors"
    with safe_open(str(path), framework="pt") as f:
        assert f'"scale": {scale}' in f.metadata()["config"]
        keys = set(f.keys())
    model = ev.load_model(f"elan-light-x{scale}")
    assert (model.scale, model.m_elan, model.c_elan, model.n_share, model.r_expand) == (scale, 24, 60, 1, 2)
    assert model.window_sizes == (4, 8, 16)
    assert keys == set(ev.ELAN(scale=scale).state_dict())  # key for key the authors' network


def test_bundled_files_store_float16_weights_and_stay_small() -> None:
    """The package's weights are its only bulk: every file float16 (BatchNorm statistics float32), 10 MB in all at
    most (measured 9.2 MB for seven files; as float32 they took 15.4 for six)."""
    files = sorted(WEIGHTS.glob("*.safetensors"))
    assert {f.stem for f in files} == set(BUNDLED) - set(BLENDED)  # every bundled name has a file or a recipe
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                dtype = f.get_slice(key).get_dtype()
                want = "F32" if "running_" in key else "I64" if key.endswith("num_batches_tracked") else "F16"
                assert dtype == want, (path.name, key, dtype)
    assert sum(f.stat().st_size for f in files) <= 10_000_000


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bundled_weights_upscale_a_real_photo_sensibly(scale: int) -> None:
    """A sanity floor, not the quality target (README has the measured Set5/Set14 table): the output must be a
    faithful upscale of the photo, above what bicubic gives, far above a broken or untrained network (< 15 dB)."""
    hr = np.asarray(Image.open(shared_path("data", "sr", "Set5", "HR", "bird.png")).convert("RGB"))
    lr_path = shared_path("data", "sr", "Set5", "LR_bicubic", f"X{scale}", f"birdx{scale}.png")
    lr = np.asarray(Image.open(lr_path).convert("RGB"))
    crop = lr[:48, :48]
    out = ev.upscale_image(f"elan-light-x{scale}", crop, precision="fp32")
    target = hr[: 48 * scale, : 48 * scale]
    assert out.shape == target.shape
    floor = BIRD_CROP_FLOOR_DB[scale]
    assert psnr(out, target, shave=scale) >= floor
    # Guards: bicubic (40.6 / 34.8 / 30.1 dB), the output a pixel off (30.8 / 29.8 / 28.5), flat (17.8 / 17.3 / 15.5).
    wrong = [bicubic_upscale(crop, scale), np.roll(out, 1, axis=1), np.full_like(out, round(out.mean()))]
    assert max(psnr(w, target, shave=scale) for w in wrong) < floor


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bundled_weights_keep_their_set5_score(scale: int) -> None:
    """The whole of Set5, scored like README's table (MATLAB bicubic LR, Y channel, border shaved)."""
    result = evaluate(f"elan-light-x{scale}", shared_path("data", "sr", "Set5"), scale=scale, device="cpu")
    assert len(result.images) == 5
    assert result.psnr >= SET5_FLOOR_DB[scale], [(i.name, round(i.psnr, 2)) for i in result.images]


def test_cli_default_model_follows_the_scale(tmp_path: Path) -> None:
    image = np.asarray(Image.open(shared_path("data", "sr", "Set5", "HR", "head.png")).convert("RGB"))[:24, :20]
    src = tmp_path / "in.png"
    Image.fromarray(image).save(src)
    for scale in (3, 4):
        dst = tmp_path / f"out{scale}.png"
        result = CliRunner().invoke(
            main, [str(src), str(dst), "--scale", str(scale), "--precision", "fp32", "--backend", "eager", "-q"]
        )
        assert result.exit_code == 0, result.output
        with Image.open(dst) as out:
            assert out.size == (20 * scale, 24 * scale)


@pytest.mark.parametrize(
    ("name", "scale", "blend"),
    [
        ("elan-light-x2-video", 2, True),
        ("elan-light-x3-video", 3, False),
        ("elan-light-x4-video", 4, False),
        ("elan-light-x2-video-strong", 2, False),
    ],
)
def test_codec_aware_weights_load_by_name_and_carry_their_recipe(name: str, scale: int, blend: bool) -> None:
    with safe_open(str(WEIGHTS / f"{name}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert '"kind": "video"' in meta["degradation"] and f'"scale": {scale}' in meta["config"]
    assert ("blend" in meta) == blend  # x2: 0.8 of the fine-tune, 0.2 of the clean weights (docs/weights.md)
    model = ev.load_model(name)
    assert keys == set(ev.ELAN(scale=scale).state_dict()) and model.scale == scale
    clean = ev.load_model(f"elan-light-x{scale}").state_dict()
    assert any(not (t == clean[k]).all() for k, t in model.state_dict().items())


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_codec_aware_weights_gain_on_coded_video_and_keep_set5(scale: int, tmp_path: Path) -> None:
    crops = _set5_crops(tmp_path, scale=scale)
    gains = {
        weights: evaluate_degraded(weights, crops, scale=scale, degrade="x264:28", device="cpu").gain
        for weights in (f"elan-light-x{scale}", f"elan-light-x{scale}-video")
    }
    assert gains[f"elan-light-x{scale}-video"] >= gains[f"elan-light-x{scale}"] + VIDEO_CRF28_MARGIN_DB, gains
    result = evaluate(f"elan-light-x{scale}-video", shared_path("data", "sr", "Set5"), scale=scale, device="cpu")
    assert result.psnr >= VIDEO_SET5_FLOOR_DB[scale]  # the trade: at most 0.6 dB of clean quality


def test_the_strong_weights_gain_more_on_coarsely_coded_video_and_less_on_clean(tmp_path: Path) -> None:
    crops = _set5_crops(tmp_path, scale=2)
    gains = {
        (weights, degrade): evaluate_degraded(weights, crops, scale=2, degrade=degrade, device="cpu").gain
        for weights in ("elan-light-x2-video", "elan-light-x2-video-strong")
        for degrade in ("x264:28", "clean")
    }
    strong, video = "elan-light-x2-video-strong", "elan-light-x2-video"
    assert gains[strong, "x264:28"] >= gains[video, "x264:28"] + STRONG_CRF28_MARGIN_DB, gains
    assert gains[strong, "clean"] <= gains[video, "clean"] - STRONG_CLEAN_LOSS_DB, gains


def test_the_medium_weights_are_the_halfway_blend_and_gain_in_between(tmp_path: Path) -> None:
    first, second = (ev.load_model(f"elan-light-x2-video{v}").state_dict() for v in ("", "-strong"))
    for key, value in ev.load_model("elan-light-x2-video-medium").state_dict().items():
        want = torch.lerp(first[key], second[key], 0.5) if value.is_floating_point() else first[key]
        assert torch.equal(value, want), key
    crops = _set5_crops(tmp_path, scale=2)
    names = ("elan-light-x2-video", "elan-light-x2-video-medium", "elan-light-x2-video-strong")
    gains = {
        (weights, degrade): evaluate_degraded(weights, crops, scale=2, degrade=degrade, device="cpu").gain
        for weights in names
        for degrade in ("x264:23", "clean")
    }
    video, medium, strong = names
    # Measured at CRF 23 (mean QP 28.2 and 32.1): +1.48 / +1.70 / +1.78 dB; clean: +3.61 / +2.99 / +2.22.
    assert gains[medium, "x264:23"] >= gains[video, "x264:23"] + MEDIUM_CRF23_MARGIN_DB, gains
    assert gains[video, "clean"] - 0.3 >= gains[medium, "clean"] >= gains[strong, "clean"] + 0.3, gains


def _set5_crops(tmp_path: Path, *, scale: int) -> Path:
    """A benchmark folder of crops of Set5's baby and butterfly (x4: big enough for the 6-frame pan's LR)."""
    hr = tmp_path / "crops" / "HR"
    hr.mkdir(parents=True)
    box = (60, 140, 60, 156) if scale == 2 else (40, 200, 40, 200)
    for name in ("baby", "butterfly"):
        image = read_image(shared_path("data", "sr", "Set5", "HR", f"{name}.png"))
        Image.fromarray(image[box[0] : box[1], box[2] : box[3]]).save(hr / f"{name}.png")
    return hr.parent


def test_the_command_line_gives_lossy_video_the_codec_aware_weights(tmp_path: Path) -> None:
    lossy, coarse, lossless = tmp_path / "in.mp4", tmp_path / "coarse.mp4", tmp_path / "in.mkv"
    middling = tmp_path / "middling.mp4"
    make_clip(lossy, frames=3, size=(32, 24), options={"crf": "18"})  # mean QP 25
    make_clip(middling, frames=3, size=(32, 24), options={"crf": "22"})  # mean QP 29
    make_clip(coarse, frames=3, size=(32, 24), options={"crf": "36"})  # mean QP 43
    make_clip(lossless, frames=3, size=(32, 24), codec="ffv1", pix_fmt="yuv420p")
    image = tmp_path / "in.png"
    Image.fromarray(read_image(shared_path("data", "sr", "Set5", "HR", "head.png"))[:24, :32]).save(image)
    fp32 = ["--precision", "fp32", "--device", "cpu", "--backend", "eager"]
    cases = [
        (lossy, "out.mp4", [], "elan-light-x2-video"),
        (lossy, "rgb.mkv", ["--codec", "ffv1", "--pix-fmt", "gbrp"], "elan-light-x2-video"),  # the source decides
        (lossy, "out4.mp4", ["--scale", "4"], "elan-light-x4-video"),
        (lossy, "out3.mp4", ["--scale", "3"], "elan-light-x3-video"),
        (middling, "medium.mp4", [], "elan-light-x2-video-medium"),  # moderately quantised H.264
        (coarse, "strong.mp4", [], "elan-light-x2-video-strong"),  # coarsely quantised H.264
        (coarse, "strong4.mp4", ["--scale", "4"], "elan-light-x4-video"),  # no strong x4
        (lossy, "named.mp4", ["--model", "elan-light-x2"], "elan-light-x2"),  # --model decides
        (lossless, "out.mkv", [], "elan-light-x2"),  # nothing there was compressed
        (image, "out.png", [], "elan-light-x2"),
    ]
    for src, out, options, weights in cases:
        result = CliRunner().invoke(main, [str(src), str(tmp_path / out), *fp32, *options, "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["weights"] == weights, (src.name, options, summary)
        assert f", weights {weights} [eager fp32]" in result.stderr
    # The output is what those weights give, not the clean ones' (same frames through the library).
    frames = [f.to_ndarray(format="rgb24") for f in av.open(str(lossy)).decode(video=0)]
    got = [f for _, f in video_frames(tmp_path / "rgb.mkv")]
    with_video, with_clean = (
        np.mean(
            [psnr(g, ev.upscale_image(w, f, precision="fp32", device="cpu")) for g, f in zip(got, frames, strict=True)]
        )
        for w in ("elan-light-x2-video", "elan-light-x2")
    )
    assert with_video > 50 and with_clean < with_video - 5, (with_video, with_clean)


def test_a_folder_gives_each_file_the_weights_it_would_get_alone(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "lossy.mkv", frames=3, size=(32, 24), options={"crf": "18"})
    make_clip(folder / "lossless.mkv", frames=3, size=(32, 24), codec="ffv1", pix_fmt="yuv420p")
    Image.fromarray(read_image(shared_path("data", "sr", "Set5", "HR", "head.png"))[:24, :32]).save(folder / "a.png")
    options = ["--precision", "fp32", "--device", "cpu", "--backend", "eager", "--codec", "ffv1", "--pix-fmt", "gbrp"]
    result = CliRunner().invoke(main, [str(folder), str(tmp_path / "out"), *options, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    weights = {Path(f["output"]).name: f["weights"] for f in report["files"]}
    assert weights == {"lossy.mkv": "elan-light-x2-video", "lossless.mkv": "elan-light-x2", "a.png": "elan-light-x2"}
    for name in ("lossy.mkv", "lossless.mkv", "a.png"):  # the same output as the file alone
        alone, image = tmp_path / f"alone-{name}", name.endswith(".png")
        alone_options = options[:6] if image else options  # an image takes no video option
        assert CliRunner().invoke(main, [str(folder / name), str(alone), *alone_options]).exit_code == 0
        if image:
            assert (read_image(alone) == read_image(tmp_path / "out" / name)).all()
            continue
        got, want = video_frames(tmp_path / "out" / name), video_frames(alone)
        assert len(got) == 3 and all((x == y).all() for (_, x), (_, y) in zip(got, want, strict=True))
    # and not the other weights' output: the two differ by far more than nothing on the lossy clip
    other = tmp_path / "other.mkv"
    named = [str(folder / "lossy.mkv"), str(other), *options, "--model", "elan-light-x2"]
    assert CliRunner().invoke(main, named).exit_code == 0
    got, clean = video_frames(tmp_path / "out" / "lossy.mkv"), video_frames(other)
    assert np.mean([psnr(x, y) for (_, x), (_, y) in zip(got, clean, strict=True)]) < 50
