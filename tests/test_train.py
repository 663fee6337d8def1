"""Trainer: the loss falls, resume is exact, the export loads with the authors' keys, the fast forward is equal."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from elan_video.errors import OptionError
from elan_video.model.arch import ELAN
from elan_video.model.checkpoint import load_model
from elan_video.training.data import PatchSampler, bicubic_downscale
from elan_video.training.train import StepInfo, TrainingForward, export_checkpoint, load_checkpoint, train

TINY = {"m_elan": 4, "c_elan": 24, "n_share": 1, "r_expand": 2}
# Small and quick, but the same code path as an ELAN-light run.
FAST = {"arch": TINY, "batch": 4, "patch": 16, "lr": 2e-3, "save_every": 1000, "val_every": 1000}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_sampler_pairs_are_bicubic_degradations_and_reproducible() -> None:
    t91 = shared_path("data", "train", "T91")
    a = PatchSampler([t91], scale=3, patch=16, seed=5)
    lr, hr = a.sample(3)
    assert lr.shape == (3, 3, 16, 16) and hr.shape == (3, 3, 48, 48)
    assert lr.dtype == torch.float32 and float(lr.min()) >= 0 and float(lr.max()) <= 255
    for lr_i, hr_i in zip(lr, hr, strict=True):
        # Flips commute with the symmetric bicubic; a transpose swaps the order of the two rounded passes,
        # which can move a value by one grey level, never more.
        hr_u8 = hr_i.permute(1, 2, 0).numpy().astype(np.uint8)
        diff = bicubic_downscale(hr_u8, 3).astype(int) - lr_i.permute(1, 2, 0).numpy()
        assert np.abs(diff).max() <= 1
    b = PatchSampler([t91], scale=3, patch=16, seed=5)
    state = b.state()
    first = b.sample(3)
    assert torch.equal(first[0], lr)
    b.load_state(state)
    assert torch.equal(b.sample(3)[1], hr)


def test_image_degradation_pairs_are_aligned_crops_of_each_image_and_its_bicubic(tmp_path: Path) -> None:
    from PIL import Image

    from elan_video.training.data import _augment, read_image

    rng = np.random.default_rng(3)
    for name, (h, w) in {"a.png": (31, 40), "b.png": (28, 26)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    scale, patch = 3, 8
    sampler = PatchSampler([tmp_path], scale=scale, patch=patch, seed=1, degrade="image")
    assert len(sampler) == 2  # 20 px is below one 24 px crop
    sources = []
    for name in ("a.png", "b.png"):
        hr = read_image(tmp_path / name)
        hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
        sources.append((hr, bicubic_downscale(hr, scale)))
    lr, hr = sampler.sample(12)
    assert lr.shape == (12, 3, patch, patch) and hr.shape == (12, 3, patch * scale, patch * scale)
    for lr_i, hr_i in zip(lr, hr, strict=True):
        got = (lr_i.permute(1, 2, 0).numpy().astype(np.uint8), hr_i.permute(1, 2, 0).numpy().astype(np.uint8))
        found = 0
        for big, small in sources:
            for top in range(small.shape[0] - patch + 1):
                for left in range(small.shape[1] - patch + 1):
                    crop_hr = big[top * scale : (top + patch) * scale, left * scale : (left + patch) * scale]
                    crop_lr = small[top : top + patch, left : left + patch]
                    for code in range(8):
                        t_hr, t_lr = _augment(crop_hr, crop_lr, code)
                        found += np.array_equal(t_lr, got[0]) and np.array_equal(t_hr, got[1])
        assert found == 1
    with pytest.raises(OptionError, match="degrade must be one of patch, image"):
        PatchSampler([tmp_path], scale=2, patch=8, degrade="crop")


def test_training_forward_equals_the_faithful_network_with_gradients() -> None:
    torch.manual_seed(0)
    net = ELAN(scale=2, **TINY).train()
    x = torch.rand(2, 3, 20, 28) * 255
    target = torch.rand(2, 3, 40, 56) * 255
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    out_a, out_b = a(x), TrainingForward(b)(x)
    assert torch.allclose(out_a, out_b, atol=1e-4)
    (out_a - target).abs().mean().backward()
    (out_b - target).abs().mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, atol=1e-5 * float(pa.grad.abs().max()) + 1e-9), name
    for ba, bb in zip(a.buffers(), b.buffers(), strict=True):  # BatchNorm running statistics
        assert torch.allclose(ba.float(), bb.float(), atol=1e-5)


def test_loss_decreases(tmp_path: Path) -> None:
    losses: list[float] = []
    train(
        [shared_path("data", "train", "T91")],
        scale=2,
        out=tmp_path / "run.pt",
        steps=20,
        on_step=lambda info: losses.append(info.loss),
        **FAST,
    )
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_resume_is_exact_and_export_has_the_authors_keys(tmp_path: Path) -> None:
    data = [shared_path("data", "train", "T91")]
    straight, split = tmp_path / "straight.pt", tmp_path / "split.pt"
    infos: list[StepInfo] = []
    train(data, scale=2, out=straight, steps=4, fast_shift=True, **FAST)
    train(data, scale=2, out=split, steps=4, stop_at=2, fast_shift=True, **FAST)
    assert load_checkpoint(split)["step"] == 2
    exported = tmp_path / "x2.safetensors"
    train(data, scale=2, out=split, steps=4, resume=True, export=exported, on_step=infos.append, **FAST)
    assert [i.step for i in infos] == [3, 4]
    a, b = load_checkpoint(straight), load_checkpoint(split)
    for part in ("params", "params_ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for idx, st in a["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], b["optimizer"]["state"][idx]["exp_avg_sq"])

    model = load_model(exported)
    reference = ELAN(scale=2, **TINY)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert model.m_elan == 4 and model.c_elan == 24
    # The export is the EMA model, BatchNorm running statistics included (trained, so no longer 0/1).
    for key, value in a["params_ema"].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not torch.equal(model.state_dict()["body.0.modules_gmsa.gmsa_0.project_inp.1.running_var"], torch.ones(48))
    # The training checkpoint itself loads as the EMA model, and export_checkpoint writes the same file content.
    assert torch.equal(load_model(split).tail[0].weight, model.tail[0].weight)
    again = export_checkpoint(split, tmp_path / "again.safetensors")
    assert torch.equal(load_model(tmp_path / "again.safetensors").head[0].weight, again.head[0].weight)


def test_resume_takes_this_calls_schedule_and_lr_from_its_first_step(tmp_path: Path) -> None:
    data = [shared_path("data", "train", "T91")]
    base = {k: v for k, v in FAST.items() if k != "lr"}
    straight, split = tmp_path / "straight.pt", tmp_path / "split.pt"
    train(data, scale=2, out=straight, steps=4, lr=2e-3, schedule="step", milestones=(2,), **base)
    # The first two steps run without a milestone; the resumed call adds one at step 2 and keeps the stored lr.
    train(data, scale=2, out=split, steps=4, stop_at=2, lr=2e-3, schedule="step", **base)
    infos: list[StepInfo] = []
    train(
        data, scale=2, out=split, steps=4, resume=True, schedule="step", milestones=(2,), on_step=infos.append, **base
    )
    a, b = load_checkpoint(straight), load_checkpoint(split)
    for key, value in a["params"].items():
        assert torch.equal(value, b["params"][key]), key
    assert [i.lr for i in infos] == [1e-3, 1e-3]
    # A new base lr on resume replaces the stored one.
    infos.clear()
    train(data, scale=2, out=split, steps=5, resume=True, lr=4e-3, schedule="step", on_step=infos.append, **base)
    assert load_checkpoint(split)["options"]["lr"] == 4e-3
    assert [i.lr for i in infos] == [4e-3]


def test_resume_refuses_changed_batch_and_init_with_resume(tmp_path: Path) -> None:
    data = [shared_path("data", "train", "T91")]
    out = tmp_path / "run.pt"
    train(data, scale=2, out=out, steps=1, **FAST)
    with pytest.raises(OptionError, match="batch"):
        train(data, scale=2, out=out, steps=2, resume=True, **(FAST | {"batch": 2}))
    with pytest.raises(OptionError, match="degrade image differs from the resumed run's patch"):
        train(data, scale=2, out=out, steps=2, resume=True, degrade="image", **FAST)
    with pytest.raises(OptionError, match="scale"):
        train(data, scale=3, out=out, steps=2, resume=True, **FAST)
    with pytest.raises(OptionError, match="lr must be positive"):
        train(data, scale=2, out=out, steps=2, resume=True, **(FAST | {"lr": 0.0}))
    with pytest.raises(OptionError, match="exclusive"):
        train(data, scale=2, out=out, steps=2, resume=True, init=out, **FAST)


def test_init_from_x2_body_for_x3_and_validation_callback(tmp_path: Path) -> None:
    data = [shared_path("data", "train", "T91")]
    x2 = tmp_path / "x2.pt"
    train(data, scale=2, out=x2, steps=1, **FAST)
    results = []
    model = train(
        data,
        scale=3,
        out=tmp_path / "x3.pt",
        steps=1,
        init=x2,
        lr=1e-12,
        val_dir=shared_path("data", "sr", "Set5"),
        on_validate=lambda step, result: results.append((step, result)),
        **{k: v for k, v in FAST.items() if k != "lr"},
    )
    assert model.scale == 3
    body = "body.1.modules_lfe.lfe_0.conv0.shift_conv.conv1x1.weight"
    assert torch.allclose(model.state_dict()[body], load_model(x2).state_dict()[body], atol=1e-6)
    [(step, result)] = results
    assert step == 1 and result.scale == 3 and len(result.images) == 5 and np.isfinite(result.psnr)


def test_training_reads_its_images_without_the_video_stack(tmp_path: Path) -> None:
    # A GPU machine for training may have PyTorch and Pillow but not PyAV: reading the training images and
    # drawing patches must not import it.
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.webp", lossless=True)
    code = (
        "import sys; sys.modules['av'] = None\n"
        "from elan_video.training.data import PatchSampler\n"
        f"lr, hr = PatchSampler([{str(tmp_path)!r}], scale=2, patch=8, seed=1, degrade='image').sample(2)\n"
        "print(tuple(lr.shape), tuple(hr.shape))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "(2, 3, 8, 8) (2, 3, 16, 16)"


def test_an_anchor_holds_the_model_to_its_outputs_on_clean_lr_and_resumes_exactly(tmp_path: Path) -> None:
    import json

    from safetensors import safe_open

    from elan_video.training.evaluate import benchmark_pairs

    data = [shared_path("data", "train", "T91")]
    start = tmp_path / "start.pt"
    train(data, scale=2, out=start, steps=2, **FAST)
    anchor = tmp_path / "anchor.safetensors"
    reference = export_checkpoint(start, anchor)
    anchored = {"anchor": str(anchor), "anchor_weight": 20.0}
    for name, extra in {"free": {}, "anchored": anchored}.items():
        train(data, scale=2, out=tmp_path / f"{name}.pt", steps=6, init=anchor, **FAST, **extra)
    # Held-out clean LR (a crop of Set5's official x2 LR): the anchored run stays far nearer the anchor's outputs.
    lr = benchmark_pairs(shared_path("data", "sr", "Set5"), scale=2)[0][1][100:148, 100:148]
    x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = reference(x)
        drift = {n: float((load_model(tmp_path / f"{n}.pt")(x) - expected).abs().mean()) for n in ("free", "anchored")}
    assert drift["anchored"] < 0.5 * drift["free"], drift
    assert drift["free"] > 1.0, drift  # the free run did move: the comparison is not between two standstills

    # Two calls of 3 steps give the 6-step run's weights (the clean patches' random stream resumes too).
    split = tmp_path / "split.pt"
    train(data, scale=2, out=split, steps=6, stop_at=3, init=anchor, **FAST, **anchored)
    exported = tmp_path / "anchored.safetensors"
    train(data, scale=2, out=split, steps=6, resume=True, export=exported, **FAST, **anchored)
    a, b = load_checkpoint(tmp_path / "anchored.pt"), load_checkpoint(split)
    for key, value in a["params"].items():
        assert torch.equal(value, b["params"][key]), key
    with safe_open(str(exported), "pt") as f:
        assert json.loads(f.metadata()["anchor"])["weights"] == str(anchor)
    with pytest.raises(OptionError, match="anchor None differs"):
        train(data, scale=2, out=split, steps=7, resume=True, **FAST)
    with pytest.raises(OptionError, match="anchor_weight must be positive"):
        train(data, scale=2, out=split, steps=7, resume=True, **FAST, anchor=str(anchor), anchor_weight=0.0)
