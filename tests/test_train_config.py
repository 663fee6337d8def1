"""Training recipes as TOML (`elan-video train --config`): read, run, overridden by the command line, refused."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from elan_video.cli import main
from elan_video.errors import OptionError
from elan_video.model.arch import ELAN
from elan_video.model.checkpoint import load_model
from elan_video.training.config import ARCH_KEYS, TRAIN_KEYS, read_train_config
from elan_video.training.train import load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]

# A tiny network and a few small steps: the same code path as a shipped recipe, in a second or two.
TINY_RECIPE = """\
data_dirs = ["images"]   # relative to the current directory
scale = 2
out = "run.pt"
steps = 2
batch = 2
patch = 8
lr = 2e-3
schedule = "step"
milestones = [1]
gamma = 0.5
ema_decay = 0.99
save_every = 1000
seed = 1
fast_shift = true
export = "x2.safetensors"

[arch]
m_elan = 4
c_elan = 24
n_share = 1
r_expand = 2
"""


@pytest.fixture
def recipe_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the current directory, holding two folders of small random images and recipe.toml."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder in ("images", "other"):
        (tmp_path / folder).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / folder / f"{i}.png")
    (tmp_path / "recipe.toml").write_text(TINY_RECIPE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(*args: str) -> tuple[int, str]:
    """Exit code and stderr of `elan-video train ARGS`, in this process."""
    result = CliRunner().invoke(main, ["train", *args, "--quiet"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def test_a_recipe_is_read_and_run(recipe_dir: Path) -> None:
    code, err = run_cli("--config", "recipe.toml")
    assert code == 0, err
    ckpt = load_checkpoint(recipe_dir / "run.pt")
    assert ckpt["step"] == 2
    expected = {"data": ["images"], "batch": 2, "patch": 8, "lr": 2e-3, "schedule": "step", "milestones": [1]}
    expected |= {"gamma": 0.5, "ema_decay": 0.99, "seed": 1, "steps": 2}
    assert {key: ckpt["options"][key] for key in expected} == expected
    assert ckpt["config"]["m_elan"] == 4 and ckpt["config"]["c_elan"] == 24
    exported = load_model(recipe_dir / "x2.safetensors")
    assert exported.scale == 2 and exported.m_elan == 4


def test_the_recipe_equals_the_same_call_of_train(recipe_dir: Path) -> None:
    assert run_cli("--config", "recipe.toml")[0] == 0
    options = read_train_config("recipe.toml")
    data = options.pop("data_dirs")
    train(data, **(options | {"out": "direct.pt", "export": None}))
    a, b = load_checkpoint("run.pt"), load_checkpoint("direct.pt")
    assert a["options"] == b["options"]
    for key, value in a["params_ema"].items():
        assert value.equal(b["params_ema"][key]), key


def test_options_given_on_the_command_line_override_the_recipe(recipe_dir: Path) -> None:
    args = ("--steps", "3", "--batch", "3", "--milestones", "2", "--data", "other", "--no-fast-shift")
    code, err = run_cli("--config", "recipe.toml", "--out", "override.pt", *args)
    assert code == 0, err
    ckpt = load_checkpoint(recipe_dir / "override.pt")
    assert ckpt["step"] == 3
    options = ckpt["options"]
    assert (options["batch"], options["milestones"], options["data"]) == (3, [2], ["other"])
    assert (options["patch"], options["seed"], options["gamma"]) == (8, 1, 0.5)  # not given: the recipe's
    assert not (recipe_dir / "run.pt").exists()


def test_a_recipe_run_stops_and_resumes_despite_its_init(recipe_dir: Path) -> None:
    # A recipe starts from init; --resume continues the run in out instead of refusing init with resume.
    assert run_cli("--config", "recipe.toml", "--out", "straight.pt")[0] == 0
    assert run_cli("--config", "recipe.toml", "--out", "first.pt", "--stop-at", "1")[0] == 0
    (recipe_dir / "init.toml").write_text(TINY_RECIPE.replace('out = "run.pt"', 'out = "run.pt"\ninit = "first.pt"'))
    assert run_cli("--config", "init.toml", "--out", "first.pt", "--resume")[0] == 0
    a, b = load_checkpoint("straight.pt"), load_checkpoint("first.pt")
    assert b["step"] == 2
    for key, value in a["params_ema"].items():
        assert value.equal(b["params_ema"][key]), key


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("bach = 8", ["unknown key 'bach'", "did you mean 'batch'"]),
        ('steps = "ten"', ["steps must be an integer, got 'ten'"]),
        ("scale = true", ["scale must be an integer, got True"]),
        ('data_dirs = "images"', ["data_dirs must be a list of strings"]),
        ("patch = 4", ["patch must be at least 8, got 4"]),
        ("steps = ", ["not valid TOML", "line 1"]),
    ],
)
def test_a_bad_recipe_is_one_line_naming_the_file_and_key(recipe_dir: Path, line: str, words: list[str]) -> None:
    (recipe_dir / "bad.toml").write_text(line + "\n")
    code, err = run_cli("--config", "bad.toml", "--data", "images", "--scale", "2", "--out", "x.pt")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("elan-video: error: bad.toml: "), err
    for word in words:
        assert word in err
    assert not (recipe_dir / "x.pt").exists()


def test_a_bad_arch_key_and_a_missing_file_are_one_line(recipe_dir: Path) -> None:
    (recipe_dir / "bad.toml").write_text(TINY_RECIPE.replace("r_expand", "expand"))
    code, err = run_cli("--config", "bad.toml")
    assert code == 1 and err.count("\n") == 1 and "bad.toml: unknown key 'arch.expand'" in err, err
    (recipe_dir / "bad.toml").write_text(TINY_RECIPE.replace("c_elan = 24", "c_elan = 24.0"))
    code, err = run_cli("--config", "bad.toml")
    assert code == 1 and err.count("\n") == 1 and "bad.toml: arch.c_elan must be an integer, got 24.0" in err, err
    code, err = run_cli("--config", "nowhere.toml")
    assert (code, err) == (1, "elan-video: error: nowhere.toml: no such file\n")


def test_required_options_come_from_the_command_line_or_the_recipe(recipe_dir: Path) -> None:
    code, err = run_cli("--data", "images", "--out", "x.pt")
    assert (code, err) == (
        1,
        "elan-video: error: --scale is required: give it on the command line or as scale in a --config file\n",
    )
    (recipe_dir / "partial.toml").write_text('data_dirs = ["images"]\nscale = 2\n')
    code, err = run_cli("--config", "partial.toml")
    assert code == 1 and "--out is required" in err and "out in partial.toml" in err, err
    code, err = run_cli("--scale", "2", "--out", "x.pt")
    assert code == 1 and "--data is required" in err and "data_dirs in a --config file" in err, err
    (recipe_dir / "noval.toml").write_text('val_dir = "nowhere"\n')
    code, err = run_cli("--config", "noval.toml")
    assert (code, err) == (1, "elan-video: error: noval.toml: val_dir nowhere: no such folder\n")


def test_recipe_keys_are_the_parameters_of_train_and_elan() -> None:
    parameters = set(inspect.signature(train).parameters) - {"on_step", "on_validate"}
    assert set(TRAIN_KEYS) == parameters | {"threads"}
    assert set(ARCH_KEYS) <= set(inspect.signature(ELAN).parameters)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_each_shipped_recipe_parses_and_names_only_known_keys(scale: int) -> None:
    path = REPO / "training" / f"x{scale}.toml"
    recipe = read_train_config(path)  # raises on an unknown key or a wrong type
    assert set(recipe) <= set(TRAIN_KEYS)
    assert recipe["scale"] == scale and recipe["init"] == f"elan-light-x{scale}"
    assert {"data_dirs", "out", "steps", "batch", "patch", "lr", "schedule", "ema_decay", "seed", "export"} <= set(
        recipe
    )
    assert all(not Path(d).is_absolute() for d in recipe["data_dirs"])


def test_the_shipped_recipes_are_the_clean_and_the_codec_aware_ones() -> None:
    names = sorted(p.name for p in (REPO / "training").glob("*.toml"))
    assert names == [
        "x2-video-b.toml",
        "x2-video-strong-a.toml",
        "x2-video-strong.toml",
        "x2-video.toml",
        "x2.toml",
        "x3-video.toml",
        "x3.toml",
        "x4-video.toml",
        "x4.toml",
    ]


@pytest.mark.parametrize(
    ("name", "scale", "init", "clean"),
    [
        ("x2-video-b.toml", 2, "elan-light-x2", 0.35),
        ("x2-video.toml", 2, "ckpt/elan-light-x2-video-b.safetensors", 0.45),  # run C continues run B
        ("x3-video.toml", 3, "elan-light-x3", 0.45),
        ("x4-video.toml", 4, "elan-light-x4", 0.45),
        ("x2-video-strong-a.toml", 2, "elan-light-x2", 0.1),
        ("x2-video-strong.toml", 2, "ckpt/elan-light-x2-video-strong-a.safetensors", 0.1),  # run K continues A
    ],
)
def test_the_video_recipes_fine_tune_on_the_video_degradation(name: str, scale: int, init: str, clean: float) -> None:
    recipe = read_train_config(REPO / "training" / name)
    assert recipe["degrade"] == "video" and recipe["init"] == init and recipe["scale"] == scale
    assert recipe["video"]["p_clean"] == clean
    assert recipe["out"].startswith("ckpt/") and recipe["export"].startswith("ckpt/")
    if init.startswith("ckpt/"):  # the run it continues writes that file
        assert init in {read_train_config(p)["export"] for p in (REPO / "training").glob("*-video*.toml")}


def test_read_train_config_raises_option_error(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("lr = 1\nmilestones = [3, 5]\n[arch]\nwindow_sizes = [4, 8]\n")
    assert read_train_config(path) == {"lr": 1.0, "milestones": (3, 5), "arch": {"window_sizes": (4, 8)}}
    path.write_text("milestones = [3, 5.5]\n")
    with pytest.raises(OptionError, match=r"r\.toml: milestones must be a list of integers"):
        read_train_config(path)
    with pytest.raises(OptionError, match="is a folder"):
        read_train_config(tmp_path)
