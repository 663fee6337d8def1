"""What `pip install .` installs: the wheel built from this checkout holds every module, the bundled weights and
the PEP 561 marker. The suite runs from the editable install, which would not notice a subpackage left out of
pyproject's package list or weights left out of its package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"elan_video": ROOT / "elan_video", "vselan": ROOT / "filters" / "vselan"}


def _package_files() -> set[str]:
    """The files of the two packages as the wheel names them (no caches)."""
    return {
        f"{name}/{path.relative_to(folder).as_posix()}"
        for name, folder in PACKAGES.items()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_module_the_weights_and_the_typing_marker(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info/ beside the sources.
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    for folder in ("elan_video", "filters"):
        shutil.copytree(ROOT / folder, tree / folder, ignore=ignore)
    out = tmp_path / "wheel"
    build = [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("elan_video-*.whl")
    names = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}

    expected = _package_files()
    assert names == expected
    weights = {n for n in names if n.startswith("elan_video/weights/") and n.endswith(".safetensors")}
    assert len(weights) >= 3 and "elan_video/py.typed" in names
    # Guard: a subpackage missing from pyproject's list would leave its modules out, and this comparison sees it.
    assert any(n.startswith("elan_video/jobs/") for n in expected) and any(n.startswith("vselan/") for n in expected)
