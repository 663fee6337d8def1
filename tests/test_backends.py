"""Backends and precisions: each one that can run here is checked against the faithful network."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import tiny_elan

import elan_video as ev
from elan_video.errors import MissingDependencyError
from elan_video.model.backends import build_backend, parse_device, precision_candidates

CPU = torch.device("cpu")


def _check_backend(backend: str, device: torch.device, *, tolerance: float) -> None:
    model = tiny_elan(2).to(device)
    x = torch.rand(1, 3, 20, 28, device=device) * 255
    forward = build_backend(model, backend=backend, precision="fp32", device=device, example=x)
    with torch.inference_mode():
        expected = model(x)
        got = forward(x)
    assert got.shape == expected.shape
    assert (got.float() - expected).abs().max().item() <= tolerance


@pytest.mark.parametrize("backend", ["eager", "torchscript"])
def test_cpu_backends_equal_the_network(backend: str) -> None:
    _check_backend(backend, CPU, tolerance=1e-2)


def test_compile_backend_equals_the_network() -> None:
    _check_backend("compile", CPU, tolerance=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["eager", "torchscript", "compile"])
def test_cuda_backends_equal_the_network(backend: str) -> None:
    # cuDNN runs float32 convolutions in TF32 (10-bit mantissa) by default, and the fused and unfused graphs
    # pick different algorithms: on an H100 (torch 2.11) they differed by 0.019-0.027 at the 255 scale.
    _check_backend(backend, torch.device("cuda"), tolerance=5e-2)


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("torch_tensorrt") is None,
    reason="needs a CUDA device and torch_tensorrt (pip install 'elan-video[tensorrt]')",
)
def test_tensorrt_backend_equals_the_network() -> None:
    _check_backend("tensorrt", torch.device("cuda"), tolerance=5e-2)


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None, reason="torch_tensorrt is installed")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to reach the import")
def test_tensorrt_missing_gives_an_install_hint() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'elan-video\[tensorrt\]'"):
        _check_backend("tensorrt", torch.device("cuda"), tolerance=1.0)


def test_tensorrt_on_cpu_is_refused_clearly() -> None:
    with pytest.raises(ev.OptionError, match="CUDA"):
        _check_backend("tensorrt", CPU, tolerance=1.0)


def test_unknown_backend_and_device_are_refused() -> None:
    with pytest.raises(ev.OptionError, match="backend must be one of"):
        build_backend(tiny_elan(2), backend="onnx", precision="fp32", device=CPU, example=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ev.OptionError, match="device"):
        parse_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ev.OptionError, match="CUDA is not available"):
            parse_device("cuda")


def test_precision_candidates_are_measured_faster_than_fp32() -> None:
    """Only precisions whose matmul measured faster than fp32 here are offered to 'auto'."""
    candidates = precision_candidates(CPU)
    assert set(candidates) <= {"bf16"}


def test_auto_precision_resolves_to_a_measured_choice() -> None:
    up = ev.Upscaler(tiny_elan(2), device="cpu", precision="auto")
    image = torch.randint(0, 256, (24, 24, 3), dtype=torch.uint8).numpy()
    up(image)
    assert up.precision in ["fp32", *precision_candidates(CPU)]
