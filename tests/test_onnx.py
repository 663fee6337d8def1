"""ONNX export (elan-video export ... .onnx) and the onnxruntime/openvino backends, on real runtimes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import detail_elan

import elan_video as ev
from elan_video.cli import main
from elan_video.model.checkpoint import save_safetensors
from elan_video.model.export import export_onnx, read_metadata, weights_sha256
from elan_video.model.upscaler import Upscaler, psnr

ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'elan-video[onnx]'")
pytest.importorskip("onnxscript", reason="needs onnxscript: pip install 'elan-video[onnx]'")

# One ELAB (two LFE + GMSA pairs): every operation of ELAN-light, exported in seconds rather than minutes.
SMALL = {"m_elan": 2}


@pytest.fixture(scope="module")
def model(small_onnx: tuple[torch.nn.Module, Path]) -> torch.nn.Module:
    return small_onnx[0]


@pytest.fixture(scope="module")
def dynamic_file(small_onnx: tuple[torch.nn.Module, Path]) -> Path:
    return small_onnx[1]


@pytest.fixture(scope="module")
def cache(dynamic_file: Path) -> Path:
    return dynamic_file.parent.parent


def pictures() -> list[np.ndarray]:
    """Three sizes: whole windows, odd, and smaller than the largest window (16) on both sides."""
    rng = np.random.default_rng(0)
    base = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    base = np.clip(base.astype(int) // 32 * 32 + np.arange(64)[None, :, None] * 2, 0, 255).astype(np.uint8)
    return [base, base[:37, :53], base[:9, :13]]


def test_the_file_says_what_it_holds(model: torch.nn.Module, dynamic_file: Path) -> None:
    meta = read_metadata(dynamic_file)
    assert meta["architecture"] == "ELAN" and meta["scale"] == "2"
    assert meta["weights_sha256"] == weights_sha256(model)
    assert (meta["precision"], meta["shape"], meta["value_range"]) == ("fp32", "Nx3xHxW", "RGB 0..1 in and out")
    session = ort.InferenceSession(str(dynamic_file), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "input" and graph_input.type == "tensor(float)"
    assert [isinstance(d, str) for d in graph_input.shape] == [True, False, True, True]


def test_the_file_in_onnxruntime_equals_the_network_at_any_size(model: torch.nn.Module, dynamic_file: Path) -> None:
    session = ort.InferenceSession(str(dynamic_file), providers=["CPUExecutionProvider"])
    for picture in pictures():
        x = torch.from_numpy(picture).permute(2, 0, 1)[None].float()
        batch = torch.cat([x, x.flip(-1)])  # N = 2, a size the export was not traced at
        got = session.run(None, {"input": (batch / 255).numpy()})[0] * 255
        with torch.no_grad():
            want = model(batch).numpy()
        assert got.shape == want.shape
        assert psnr(got, want) >= 50  # measured: 151-153 dB (float rounding)
        assert psnr(np.roll(want, 1, axis=-1), want) < 50  # guard, one pixel off: 16.9-18.5 dB


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_backends_match_upscale_image(model: torch.nn.Module, dynamic_file: Path, backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino", reason="needs openvino: pip install 'elan-video[openvino]'")
    up = Upscaler(model, device="cpu", precision="fp32", backend=backend)
    for picture in pictures():
        want = ev.upscale_image(model, picture, device="cpu", precision="fp32")
        got = up(picture)
        assert got.shape == want.shape and got.dtype == np.uint8
        assert psnr(got, want) >= 50  # measured: identical (inf) in both runtimes
        assert psnr(np.roll(want, 1, axis=1), want) < 50  # guard, one pixel off: 16.9-18.5 dB


def test_the_cache_exports_once_per_model(
    model: torch.nn.Module, cache: Path, dynamic_file: Path, capfd: pytest.CaptureFixture
) -> None:
    from elan_video.model.runtimes import cached_onnx

    first = cached_onnx(model)
    assert first == dynamic_file
    stamp = first.stat().st_mtime_ns
    Upscaler(model, device="cpu", precision="fp32", backend="onnxruntime")(pictures()[2])
    assert cached_onnx(model) == first and first.stat().st_mtime_ns == stamp
    assert "exporting" not in capfd.readouterr().err  # the module's first export already made it
    # Keyed by the weights: a change to any weight (the upscale_image cache's stale-weights case) is another file.
    assert weights_sha256(model)[:20] in first.name
    other = detail_elan(2, **SMALL)
    with torch.no_grad():
        other.tail[0].bias[0] += 1e-3
    assert weights_sha256(other) != weights_sha256(model)
    assert [p.name for p in (cache / "onnx").glob("*.onnx")] == [first.name]


def test_a_static_file_takes_only_its_own_shape(model: torch.nn.Module, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "static.onnx", size=(24, 20), batch=1)
    assert read_metadata(path)["shape"] == "1x3x20x24"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 20, 24]
    x = np.random.default_rng(1).random((1, 3, 20, 24), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x) * 255).numpy()
    assert psnr(session.run(None, {"input": x})[0] * 255, want) >= 50
    with pytest.raises(Exception, match=r"(?s)invalid dimensions.*index: 2 Got: 21 Expected: 20"):
        session.run(None, {"input": np.zeros((1, 3, 21, 24), np.float32)})


def _hot(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its q projections x 80: q q^T passes fp16's 65504 (as in test_fuse's fp16 test)."""
    gmsa = model.body[0].modules_gmsa.gmsa_0
    width = gmsa.split_chns[0]
    with torch.no_grad():
        for g in range(3):
            rows = slice(g * width, g * width + width // 2)
            gmsa.project_inp[1].weight[rows] *= 80.0
            gmsa.project_inp[1].bias[rows] *= 80.0
    return model


def test_fp16_file_keeps_the_attention_logits_in_float32(tmp_path: Path) -> None:
    import onnx

    model = _hot(detail_elan(2, **SMALL))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        gmsa = model.body[0].modules_gmsa.gmsa_0
        q = gmsa.project_inp(model.body[0].modules_lfe.lfe_0(model.head(model.sub_mean(x * 255))))
        assert (q[:, : gmsa.split_chns[0] // 2] ** 2).sum(1).amax() > 65504  # the logits leave fp16's range
        want = model(x * 255).clamp(0, 255).numpy()
    path = export_onnx(model, tmp_path / "half.onnx", size=(16, 16), batch=1, half=True)
    assert read_metadata(path)["precision"] == "fp16"
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    softmax_inputs = [types[n.input[0]] for n in inferred.graph.node if n.op_type == "Softmax"]
    assert len(softmax_inputs) == 3 and set(softmax_inputs) == {onnx.TensorProto.FLOAT}
    assert inferred.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # runs fp16 on the CPU
    got = session.run(None, {"input": x.half().numpy()})[0].astype(np.float32) * 255
    assert np.isfinite(got).all()
    assert psnr(np.clip(got, 0, 255), want) >= 45  # measured: 77.9 dB (fp16 activations)
    assert psnr(np.roll(want, 1, axis=-1), want) < 45  # guard, one pixel off: 17.5 dB


def test_export_command_writes_onnx_and_safetensors(model: torch.nn.Module, tmp_path: Path) -> None:
    source = tmp_path / "small.safetensors"
    save_safetensors(model, source)
    result = CliRunner().invoke(main, ["export", str(source), str(tmp_path / "out.onnx"), "--size", "20x12"])
    assert result.exit_code == 0, result.output
    assert read_metadata(tmp_path / "out.onnx")["shape"] == "Nx3x12x20"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "small.safetensors"]  # no partial file left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{bad}", "{out}"], "not an ELAN checkpoint"),
        (["{good}", "{out}", "--size", "20by12"], "--size: size must look like 320x180, got '20by12'"),
        (["{good}", "{locked}/x.onnx"], "is not writable"),
        (["{good}", "{tmp}/missing/x.onnx"], "does not exist"),
        (["{good}", "{good}/x.onnx"], "is not a folder"),
        (["{good}", "{tmp}/x.safetensors", "--size", "20x12"], "--size: only for an .onnx destination"),
    ],
)
def test_export_command_refuses_bad_input_in_one_line(
    model: torch.nn.Module, tmp_path: Path, args: list[str], message: str
) -> None:
    good, bad, locked = tmp_path / "good.safetensors", tmp_path / "bad.pt", tmp_path / "locked"
    save_safetensors(model, good)
    torch.save({"epoch": torch.tensor(3), "weights": [1, 2]}, bad)
    locked.mkdir()
    locked.chmod(0o500)
    if "{locked}" in args[1] and os.access(locked, os.W_OK):
        pytest.skip("this user writes anywhere (root): no folder here is unwritable")
    paths = {"good": good, "bad": bad, "locked": locked, "tmp": tmp_path, "out": tmp_path / "out.onnx"}
    result = CliRunner().invoke(main, ["export", *(a.format(**paths) for a in args)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("elan-video: error: ") and message in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.onnx").exists() and not list(tmp_path.glob(".*partial*"))


def test_auto_backend_picks_the_fastest_measured_and_remembers_it(
    model: torch.nn.Module, cache: Path, dynamic_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from elan_video.model import choice

    picture = pictures()[0]
    up = Upscaler(model, device="cpu", backend="auto")
    got = up(picture)
    (entry,) = json.loads((cache / "choices.json").read_text()).values()
    timed = entry["ms"]
    assert {"eager fp32", "onnxruntime fp32", "openvino fp32"} <= set(timed)
    assert (up.backend, up.precision) == (entry["backend"], entry["precision"])
    # The fastest, a runtime only where it beats the best eager time by more than the margin (ms kept to 0.01).
    from elan_video.model.choice import RUNTIME_MARGIN

    eager = min(ms for name, ms in timed.items() if name.startswith("eager "))
    runtime = min(ms for name, ms in timed.items() if not name.startswith("eager "))
    line = eager * (1 - RUNTIME_MARGIN)
    if abs(runtime - line) >= 0.02:  # clear of the rounding of the kept times
        wins = runtime < line
        assert timed[f"{up.backend} {up.precision}"] == (runtime if wins else eager)
        assert (up.backend != "eager") == wins
    want = ev.upscale_image(model, picture, device="cpu", precision="fp32")
    assert psnr(got, want) >= 45  # the check every candidate passed
    # A second process start (a new Upscaler) takes the remembered choice without measuring again.
    monkeypatch.setattr(choice, "_measure", lambda *a, **k: pytest.fail("measured again"))
    again = Upscaler(model, device="cpu", backend="auto")
    again(picture)
    assert (again.backend, again.precision) == (up.backend, up.precision)


def test_candidates_are_timed_on_one_square_size_whatever_the_frame() -> None:
    from elan_video.model.choice import PROBE_SIDE, probe_from

    big = torch.arange(3 * 200 * 300, dtype=torch.float32).view(1, 3, 200, 300)
    top, left = (200 - PROBE_SIDE) // 2, (300 - PROBE_SIDE) // 2
    assert torch.equal(probe_from(big), big[:, :, top : top + PROBE_SIDE, left : left + PROBE_SIDE])
    small = torch.arange(3 * 70 * 50, dtype=torch.float32).view(1, 3, 70, 50)  # QCIF-like and smaller: tiled
    probe = probe_from(small)
    assert probe.shape == (1, 3, PROBE_SIDE, PROBE_SIDE)
    assert torch.equal(probe[:, :, :70, :50], small) and torch.equal(probe[:, :, 70:140, 100:150], small)


def test_other_weights_of_the_network_take_its_choice_and_check_a_reduced_precision(
    model: torch.nn.Module, cache: Path, dynamic_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from elan_video.model import choice

    picture = pictures()[0]
    first = Upscaler(model, device="cpu", backend="auto")
    first(picture)
    measured: list[str] = []
    real_measure = choice._measure
    monkeypatch.setattr(choice, "_measure", lambda m, *a: measured.append(weights_sha256(m)) or real_measure(m, *a))
    # The same network with other weights: speed is the network's, so the remembered choice holds, unmeasured.
    other = detail_elan(2, m_elan=2, seed=1)
    up = Upscaler(other, device="cpu", backend="auto")
    up(picture)
    assert (up.backend, up.precision) == (first.backend, first.precision) and measured == []
    # A reduced precision remembered (as a CPU with native bf16 would choose) is checked once for new weights.
    path = cache / "choices.json"
    key = choice._key(model, "auto")
    known = json.loads(path.read_text())
    known[key] = {"backend": "eager", "precision": "bf16", "ms": {}, "checked": [weights_sha256(model)]}
    path.write_text(json.dumps(known))
    up = Upscaler(other, device="cpu", backend="auto")
    up(picture)
    assert (up.backend, up.precision) == ("eager", "bf16") and measured == []
    assert weights_sha256(other) in json.loads(path.read_text())[key]["checked"]
    # Weights that bf16 cannot carry (body weights x4: activations grow until bf16 output is 15 dB from fp32, while
    # the unscaled ones give 75 dB) fail the check and get a measurement of their own, within 45 dB.
    wild = detail_elan(2, m_elan=2, seed=1)
    with torch.no_grad():
        for name, parameter in wild.named_parameters():
            if name.startswith("body") and "weight" in name:
                parameter.mul_(4)
    up = Upscaler(wild, device="cpu", backend="auto")
    got = up(picture)
    assert measured == [weights_sha256(wild)] and up.precision != "bf16"
    assert psnr(got, ev.upscale_image(wild, picture, device="cpu", precision="fp32")) >= 45
    known = json.loads(path.read_text())
    assert known[key]["precision"] == "bf16" and weights_sha256(wild) not in known[key]["checked"]
    assert choice._key(wild, "auto", weights=weights_sha256(wild)) in known


def test_a_remembered_choice_is_kept_per_instruction_set_not_per_cpu_name() -> None:
    from elan_video.model.choice import cpu_identity

    # Two days of this project's VM: the same model name, AVX2 only on one host and AVX-512-BF16 on the other.
    # Keyed by the name alone (as it was), the bf16 choice of the second would run emulated on the first.
    avx2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2\n"
    bf16 = avx2.replace("avx2", "avx2 avx512f avx512_bf16")
    assert cpu_identity(avx2) == "AMD EPYC avx2 fma"
    assert cpu_identity(bf16) == "AMD EPYC avx2 fma avx512f avx512_bf16"
    assert cpu_identity(bf16.replace("avx512f avx512_bf16", "avx512_bf16 avx512f")) == cpu_identity(bf16)
    # A second processor's lines (every vCPU repeats them) do not count twice.
    assert cpu_identity(avx2 + avx2.replace("0", "1")) == cpu_identity(avx2)


def test_a_damaged_choices_file_is_measured_again(
    model: torch.nn.Module, cache: Path, dynamic_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import json

    from elan_video.model.choice import _key

    path = cache / "choices.json"
    # Cut off mid-write, and this model's entry without its fields.
    for damaged in ('{"truncated": ', json.dumps({_key(model, "auto"): {"ms": {}}})):
        path.write_text(damaged)
        up = Upscaler(model, device="cpu", backend="auto")
        up(pictures()[2])
        entry = json.loads(path.read_text())  # valid again, with the choice measured now
        assert any(
            e.get("backend") == up.backend and e.get("precision") == up.precision
            for e in entry.values()
            if isinstance(e, dict)
        )
    err = capfd.readouterr().err
    assert "is not readable JSON; measuring again" in err and "Traceback" not in err


def test_openvino_is_loaded_without_its_usage_telemetry() -> None:
    # `import openvino` posts a usage event from a forked process unless CI=true (so CI is taken away here); the
    # fork, taken while the job's threads hold locks, hung the command at exit. OpenVINO's no-op stub must be bound.
    pytest.importorskip("openvino", reason="needs openvino: pip install 'elan-video[openvino]'")
    code = (
        "import sys; from elan_video.model.runtimes import runtime_precisions; runtime_precisions('openvino'); "
        "import openvino.tools.ovc.telemetry_utils as t; print(t.tm.__name__, 'openvino_telemetry' in sys.modules)"
    )
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "False"], done.stderr


def test_onnx_runtime_runs_without_its_usage_telemetry(tmp_path: Path, model: torch.nn.Module) -> None:
    # ONNX Runtime 1.29+ on Linux uploads usage events and keeps a device id in ~/.cache/Microsoft unless
    # ORT_DISABLE_TELEMETRY=1 is set before it starts; with it nothing is written there (checked on 1.32).
    weights = tmp_path / "small-x2.safetensors"
    save_safetensors(model, weights)  # its export is in the module's cache already
    code = (
        "import numpy as np, elan_video as ev; "
        f"ev.upscale_image({str(weights)!r}, np.zeros((16, 16, 3), np.uint8), backend='onnxruntime', precision='fp32')"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)  # ELAN_VIDEO_CACHE stays the module's
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (home / ".cache" / "Microsoft").exists(), sorted(str(p) for p in home.rglob("*"))
