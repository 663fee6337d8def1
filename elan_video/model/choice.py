"""``backend="auto"``: the fastest way to run a model on this machine, measured once and remembered.

On a GPU that is the eager network (its precision chosen as ``precision="auto"`` does). On a CPU the candidates
are the eager network in fp32 and in each reduced precision this CPU runs fast, and each installed ONNX runtime
(:mod:`elan_video.model.runtimes`) in fp32 and its native precisions. Every candidate runs the same
:data:`PROBE_SIDE`-pixel square cut from the first picture; the fastest whose output stays within
:data:`MIN_PSNR_DB` of eager fp32 wins, a runtime only where it beats eager by more than :data:`RUNTIME_MARGIN`.
The choice is kept in ``choices.json`` in the cache folder, keyed by the CPU, the thread count, the library
versions and the network's configuration (speed does not depend on the weights' values), so later processes
and other weights of the same network skip the measurement (tens of seconds, plus an export per candidate
runtime); other weights only repeat the accuracy check of a remembered reduced precision. It is the command
line's default backend.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import torch

from ..errors import first_line
from .arch import ELAN
from .backends import MIN_PSNR_DB, build_backend, centre_crop, precision_candidates, psnr
from .export import weights_sha256
from .runtimes import RUNTIMES, cache_folder, runtime_precisions

__all__ = ["PROBE_SIDE", "RUNTIME_MARGIN", "candidates", "choose_backend", "cpu_identity", "probe_from"]

_REPEATS = 3
# The square every candidate is timed on. At 96 x 96 fixed costs dominate and eager, ONNX Runtime and OpenVINO
# timed within 20 % of each other on the AVX2 host, though at 320x180 eager was 1.3x-1.6x faster; from 160 x 160
# the order is that of video frames. A smaller picture is tiled up to it, so the size is the same for every source.
PROBE_SIDE = 160
# A runtime must beat the eager network by more than this share of eager's time: nearer than that the order flips
# with a shared machine's noise, and eager needs no export for the next weights.
RUNTIME_MARGIN = 0.05


def _installed(runtime: str) -> bool:
    try:
        metadata.version(runtime)
    except metadata.PackageNotFoundError:
        return False
    return True


# Instruction sets that change which candidate wins. A cloud VM keeps its CPU's model name when it moves to a host
# with other extensions (an "AMD EPYC" here has shown AVX2 only and AVX-512-BF16 on different days), and a choice
# of bf16 made where bf16 is native runs an order of magnitude slower where it is emulated.
_SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
                "amx_bf16", "amx_tile")  # fmt: skip


def cpu_identity(cpuinfo: str) -> str:
    """The CPU as far as speed goes: the first processor's model name and its speed-relevant flags.

    cpuinfo: the text of ``/proc/cpuinfo`` (empty where there is none).
    """
    name, flags = "", set()
    for line in cpuinfo.splitlines():
        field, _, value = line.partition(":")
        field = field.strip()
        if field == "model name" and not name:
            name = value.strip()
        elif field == "flags" and not flags:
            flags = set(value.split())
    if not name:
        import platform

        name = platform.processor() or platform.machine()
    return " ".join([name, *(flag for flag in _SPEED_FLAGS if flag in flags)])


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _key(model: ELAN, precision: str, *, weights: str | None = None) -> str:
    versions = {name: _version(name) for name in ("torch", *RUNTIMES)}
    fields: dict[str, object] = {
        "cpu": cpu_identity(_cpuinfo()),
        "threads": torch.get_num_threads(),
        "versions": versions,
        "config": model.config(),
        "precision": precision,
        "probe": PROBE_SIDE,
    }
    if weights is not None:  # weights (their hash) that failed the network's remembered choice get their own
        fields["weights"] = weights
    return json.dumps(fields, sort_keys=True)


def probe_from(frame: torch.Tensor) -> torch.Tensor:
    """The :data:`PROBE_SIDE` square every candidate runs: the centre of ``frame`` (N x 3 x H x W float, 0..255),
    tiled where the frame is smaller. Returns float32 1 x 3 x PROBE_SIDE x PROBE_SIDE."""
    crop = centre_crop(frame, PROBE_SIDE).float()
    repeats = (1, 1, -(-PROBE_SIDE // crop.shape[2]), -(-PROBE_SIDE // crop.shape[3]))
    return crop.repeat(*repeats)[:, :, :PROBE_SIDE, :PROBE_SIDE].contiguous()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def candidates(precision: str) -> list[tuple[str, str]]:
    """(backend, precision) pairs worth timing on this CPU for a requested ``precision`` ("auto" or a name)."""
    cpu = torch.device("cpu")
    pairs = [("eager", p) for p in ("fp32", *precision_candidates(cpu))]
    for runtime in RUNTIMES:
        if _installed(runtime):
            pairs += [(runtime, p) for p in ("fp32", *runtime_precisions(runtime))]
    return pairs if precision == "auto" else [(b, p) for b, p in pairs if p == precision]


def _seconds(run: Callable[[], object]) -> float:
    run()  # warm-up: compiles, allocates
    times = []
    for _ in range(_REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _fp32_output(model: ELAN, probe: torch.Tensor) -> torch.Tensor:
    """What every candidate is checked against: the eager network in fp32 on ``probe``, clamped to 0..255."""
    reference = build_backend(model, backend="eager", precision="fp32", device=torch.device("cpu"), example=probe)
    with torch.inference_mode():
        return reference(probe).clamp(0, 255)


def _measure(model: ELAN, precision: str, probe: torch.Tensor, expected: torch.Tensor) -> dict[str, object]:
    cpu = torch.device("cpu")
    timings: dict[str, float | str] = {}
    best: tuple[float, str, str] | None = None
    for backend, name in candidates(precision):
        try:
            forward = build_backend(model, backend=backend, precision=name, device=cpu, example=probe)
            with torch.inference_mode():
                output = forward(probe).clamp(0, 255)
        except Exception as exc:  # a runtime nobody asked for by name must not end the job
            if backend == "eager":
                raise
            timings[f"{backend} {name}"] = f"failed: {first_line(exc)}"
            continue
        if psnr(output, expected) < MIN_PSNR_DB:
            continue
        with torch.inference_mode():
            seconds = _seconds(lambda forward=forward: forward(probe))
        timings[f"{backend} {name}"] = round(seconds * 1000, 2)
        handicap = seconds if backend == "eager" else seconds / (1 - RUNTIME_MARGIN)
        if best is None or handicap < best[0]:
            best = (handicap, backend, name)
    if best is None:  # a requested reduced precision that fails the check everywhere: fp32 eager, as "auto" does
        return {"backend": "eager", "precision": "fp32", "ms": timings}
    return {"backend": best[1], "precision": best[2], "ms": timings}


def _remembered(path: Path) -> dict[str, dict[str, object]]:
    """The choices kept in ``path``; a damaged file (a disk that filled up, a hand edit) is measured afresh."""
    try:
        known = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        print(f"elan-video: warning: {path} is not readable JSON; measuring again", file=sys.stderr, flush=True)
        return {}
    return known if isinstance(known, dict) else {}


def _complete(entry: object) -> bool:
    return isinstance(entry, dict) and {"backend", "precision"} <= entry.keys()


def _save(path: Path, known: dict[str, dict[str, object]]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(known, indent=1))
    partial.replace(path)


def _holds_for(
    entry: dict[str, object], model: ELAN, weights: str, probe: torch.Tensor, expected: Callable[[], torch.Tensor]
) -> bool:
    """Whether a choice measured with other weights of the same network keeps ``model`` within MIN_PSNR_DB of
    eager fp32 (checked once per ``weights``, the model's :func:`weights_sha256`, then remembered in ``entry``).
    fp32 always does. ``expected`` gives eager fp32's output on ``probe``."""
    checked = entry.get("checked")
    if not isinstance(checked, list):
        checked = entry["checked"] = []
    if entry["precision"] == "fp32" or weights in checked:
        return True
    backend, precision = str(entry["backend"]), str(entry["precision"])
    want = expected()
    try:
        chosen = build_backend(model, backend=backend, precision=precision, device=torch.device("cpu"), example=probe)
        with torch.inference_mode():
            holds = psnr(chosen(probe).clamp(0, 255), want) >= MIN_PSNR_DB
    except Exception:  # a runtime that fails here is for the measurement of these weights to rule out
        if backend == "eager":
            raise
        holds = False
    if holds:
        checked.append(weights)
    return holds


def choose_backend(model: ELAN, *, precision: str, frame: torch.Tensor) -> tuple[str, str]:
    """(backend, precision) to run ``model`` with on this CPU, from the remembered choice or measured now.

    precision: "auto" or a concrete name (then only backends offering it compete). frame: float 1 x 3 x H x W in
    0..255, any size: every candidate runs the same :data:`PROBE_SIDE` square of it (:func:`probe_from`).
    """
    from filelock import FileLock

    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "choices.json"
    probe = probe_from(frame)
    with FileLock(str(path) + ".lock"):
        known = _remembered(path)
        before = json.dumps(known, sort_keys=True)
        weights = weights_sha256(model)
        key = _key(model, precision)
        expected = functools.cache(lambda: _fp32_output(model, probe))  # built once, and only where needed
        if _complete(known.get(key)) and not _holds_for(known[key], model, weights, probe, expected):
            key = _key(model, precision, weights=weights)
        if not _complete(known.get(key)):
            timed = ", ".join(f"{backend} {name}" for backend, name in candidates(precision))
            print(
                f"elan-video: timing {timed} on this CPU (once per network; kept in {path})",
                file=sys.stderr,
                flush=True,
            )
            known[key] = {**_measure(model, precision, probe, expected()), "checked": [weights]}
        if json.dumps(known, sort_keys=True) != before:
            _save(path, known)
    choice = known[key]
    return str(choice["backend"]), str(choice["precision"])
