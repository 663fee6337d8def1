"""The eval and train commands end to end on real data (Set5, T91)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import shared_path, tiny_elan

from elan_video.cli import main
from elan_video.model.checkpoint import load_model, save_safetensors
from elan_video.training.evaluate import benchmark_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_eval_bicubic_json_parses_and_matches_the_paper() -> None:
    set5 = shared_path("data", "sr", "Set5")
    result = CliRunner().invoke(main, ["eval", "--data", str(set5), "--scale", "3", "--model", "bicubic", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scale"] == 3 and report["dataset"] == "Set5"
    assert [r["name"] for r in report["images"]] == ["baby", "bird", "butterfly", "head", "woman"]
    assert report["psnr"] == pytest.approx(30.39, abs=0.02)
    assert report["psnr"] == pytest.approx(np.mean([r["psnr"] for r in report["images"]]))


def test_eval_tiny_model_table_and_lr_made_from_hr(tmp_path: Path) -> None:
    set5 = shared_path("data", "sr", "Set5")
    weights = tmp_path / "tiny.safetensors"
    save_safetensors(tiny_elan(2), weights)
    result = CliRunner().invoke(main, ["eval", "--data", str(set5), "--scale", "2", "--model", str(weights)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("mean") and len(lines) == 8
    assert float(lines[-1].split()[1]) > 10  # a tamed random model: a finite, low PSNR
    # Without an LR_bicubic folder the LR is made from HR; for Set5 that is the official LR bit for bit.
    (tmp_path / "Set5").symlink_to(set5 / "HR")
    made = benchmark_pairs(tmp_path / "Set5", scale=2)
    official = benchmark_pairs(set5, scale=2)
    assert [m[0] for m in made] == [o[0] for o in official]
    for (_, lr_made, hr_made), (_, lr_official, hr_official) in zip(made, official, strict=True):
        assert np.array_equal(lr_made, lr_official) and np.array_equal(hr_made, hr_official)


def test_eval_reports_an_empty_folder_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path), "--scale", "2", "--model", "bicubic"])
    assert result.exit_code == 1
    assert result.output.startswith("elan-video: error:") and "no images" in result.output


def test_train_command_stops_resumes_and_exports_elan_light(tmp_path: Path) -> None:
    t91 = shared_path("data", "train", "T91")
    ckpt, weights = tmp_path / "x2.pt", tmp_path / "x2.safetensors"
    common = ["train", "--data", str(t91), "--scale", "2", "--out", str(ckpt), "--steps", "2", "--batch", "2"]
    common += ["--patch", "16", "--threads", "1", "--quiet"]
    first = CliRunner().invoke(main, [*common, "--stop-at", "1", "--export", str(weights)])
    assert first.exit_code == 0, first.output
    assert ckpt.is_file() and not weights.exists()  # the run is not finished: nothing exported yet
    second = CliRunner().invoke(main, [*common, "--resume", "--export", str(weights)])
    assert second.exit_code == 0, second.output
    model = load_model(weights)
    assert (model.scale, model.m_elan, model.c_elan, model.n_share) == (2, 24, 60, 1)
    bad = CliRunner().invoke(main, [*common, "--resume", "--schedule", "step", "--milestones", "x"])
    assert bad.exit_code == 1 and "milestones" in bad.output


def test_train_help_states_the_trainers_default_lr() -> None:
    # The help text spells the default out so that `--help` need not import torch; this keeps the two equal.
    from elan_video.training.train import DEFAULT_LR

    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())  # independent of where click wraps the line
    stated = re.search(r"--lr FLOAT Base learning rate \[default: ([0-9.e+-]+);", help_text)
    assert stated is not None and float(stated.group(1)) == DEFAULT_LR


def test_training_in_bf16_where_this_cpu_emulates_it_says_so_in_one_line(tmp_path: Path) -> None:
    from elan_video.model.backends import precision_candidates

    t91 = shared_path("data", "train", "T91")
    args = ["train", "--data", str(t91), "--scale", "2", "--steps", "1", "--batch", "1", "--patch", "16"]
    args += ["--threads", "1", "--quiet", "--device", "cpu"]
    warning = "elan-video: warning: bf16 is emulated on this CPU"
    emulated = "bf16" not in precision_candidates(torch.device("cpu"))  # the AVX2 host: yes; AMX, AVX-512-BF16: no
    runner = CliRunner()
    bf16 = runner.invoke(main, [*args, "--out", str(tmp_path / "b.pt"), "--precision", "bf16"])
    assert bf16.exit_code == 0, bf16.output
    said = [line for line in bf16.output.splitlines() if line.startswith(warning)]
    assert len(said) == (1 if emulated else 0) and all(line.endswith("with precision fp32") for line in said)
    fp32 = runner.invoke(main, [*args, "--out", str(tmp_path / "f.pt"), "--precision", "fp32"])
    assert fp32.exit_code == 0 and "warning" not in fp32.output, fp32.output


def test_export_command_writes_loadable_weights_with_the_authors_keys(tmp_path: Path) -> None:
    t91 = shared_path("data", "train", "T91")
    ckpt, weights = tmp_path / "x3.pt", tmp_path / "x3.safetensors"
    args = ["train", "--data", str(t91), "--scale", "3", "--out", str(ckpt), "--steps", "4", "--stop-at", "1"]
    trained = CliRunner().invoke(main, [*args, "--batch", "2", "--patch", "16", "--threads", "1", "--quiet"])
    assert trained.exit_code == 0, trained.output
    done = CliRunner().invoke(main, ["export", str(ckpt), str(weights)])
    assert done.exit_code == 0, done.output
    exported, stored = load_model(weights), load_model(ckpt)
    assert exported.scale == 3
    assert set(exported.state_dict()) == set(stored.state_dict())
    for key, value in stored.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value), key
    again = CliRunner().invoke(main, ["export", str(ckpt), str(weights)])
    assert again.exit_code == 1 and "exists" in again.output
    wrong = CliRunner().invoke(main, ["export", str(ckpt), str(tmp_path / "x3.pth")])
    assert wrong.exit_code == 1 and ".safetensors" in wrong.output
