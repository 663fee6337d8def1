"""Checkpoints as people have them: every training wrapper loads to the same network, and every damaged file is
refused with one CheckpointError line naming the file and the field, in the library and on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_elan
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import elan_video as ev
from elan_video.cli import main
from elan_video.model.arch import ELAN
from elan_video.model.checkpoint import save_safetensors

Maker = Callable[[Path], Path]
_SCRIPT = Path(sys.executable).with_name("elan-video")
# The installed script where there is one (CI's venv); from a source tree, the same CLI as a module.
ELAN_VIDEO = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "elan_video"]


def _stats() -> dict[str, object]:
    """The authors' utils.get_stat_dict() after some epochs: nested dicts of lists, floats and ints."""
    bench = {"psnrs": [30.1, 30.4], "ssims": [0.91, 0.92], "best_psnr": {"value": 30.4, "epoch": 2}}
    return {"epochs": 2, "losses": [9.5, 8.1], "ema_loss": 0.0, "set5": bench, "manga109": dict(bench)}


def _train_one_step(net: ELAN, scheduler_class: type) -> tuple[dict, dict]:
    """Optimizer and scheduler state dicts after one real Adam step on ``net``, as the authors' train.py holds."""
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)
    if scheduler_class is torch.optim.lr_scheduler.StepLR:
        scheduler = scheduler_class(optimizer, step_size=250, gamma=0.5)
    else:  # MultiStepLR keeps its milestones in a collections.Counter, which weights_only must accept
        scheduler = scheduler_class(optimizer, milestones=[250, 400], gamma=0.5)
    net.train()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255
    nn.functional.l1_loss(net(x), torch.zeros(2, 3, 32, 32)).backward()
    optimizer.step()
    scheduler.step()
    net.eval()
    return optimizer.state_dict(), scheduler.state_dict()


def _authors(net: ELAN, scheduler_class: type) -> dict[str, object]:
    """model_x2_{epoch}.pt as the authors' train.py writes it: the model is wrapped in nn.DataParallel there, so
    its keys carry "module." (built by hand: DataParallel would move the model to a GPU where there is one)."""
    optimizer, scheduler = _train_one_step(net, scheduler_class)
    return {
        "epoch": 2,
        "model_state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
        "optimizer_state_dict": optimizer,
        "scheduler_state_dict": scheduler,
        "stat_dict": _stats(),
    }


def _other_weights() -> dict[str, torch.Tensor]:
    """Another network of the same shape, for the raw weights beside an EMA: loading these would be the bug."""
    return tiny_elan(2, seed=7).state_dict()


WRAPPED: list = [
    pytest.param(lambda net: _authors(net, torch.optim.lr_scheduler.StepLR), id="authors-train.py"),
    pytest.param(lambda net: _authors(net, torch.optim.lr_scheduler.MultiStepLR), id="authors-multisteplr"),
    pytest.param(lambda net: {"params": _other_weights(), "params_ema": net.state_dict()}, id="basicsr-params-ema"),
    pytest.param(lambda net: {"params": net.state_dict(), "iter": 5}, id="basicsr-params"),
    pytest.param(lambda net: {"state_dict": net.state_dict(), "epoch": 3}, id="state_dict"),
    pytest.param(lambda net: {"model": net.state_dict()}, id="model"),
    pytest.param(lambda net: {f"module.{k}": v for k, v in net.state_dict().items()}, id="dataparallel-prefix"),
    pytest.param(lambda net: {"state_dict": {"params_ema": net.state_dict()}}, id="nested"),
    pytest.param(
        lambda net: {"state_dict": net.state_dict(), "input": torch.zeros(1, 3, 4, 4), "output": torch.zeros(1)},
        id="beside-tensors",  # the layout of ../shared/reference/elan_light_x2.pt
    ),
]


@pytest.mark.parametrize("wrap", WRAPPED)
def test_wrapped_checkpoints_load_to_the_same_network(tmp_path: Path, wrap: Callable[[ELAN], object]) -> None:
    net = tiny_elan(2)
    path = tmp_path / "model_x2_2.pt"
    torch.save(wrap(net), path)  # the wrapper first: the authors' format trains net one step before saving it
    loaded = ev.load_model(path)  # weights_only=True inside, so optimizer and scheduler states must pass it
    x = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        assert torch.equal(loaded(x), net.eval()(x))


# --- damaged files ---------------------------------------------------------------------------------------------

_GOOD_CONFIG = tiny_elan(2).config()


def _st(name: str, *, config: object = None, raw: str | None = None, **tensors: torch.Tensor | None) -> Maker:
    """A tiny x2 ELAN saved as .safetensors, ``config`` (JSON-dumped; default the true one) or ``raw`` text as its
    config metadata; ``tensors`` replace weights by key ("__" for ".") or, as None, remove them."""

    def make(folder: Path) -> Path:
        state = _edited(tensors)
        text = raw if raw is not None else json.dumps(_GOOD_CONFIG if config is None else config)
        path = folder / name
        save_file(state, str(path), metadata={"config": text, "format": "pt"})
        return path

    return make


def _pt(name: str, obj: Callable[[], object]) -> Maker:
    def make(folder: Path) -> Path:
        torch.save(obj(), folder / name)
        return folder / name

    return make


def _edited(tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    state = {k: v.contiguous() for k, v in tiny_elan(2).state_dict().items()}
    for key, value in tensors.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


def _cut(name: str, keep: Callable[[int], int]) -> Maker:
    """A good checkpoint (.safetensors or .pt by ``name``) cut to ``keep(size)`` bytes."""

    def make(folder: Path) -> Path:
        good = folder / f"good{Path(name).suffix}"
        if good.suffix == ".safetensors":
            save_safetensors(tiny_elan(2), good)
        else:
            torch.save(tiny_elan(2).state_dict(), good)
        data = good.read_bytes()
        (folder / name).write_bytes(data[: keep(len(data))])
        return folder / name

    return make


def _config(**changes: object) -> dict[str, object]:
    return _GOOD_CONFIG | changes


def _with_config(**changes: object) -> Callable[[], object]:
    """This project's own .pt layout: the weights under params_ema beside a config."""
    return lambda: {"params_ema": tiny_elan(2).state_dict(), "config": _config(**changes)}


_LFE_OUT = "body__1__modules_lfe__lfe_0__conv1__shift_conv__conv1x1__weight"
# (maker, what the message must name besides the file).
DAMAGED: list = [
    pytest.param(_cut("cut.safetensors", lambda n: n // 2), "corrupt or not a safetensors file", id="st-truncated"),
    pytest.param(_cut("short.safetensors", lambda n: n - 64), "corrupt or not a safetensors file", id="st-short-data"),
    pytest.param(_cut("empty.safetensors", lambda n: 0), "corrupt or not a safetensors file", id="st-empty"),
    pytest.param(_st("json.safetensors", raw="{scale: 2,"), "metadata 'config' is not JSON", id="st-config-not-json"),
    pytest.param(_st("list.safetensors", raw="[2, 4]"), "metadata 'config' is not a JSON object", id="st-config-list"),
    pytest.param(_st("m.safetensors", config=_config(m_elan="4")), "config field 'm_elan'", id="st-m_elan-string"),
    pytest.param(_st("s.safetensors", config=_config(scale=[2])), "config field 'scale'", id="st-scale-list"),
    pytest.param(_st("b.safetensors", config=_config(n_share=True)), "config field 'n_share'", id="st-n_share-bool"),
    pytest.param(
        _st("w.safetensors", config=_config(window_sizes=[8, 16])), "config field 'window_sizes'", id="st-two-windows"
    ),
    pytest.param(
        _st("n.safetensors", config=_config(window_sizes=[-4, 8, 16])),
        "config field 'window_sizes'",
        id="st-negative-window",
    ),
    pytest.param(_st("x5.safetensors", config=_config(scale=5)), "config field 'scale'", id="st-config-scale-5"),
    pytest.param(_st("c.safetensors", config=_config(c_elan=25)), "config field 'c_elan'", id="st-config-c_elan-25"),
    pytest.param(_st("neg.safetensors", config=_config(c_elan=-24)), "config field 'c_elan'", id="st-negative-c_elan"),
    pytest.param(_st("x3.safetensors", config=_config(scale=3)), "config field 'scale' is 3", id="st-config-disagrees"),
    pytest.param(
        _st("tail.safetensors", tail__0__weight=torch.zeros(75, 24, 3, 3)), "'tail.0.weight'", id="st-tensors-x5"
    ),
    pytest.param(
        _st("head.safetensors", head__0__weight=torch.zeros(25, 3, 3, 3)), "'head.0.weight'", id="st-tensors-c_elan-25"
    ),
    pytest.param(_st("flat.safetensors", head__0__weight=torch.zeros(24)), "'head.0.weight'", id="st-flat-head"),
    pytest.param(_st("miss.safetensors", **{_LFE_OUT: None}), _LFE_OUT.replace("__", "."), id="st-missing-key"),
    pytest.param(
        _st("shape.safetensors", **{_LFE_OUT: torch.zeros(24, 24, 3, 3)}),
        _LFE_OUT.replace("__", "."),
        id="st-wrong-shape",
    ),
    pytest.param(_cut("cut.pt", lambda n: n // 2), "corrupt or not a weights-only PyTorch", id="pt-truncated"),
    pytest.param(_cut("empty.pt", lambda n: 0), "corrupt or not a weights-only PyTorch", id="pt-empty"),
    pytest.param(_pt("list.pt", lambda: [torch.zeros(3)]), "holds a list", id="pt-not-a-dict"),
    pytest.param(_pt("none.pt", lambda: {}), "empty state dict", id="pt-empty-dict"),
    pytest.param(
        _pt("odd.pt", lambda: {"epoch": 2, "weights": tiny_elan(2).state_dict()}), "'epoch'", id="pt-unknown-wrapper"
    ),
    pytest.param(_pt("m.pt", _with_config(m_elan="4")), "config field 'm_elan'", id="pt-m_elan-string"),
    pytest.param(_pt("s.pt", _with_config(scale=[2])), "config field 'scale'", id="pt-scale-list"),
    pytest.param(_pt("w.pt", _with_config(window_sizes=(8, 16))), "config field 'window_sizes'", id="pt-two-windows"),
    pytest.param(_pt("c.pt", _with_config(c_elan=25)), "config field 'c_elan'", id="pt-config-c_elan-25"),
    pytest.param(
        _pt("cfg.pt", lambda: {"params_ema": tiny_elan(2).state_dict(), "config": "x2"}),
        "entry 'config'",
        id="pt-config-string",
    ),
    pytest.param(
        _pt("x5.pt", lambda: _edited({"tail__0__weight": torch.zeros(75, 24, 3, 3)})),
        "'tail.0.weight'",
        id="pt-tensors-x5",
    ),
    pytest.param(_pt("miss.pt", lambda: _edited({"head__0__bias": None})), "'head.0.bias'", id="pt-missing-key"),
    pytest.param(
        _pt("shape.pt", lambda: _edited({"head__0__bias": torch.zeros(3)})), "'head.0.bias'", id="pt-wrong-shape"
    ),
]


@pytest.mark.parametrize(("make", "field"), DAMAGED)
def test_damaged_files_raise_one_line_naming_file_and_field(tmp_path: Path, make: Maker, field: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ev.CheckpointError) as info:
        ev.load_model(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and field in message, message


def _picture(folder: Path) -> Path:
    path = folder / "in.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)
    return path


def _one_error_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("elan-video: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(("make", "field"), DAMAGED)
def test_the_command_line_refuses_damaged_files_in_one_line(tmp_path: Path, make: Maker, field: str) -> None:
    bad, out = make(tmp_path), tmp_path / "out"
    out.mkdir()
    args = [str(_picture(tmp_path)), str(out / "out.png"), "--model", str(bad), "--device", "cpu"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 1
    _one_error_line(result.stderr, str(bad), field)
    assert not list(out.iterdir())  # neither the output nor a temporary file beside it


def test_the_installed_command_reports_bad_config_json_without_a_traceback(tmp_path: Path) -> None:
    """The issue's own case through the real script: a separate process, nothing of pytest's in the way."""
    bad, out = _st("bad.safetensors", raw='{"scale": 2,')(tmp_path), tmp_path / "out"
    out.mkdir()
    cmd = [*ELAN_VIDEO, str(_picture(tmp_path)), str(out / "out.png"), "--model", str(bad), "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    _one_error_line(done.stderr, str(bad), "metadata 'config' is not JSON")
    assert not list(out.iterdir())
