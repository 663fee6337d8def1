"""The ELAN network against the authors' recorded output, and its structural contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_elan

import elan_video as ev
from elan_video.model.arch import pad_to_multiple


def test_reproduces_the_authors_output(reference_fixture: dict) -> None:
    model = ev.load_model(reference_fixture["state_dict"])
    with torch.inference_mode():
        out = model(reference_fixture["input"])
    assert out.shape == reference_fixture["output"].shape
    assert (out - reference_fixture["output"]).abs().max().item() <= 1e-3


def test_parameter_count_and_config_match_the_fixture(reference_fixture: dict) -> None:
    model = ev.load_model(reference_fixture["state_dict"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == reference_fixture["params"] == 582_012
    config = reference_fixture["config"]
    for key in ("scale", "m_elan", "c_elan", "n_share", "r_expand"):
        assert getattr(model, key) == config[key]
    assert list(model.window_sizes) == list(config["window_sizes"])


def test_state_dict_keys_equal_the_authors(reference_fixture: dict) -> None:
    net = ev.ELAN(scale=2, colors=3, m_elan=24, c_elan=60, n_share=1, r_expand=2, window_sizes=(4, 8, 16))
    ours = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    theirs = {k for k in reference_fixture["state_dict"] if not k.endswith("num_batches_tracked")}
    assert ours == theirs
    assert "body.0.modules_lfe.lfe_0.conv0.shift_conv.conv1x1.weight" in ours
    assert "body.11.modules_gmsa.gmsa_1.project_inp.1.running_var" in ours


def test_hyperparameters_are_keyword_only_attributes() -> None:
    with pytest.raises(TypeError):
        ev.ELAN(2)  # type: ignore[misc]
    net = ev.ELAN(scale=3, m_elan=4, c_elan=24, n_share=0, r_expand=1, window_sizes=(2, 4, 8))
    assert (net.scale, net.m_elan, net.c_elan, net.n_share, net.r_expand) == (3, 4, 24, 0, 1)
    assert net.window_sizes == (2, 4, 8)
    assert len(net.body) == 4


def test_a_wrong_shift_direction_changes_the_output(reference_fixture: dict) -> None:
    """The fixture is sensitive to the shift layout: swapping two groups must be visible (guards the test)."""
    model = ev.load_model(reference_fixture["state_dict"])
    with torch.no_grad():
        kernel = model.body[0].modules_lfe.lfe_0.conv0.shift_conv.weight
        g = kernel.shape[0] // 5
        kernel[: 2 * g] = torch.cat([kernel[g : 2 * g], kernel[:g]])
        out = model(reference_fixture["input"])
    assert (out - reference_fixture["output"]).abs().max().item() > 0.01


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (16, 16), (17, 33), (45, 61)])
def test_any_input_size_gives_s_times_the_size(size: tuple[int, int]) -> None:
    model = tiny_elan(3)
    x = torch.rand(2, 3, *size) * 255
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 3, size[0] * 3, size[1] * 3)
    assert torch.isfinite(y).all()


def test_padding_is_reflection_like_the_authors() -> None:
    x = torch.arange(2 * 3 * 5 * 9, dtype=torch.float32).view(2, 3, 5, 9)
    assert torch.equal(pad_to_multiple(x, 4), F.pad(x, (0, 3, 0, 3), mode="reflect"))
    # Too small for one reflection (the authors' code fails there): repeated reflection, never an error.
    assert pad_to_multiple(torch.rand(1, 3, 3, 3), 16).shape == (1, 3, 16, 16)


def test_c_elan_must_split_into_three_groups() -> None:
    with pytest.raises(ValueError, match="c_elan"):
        ev.ELAN(c_elan=20)
