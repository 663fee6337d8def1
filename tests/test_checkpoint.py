"""load_model: sources, wrappers, inferred hyperparameters and clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import shared_path, tiny_elan
from PIL import Image
from safetensors import safe_open

import elan_video as ev
from elan_video.cli import main
from elan_video.model.checkpoint import infer_config, save_safetensors
from elan_video.model.upscaler import psnr


@pytest.mark.parametrize(
    "config",
    [
        {"scale": 2, "m_elan": 4, "c_elan": 24, "n_share": 1, "r_expand": 2},
        {"scale": 3, "m_elan": 6, "c_elan": 30, "n_share": 2, "r_expand": 1},
        {"scale": 4, "m_elan": 3, "c_elan": 18, "n_share": 0, "r_expand": 3},
        {"scale": 2, "m_elan": 36, "c_elan": 180, "n_share": 0, "r_expand": 2},
    ],
)
def test_hyperparameters_are_inferred_from_shapes(config: dict) -> None:
    net = ev.ELAN(**config)
    assert infer_config(net.state_dict()) == {**config, "colors": 3}
    loaded = ev.load_model(net.state_dict())
    assert not loaded.training
    x = torch.rand(1, 3, 9, 11) * 255
    with torch.inference_mode():
        assert torch.equal(loaded(x), net.eval()(x))


@pytest.mark.parametrize("wrapper", ["params_ema", "params", "state_dict", "model"])
def test_wrappers_and_module_prefix_are_unwrapped(tmp_path: Path, wrapper: str) -> None:
    net = tiny_elan(2)
    path = tmp_path / "wrapped.pth"
    torch.save({wrapper: {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, path)
    loaded = ev.load_model(path)
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_safetensors_round_trip_keeps_keys_config_and_window_sizes(tmp_path: Path) -> None:
    net = ev.ELAN(scale=3, m_elan=2, c_elan=24, window_sizes=(2, 4, 8))
    path = tmp_path / "net.safetensors"
    save_safetensors(net, path)
    loaded = ev.load_model(path)
    assert loaded.window_sizes == (2, 4, 8) and loaded.scale == 3
    assert set(loaded.state_dict()) == set(net.state_dict())


def _expect(source: object, *needles: str) -> None:
    with pytest.raises(ev.CheckpointError) as info:
        ev.load_model(source)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_unknown_key_is_named(tmp_path: Path) -> None:
    state = tiny_elan(2).state_dict() | {"body.0.extra.weight": torch.zeros(1)}
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    _expect(path, str(path), "body.0.extra.weight")


def test_missing_key_is_named() -> None:
    state = tiny_elan(2).state_dict()
    del state["body.1.modules_gmsa.gmsa_0.project_out.bias"]
    _expect(state, "body.1.modules_gmsa.gmsa_0.project_out.bias", "missing")


def test_wrong_shape_is_named() -> None:
    state = tiny_elan(2).state_dict()
    state["body.0.modules_gmsa.gmsa_1.project_out.weight"] = torch.zeros(24, 24, 3, 3)
    _expect(state, "body.0.modules_gmsa.gmsa_1.project_out.weight", "shape")


def test_corrupt_and_foreign_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    _expect(text, str(text))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    _expect(broken, str(broken))
    good = tmp_path / "good.pt"
    torch.save(tiny_elan(2).state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _expect(truncated, str(truncated))
    _expect(tmp_path / "absent.pth", "absent.pth")
    _expect("no-such-model", "no-such-model", "elan-light-x2")


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("unpickled!",))


# The hostile file is pickled with protocol 4, which torch's weights-only reader warns about before refusing it.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_arbitrary_pickles_are_never_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    with pytest.raises(ev.CheckpointError) as refused:
        ev.load_model(path)
    # One line with the unpickler's finding, not torch's paragraph advising a load with weights_only=False.
    message = str(refused.value)
    assert message.startswith(f"{path}: corrupt or not a weights-only PyTorch checkpoint (Unsupported ")
    assert "\n" not in message and "weights_only" not in message
    assert "unpickled!" not in capsys.readouterr().out


def test_a_state_dict_of_non_tensors_is_refused() -> None:
    _expect({"head.0.weight": [1, 2, 3]}, "head.0.weight")


def test_half_storage_halves_the_file_and_moves_the_output_by_at_most_a_level(tmp_path: Path) -> None:
    """`elan-video export --fp16` to .safetensors, as the bundled weights are stored: float16 weights, float32
    BatchNorm statistics, the source's provenance kept; the trained network's output moves by at most a level."""
    torch.manual_seed(0)
    net = ev.load_model("elan-light-x2-video")
    with torch.no_grad():  # weights that float16 cannot hold exactly, as a fresh training export's are
        for p in net.parameters():
            p.mul_(1 + 1e-3 * torch.randn_like(p))
    source, full, half = (tmp_path / f"{n}.safetensors" for n in ("source", "full", "half"))
    save_safetensors(net, source, metadata={"degradation": '{"kind": "video"}', "blend": '{"alpha": 0.8}'})
    for dst, extra in ((full, []), (half, ["--fp16"])):
        result = CliRunner().invoke(main, ["export", str(source), str(dst), *extra])
        assert result.exit_code == 0, result.output
    assert half.stat().st_size < 0.55 * full.stat().st_size
    with safe_open(str(half), framework="pt") as f:
        meta, stored = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert (meta["degradation"], meta["blend"]) == ('{"kind": "video"}', '{"alpha": 0.8}')
    state = net.state_dict()
    for key, value in stored.items():
        if "running_" in key:  # a variance may sit below float16's normal range: kept exactly
            assert value.dtype == torch.float32 and torch.equal(value, state[key]), key
        elif value.is_floating_point():
            assert value.dtype == torch.float16, key
    picture = np.asarray(Image.open(shared_path("data", "sr", "Set5", "LR_bicubic", "X2", "birdx2.png")))[:40, :48]
    a, b = (ev.upscale_image(ev.load_model(p), picture, precision="fp32") for p in (full, half))
    assert np.abs(a.astype(int) - b).max() <= 1 and psnr(a, b) >= 65  # measured 69.5 dB
    # Guard: weights rounded to bfloat16 (a coarser storage) fall below the threshold (measured 60.8 dB).
    coarse = ev.load_model(full)
    coarse.load_state_dict({k: v.bfloat16().float() if v.is_floating_point() else v for k, v in state.items()})
    assert psnr(ev.upscale_image(coarse, picture, precision="fp32"), a) < 65
