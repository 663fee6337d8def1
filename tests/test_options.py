"""UpscaleOptions: one declaration of the model options, one rule for a ready Upscaler, the scale from the model,
upscale_image's cache, one pixel conversion, and imports that point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_elan
from video_clips import make_clip

import elan_video as ev
from elan_video.bench.video import run_video_bench
from elan_video.errors import OptionError
from elan_video.jobs.folder import upscale_folder
from elan_video.model import upscaler as upscaler_module
from elan_video.model.checkpoint import save_safetensors
from elan_video.model.options import NAMES, UpscaleOptions
from elan_video.model.upscaler import from_network, to_network, upscaler_for


def _picture(height: int = 20, width: int = 28, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = 120 + 90 * np.sin(xx / 3.0)[..., None] * np.cos(yy / 4.0)[..., None]
    noise = np.random.default_rng(seed).integers(-20, 20, (height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scale": 5}, "scale must be 2, 3 or 4, got 5"),
        ({"precision": "fp8"}, "precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
        (
            {"backend": "onnx"},
            "backend must be one of eager, torchscript, compile, tensorrt, onnxruntime, openvino, auto, got 'onnx'",
        ),
        ({"tile": 8}, "tile must be at least 16 pixels, got 8"),
        ({"tile": 32, "tile_overlap": 16}, "tile_overlap must be >= 0 and less than half the tile, got 16"),
        ({"batch": 0}, "batch must be at least 1, got 0"),
        ({"max_memory": 0}, "max_memory must be a positive number of bytes, got 0"),
        ({"tiles": 64}, "unknown option 'tiles'"),
    ],
)
def test_options_are_checked_where_they_are_made(settings: dict, message: str) -> None:
    with pytest.raises(OptionError, match=f"^{message}"):
        UpscaleOptions.of(**settings)
    # The same check, the same words, wherever the options arrive.
    with pytest.raises(OptionError, match=f"^{message}"):
        ev.upscale_image(tiny_elan(2), _picture(), **settings)


def test_the_fields_are_the_options_every_entry_point_takes() -> None:
    assert NAMES == ("model", "scale", "device", "precision", "backend", "tile", "tile_overlap", "batch", "max_memory")
    options = UpscaleOptions(precision="fp32", tile=96)
    assert UpscaleOptions.of(options, batch=2) == UpscaleOptions(precision="fp32", tile=96, batch=2)
    assert options.given() == ["precision", "tile"]
    with pytest.raises(AttributeError, match="cannot assign"):
        options.tile = 64  # type: ignore[misc]


def test_a_ready_upscaler_with_other_options_is_refused_everywhere(tmp_path: Path) -> None:
    up = ev.Upscaler(tiny_elan(2), device="cpu", precision="fp32")
    image = _picture()
    refusal = r"^device, batch cannot be given with an Upscaler as model; set them on the Upscaler"
    with pytest.raises(OptionError, match=refusal):
        upscaler_for(UpscaleOptions(model=up, device="cpu", batch=2))
    with pytest.raises(OptionError, match=r"^precision cannot be given with an Upscaler"):
        ev.upscale_image(up, image, precision="bf16")
    src = tmp_path / "in.mp4"
    make_clip(src, frames=2, size=(32, 24))
    with pytest.raises(OptionError, match=r"^tile cannot be given with an Upscaler"):
        ev.upscale_video(src, tmp_path / "out.mp4", model=up, tile=96)
    with pytest.raises(OptionError, match=r"^backend cannot be given with an Upscaler"):
        run_video_bench(up, backend="torchscript")
    folder = tmp_path / "pictures"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(image).save(folder / "a.png")
    with pytest.raises(OptionError, match=r"^batch cannot be given with an Upscaler"):
        upscale_folder(folder, tmp_path / "out", options=UpscaleOptions(model=up, batch=4))
    with pytest.raises(OptionError, match=r"^scale 3 does not match the Upscaler, which upscales x2"):
        ev.upscale_video(src, tmp_path / "out.mp4", model=up, scale=3)
    with pytest.raises(OptionError, match=r"^model is already an Upscaler"):
        ev.Upscaler(up)
    # Alone, it is used as it is.
    assert np.array_equal(ev.upscale_image(up, image), up(image))
    assert not (tmp_path / "out.mp4").exists()


def test_the_scale_comes_from_the_model_unless_given(tmp_path: Path) -> None:
    src = tmp_path / "in.mkv"
    make_clip(src, frames=2, size=(24, 16))
    x4 = tiny_elan(4, m_elan=2, c_elan=12)
    summary = ev.upscale_video(src, tmp_path / "x4.mkv", model=x4, precision="fp32")
    assert summary.output_size == (96, 64)
    path = tmp_path / "x3.safetensors"
    save_safetensors(tiny_elan(3, m_elan=2, c_elan=12), path)
    summary = ev.upscale_video(src, tmp_path / "x3.mkv", model=path, precision="fp32")
    assert summary.output_size == (72, 48)
    with pytest.raises(OptionError, match=r"^scale 2 does not match the model, which upscales x3"):
        ev.upscale_video(src, tmp_path / "x2.mkv", model=path, scale=2)
    assert ev.Upscaler(x4).scale == 4


def test_upscale_image_reuses_its_upscaler_and_never_serves_stale_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_elan(2, m_elan=2, c_elan=12)
    image = _picture()
    built: list[ev.Upscaler] = []
    real = ev.Upscaler.from_options.__func__  # type: ignore[attr-defined]

    def counting(cls: type, options: UpscaleOptions) -> ev.Upscaler:
        built.append(real(cls, options))
        return built[-1]

    monkeypatch.setattr(upscaler_module.Upscaler, "from_options", classmethod(counting))
    monkeypatch.setattr(upscaler_module, "_CACHE", upscaler_module._UpscalerCache())
    first = ev.upscale_image(model, image, precision="fp32")
    again = ev.upscale_image(model, image, precision="fp32")
    assert len(built) == 1 and np.array_equal(first, again)
    # Other options are another Upscaler.
    ev.upscale_image(model, image, precision="fp32", tile=16, tile_overlap=4)
    assert len(built) == 2
    # Weights changed in place: the cached fused copy would be stale.
    with torch.no_grad():
        model.tail[0].weight.mul_(-1.0)
    changed = ev.upscale_image(model, image, precision="fp32")
    fresh = ev.Upscaler(model, precision="fp32")(image)
    assert len(built) == 3 and np.array_equal(changed, fresh)
    # The guard: the old weights' output differs, so serving it would have failed the equality above.
    assert np.abs(changed.astype(int) - first).max() > 10
    # Weights loaded from another model (new values copied in) likewise.
    model.load_state_dict(tiny_elan(2, m_elan=2, c_elan=12, seed=5).state_dict())
    assert np.array_equal(ev.upscale_image(model, image, precision="fp32"), ev.Upscaler(model, precision="fp32")(image))
    assert len(built) == 4


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_one_conversion_from_pixels_to_the_network_and_back(dtype: type) -> None:
    peak = float(np.iinfo(dtype).max)
    pixels = np.array([[[0, peak / 2, peak], [1, peak - 1, 12]]], dtype=dtype)[None]  # 1 x 1 x 2 x 3
    x = to_network(torch.from_numpy(pixels.astype(np.int64)), peak=peak)
    assert x.shape == (1, 3, 1, 2) and x.dtype == torch.float32
    middle = int(peak // 2) * 255.0 / peak
    assert x[0, :, 0, 0].tolist() == pytest.approx([0.0, middle, 255.0], abs=1e-3)
    back = from_network(x, peak=peak)
    assert back.shape == (1, 1, 2, 3)
    assert np.array_equal(back.numpy().astype(np.int64), pixels.astype(np.int64))
    # Out-of-range network output is clamped; floats in 0..1 (VapourSynth) are not rounded.
    assert from_network(torch.full((1, 3, 1, 1), 300.0), peak=peak).max().item() == peak
    half = from_network(torch.full((1, 3, 1, 1), 100.4), peak=1.0, integer=False)
    assert half.flatten().tolist() == pytest.approx([100.4 / 255] * 3)


# -- imports point one way ---------------------------------------------------------------------------------

_LAYERS = {"errors": 0, "model": 1, "media": 1, "jobs": 2, "training": 2, "bench": 3, "cli": 4, "__main__": 5}


def _imports(path: Path) -> set[str]:
    """The elan_video modules ``path`` imports (type-only imports included), as dotted names."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]  # a module's package, or an __init__'s own
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add(".".join([*base, *(node.module.split(".") if node.module else [])]))
            elif node.module and node.module.startswith("elan_video"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("elan_video"))
    return found


def _modules() -> dict[str, set[str]]:
    return {
        ".".join(p.relative_to(REPO).with_suffix("").parts): _imports(p)
        for p in sorted((REPO / "elan_video").rglob("*.py"))
    }


def test_imports_point_down_the_layers_and_never_in_a_circle() -> None:
    graph = _modules()
    for module, targets in graph.items():
        layer = module.split(".")[1] if module.count(".") else "__init__"
        if layer == "__init__":
            continue  # the curated public names: imports lazily from every layer
        for target in targets:
            other = target.split(".")[1] if target.count(".") else "__init__"
            assert other != "__init__", f"{module} imports the package root"
            assert _LAYERS[other] <= _LAYERS[layer], f"{module} imports {target} from a higher layer"
            if _LAYERS[other] == _LAYERS[layer]:
                assert other == layer, f"{module} imports {target}, a sibling layer"

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for target in graph.get(start, ()):
            for name in (target, f"{target}.__init__"):
                if name == goal or (name in graph and name not in seen and reaches(name, goal, seen | {name})):
                    return True
        return False

    circles = [m for m in graph if reaches(m, m, {m})]
    assert circles == []
