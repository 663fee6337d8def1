"""The codec benchmark (eval --degrade, --flicker) and training on the video degradation, end to end."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared_path, tiny_elan
from PIL import Image

from elan_video.cli import main
from elan_video.errors import OptionError
from elan_video.model.checkpoint import save_safetensors
from elan_video.training.data import read_image
from elan_video.training.evaluate import evaluate_degraded, flicker, flicker_frames, read_sequence

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    """Two 96x80 HR crops of Set5 photos in a benchmark folder (no LR_bicubic: LR made by MATLAB bicubic)."""
    hr = tmp_path / "small" / "HR"
    hr.mkdir(parents=True)
    for name in ("baby", "butterfly"):
        image = read_image(shared_path("data", "sr", "Set5", "HR", f"{name}.png"))
        Image.fromarray(image[60:140, 60:156]).save(hr / f"{name}.png")
    return hr.parent


def test_bicubic_gains_nothing_and_loses_psnr_as_crf_rises(small_set: Path) -> None:
    db = {}
    for degrade in ("clean", "x264:18", "x264:35", "jpeg:90", "jpeg:20"):
        result = evaluate_degraded("bicubic", small_set, scale=2, degrade=degrade)
        assert [s.name for s in result.images] == ["baby", "butterfly"]
        assert result.gain == 0.0  # the baseline is the model here
        db[degrade] = result.bicubic
    assert db["clean"] > db["x264:18"] > db["x264:35"] + 1.5
    assert db["clean"] > db["jpeg:90"] > db["jpeg:20"] + 1.5
    with pytest.raises(OptionError, match="x264:CRF or jpeg:Q"):
        evaluate_degraded("bicubic", small_set, scale=2, degrade="h264:23")


def test_flicker_input_is_a_static_noisy_coded_clip_and_bicubic_ratio_is_one() -> None:
    photo = read_image(shared_path("data", "sr", "Set5", "HR", "baby.png"))
    frames = flicker_frames(photo)
    assert len(frames) == 12 and all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in frames)
    steps = [np.abs(b.astype(int) - a).mean() for a, b in pairwise(frames)]
    # The scene is still; x264 at CRF 28 codes the noise away in P-frames, so the picture jumps at the keyframe
    # (frame 6) and hardly moves between the others.
    assert int(np.argmax(steps)) == 5 and 1 < steps[5] < 5 and max(steps[:5] + steps[6:]) < 0.5
    result = flicker("bicubic", photo, scale=2)
    assert result.ratio == 1.0 and 0.05 < result.model < 1


def test_eval_command_degrade_table_and_json(small_set: Path, tmp_path: Path) -> None:
    weights = tmp_path / "tiny.safetensors"
    save_safetensors(tiny_elan(2), weights)
    args = ["eval", "--data", str(small_set), "--scale", "2", "--model", str(weights), "--degrade", "x264:28"]
    table = CliRunner().invoke(main, [*args, "--degrade", "JPEG:50"])
    assert table.exit_code == 0, table.output
    lines = table.output.strip().splitlines()
    assert lines[0].startswith("small x2") and lines[2].startswith("x264:28") and lines[3].startswith("jpeg:50")
    report = json.loads(CliRunner().invoke(main, [*args, "--json"]).output)
    (run,) = report["results"]
    assert run["degrade"] == "x264:28" and len(run["images"]) == 2
    assert run["gain"] == pytest.approx(run["psnr"] - run["bicubic"]) and 20 < run["bicubic"] < 40
    bad = CliRunner().invoke(main, [*args, "--degrade", "x264:99"])
    assert bad.exit_code != 0 and "0..51" in bad.output


def test_auto_scores_each_coded_item_with_the_weights_the_command_line_would_give_it(small_set: Path) -> None:
    # Scored by the weights it names: clean and JPEG are coded the same every time, so the scores are equal.
    for degrade, weights in (("clean", "elan-light-x2"), ("jpeg:50", "elan-light-x2-video")):
        auto = evaluate_degraded("auto", small_set, scale=2, degrade=degrade)
        assert [s.weights for s in auto.images] == [weights, weights], degrade  # clean: nothing was compressed
        assert auto.psnr == evaluate_degraded(weights, small_set, scale=2, degrade=degrade).psnr
        assert auto.images[0].qp is None  # no H.264 stream
    # These crops coded at CRF 35 have a mean QP of 40-44, at CRF 12 of 18-21: the strong weights only there.
    args = ["eval", "--data", str(small_set), "--model", "auto", "--degrade", "x264:35"]
    coarse = json.loads(CliRunner().invoke(main, [*args, "--json"]).output)["results"][0]["images"]
    assert {s["weights"] for s in coarse} == {"elan-light-x2-video-strong"} and all(s["qp"] > 40 for s in coarse)
    fine = evaluate_degraded("auto", small_set, scale=2, degrade="x264:12")
    assert {s.weights for s in fine.images} == {"elan-light-x2-video"} and all(s.qp < 22 for s in fine.images)
    table = CliRunner().invoke(main, [*args[:-1], "clean"])
    assert table.exit_code == 0 and table.output.strip().endswith("+4.19  elan-light-x2 x2"), table.output
    plain = CliRunner().invoke(main, ["eval", "--data", str(small_set), "--model", "auto"])
    assert plain.exit_code == 1 and "--model auto picks weights by how the LR was coded" in plain.output


def test_eval_command_flicker_line() -> None:
    set5 = shared_path("data", "sr", "Set5")
    result = CliRunner().invoke(main, ["eval", "--data", str(set5), "--model", "bicubic", "--flicker"])
    assert result.exit_code == 0, result.output
    assert "flicker (baby," in result.output and result.output.strip().endswith("ratio 1.00")


def test_train_on_the_video_degradation_exports_its_recipe(tmp_path: Path) -> None:
    from safetensors import safe_open

    t91 = shared_path("data", "train", "T91")
    ckpt, weights = tmp_path / "v.pt", tmp_path / "v.safetensors"
    args = ["train", "--data", str(t91), "--scale", "2", "--out", str(ckpt), "--steps", "2", "--batch", "2"]
    args += ["--patch", "16", "--threads", "1", "--quiet", "--degrade", "video", "--export", str(weights)]
    args += ["--init", str(_tiny_weights(tmp_path))]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    recipe = json.loads(meta["degradation"])
    assert recipe["kind"] == "video" and recipe["crf"] == [18, 35] and json.loads(meta["config"])["scale"] == 2
    resumed = CliRunner().invoke(main, [*args[:-2], "--resume", "--steps", "3"])
    assert resumed.exit_code == 0, resumed.output


def _tiny_weights(tmp_path: Path) -> Path:
    path = tmp_path / "init.safetensors"
    save_safetensors(tiny_elan(2), path)
    return path


def test_a_recipes_video_table_sets_the_degradation_and_lands_in_the_metadata() -> None:
    from elan_video.training.train import export_metadata, video_recipe

    recipe = video_recipe({"p_clean": 0.35, "noise": [0.5, 2.0]})
    assert recipe.p_clean == 0.35 and recipe.noise == (0.5, 2.0) and recipe.crf == (18, 35)
    meta = json.loads(export_metadata("video", {"p_clean": 0.35})["degradation"])
    assert meta["kind"] == "video" and meta["p_clean"] == 0.35
    assert json.loads(export_metadata("image")["degradation"]) == {"kind": "image", "resize": "MATLAB bicubic"}
    with pytest.raises(OptionError, match="unknown fields"):
        video_recipe({"p_cleen": 0.3})


def test_a_video_benchmark_scores_its_first_ten_frames_coded_as_one_sequence() -> None:
    foreman = shared_path("data", "video", "foreman_qcif_30f_yuv420p10le.y4m")
    frames = read_sequence(foreman, scale=2)
    assert len(frames) == 10 and all(f.shape == (144, 176, 3) and f.dtype == np.uint8 for f in frames)
    assert all(np.abs(b.astype(int) - a).mean() > 1 for a, b in pairwise(frames))  # real motion, no repeats
    db = {}
    for degrade in ("clean", "x264:18", "x264:35"):
        result = evaluate_degraded("bicubic", foreman, scale=2, degrade=degrade)
        assert [s.name for s in result.images] == [foreman.stem] and result.gain == 0.0
        db[degrade] = result.bicubic
    assert db["clean"] > db["x264:18"] > db["x264:35"] + 1.5
    # The trained network on the clean LR: HR and LR line up frame for frame (a frame or a pixel off would
    # lose to bicubic, not gain 5.5 dB).
    assert evaluate_degraded("elan-light-x2", foreman, scale=2, degrade="clean", device="cpu").gain > 4.5


def test_eval_command_takes_a_video_with_degrade_only() -> None:
    foreman = str(shared_path("data", "video", "foreman_qcif_30f_yuv420p10le.y4m"))
    result = CliRunner().invoke(main, ["eval", "--data", foreman, "--model", "bicubic", "--degrade", "x264:28"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("foreman_qcif_30f_yuv420p10le.y4m x2") and lines[2].startswith("x264:28")
    plain = CliRunner().invoke(main, ["eval", "--data", foreman, "--model", "bicubic"])
    assert plain.exit_code == 1 and plain.output.strip().splitlines() == [
        f"elan-video: error: {foreman}: a video benchmark needs --degrade (clean, x264:CRF, jpeg:Q) or --flicker"
    ]
