"""The bundled ELAN-light weights: loadable by name, the authors' keys and configuration, sane on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared_path
from PIL import Image
from safetensors import safe_open

import elan_video as ev
from elan_video.cli import main
from elan_video.training.data import bicubic_upscale
from elan_video.training.evaluate import evaluate
from elan_video.training.metrics import psnr

WEIGHTS = Path(ev.__file__).parent / "weights"
# Set5 Y-PSNR the bundled weights must keep: README's measured values less 0.05 dB. The targets are
# 37.0 / 33.0 / 30.7 (paper 38.17 / 34.61 / 32.43), so these floors also hold the weights to the targets.
SET5_FLOOR_DB = {2: 37.42, 3: 33.82, 4: 31.58}
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
        result = CliRunner().invoke(main, [str(src), str(dst), "--scale", str(scale), "--precision", "fp32", "-q"])
        assert result.exit_code == 0, result.output
        with Image.open(dst) as out:
            assert out.size == (20 * scale, 24 * scale)
