"""Load ELAN weights from files, state dicts or bundled names; infer the hyperparameters from shapes."""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import torch

from ..errors import CheckpointError
from .arch import ELAN

__all__ = ["BUNDLED", "infer_config", "load_model", "save_safetensors"]

BUNDLED = ("elan-light-x2", "elan-light-x3", "elan-light-x4")
_WRAPPERS = ("params_ema", "params", "state_dict", "model", "net", "generator")
_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_BODY_KEY = re.compile(r"body\.(\d+)\.modules_lfe\.lfe_(\d+)\.")
# Where torch's weights-only refusal says what it found in the file.
_UNPICKLER = "WeightsUnpickler error:"


def _unwrap(obj: object, name: str) -> dict[str, torch.Tensor]:
    """Peel training wrappers ({"params_ema": ...}, "module." prefixes) off a loaded object."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{name}: not an ELAN checkpoint (no state dict found)")
    state = {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            raise CheckpointError(f"{name}: not an ELAN checkpoint (entry {key!r} is not a tensor)")
        state[key.removeprefix("module.")] = value
    return state


def infer_config(state: Mapping[str, torch.Tensor], *, name: str = "state dict") -> dict[str, object]:
    """Hyperparameters of the ELAN that owns ``state``, read off tensor shapes and key names.

    scale from the tail conv, colors and c_elan from the head conv, n_share and the number of ELABs
    from the body keys, r_expand from the first LFE's expanding 1x1 conv. Window sizes are not stored
    in the weights; the caller supplies them (default (4, 8, 16)).
    """
    try:
        head = state["head.0.weight"]
        tail = state["tail.0.weight"]
        expand = state["body.0.modules_lfe.lfe_0.conv0.shift_conv.conv1x1.weight"]
    except KeyError as exc:
        raise CheckpointError(f"{name}: missing key {exc.args[0]!r}") from None
    c_elan, colors = int(head.shape[0]), int(head.shape[1])
    scale = round((tail.shape[0] / colors) ** 0.5)
    if scale * scale * colors != tail.shape[0]:
        raise CheckpointError(f"{name}: wrong shape for 'tail.0.weight': {tuple(tail.shape)}")
    blocks: set[int] = set()
    shares: set[int] = set()
    for key in state:
        match = _BODY_KEY.match(key)
        if match:
            blocks.add(int(match.group(1)))
            shares.add(int(match.group(2)))
    n_share = max(shares)
    return {
        "scale": scale,
        "colors": colors,
        "m_elan": (max(blocks) + 1) * (n_share + 1),
        "c_elan": c_elan,
        "n_share": n_share,
        "r_expand": int(expand.shape[0]) // c_elan,
    }


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Tensors and (for safetensors) the stored config from a checkpoint file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt or not a safetensors file ({exc})") from None
        config = json.loads(meta["config"]) if "config" in meta else {}
        return state, config
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or not a weights-only PyTorch checkpoint ({_reason(exc)})") from None
    config = obj.get("config", {}) if isinstance(obj, Mapping) else {}
    return _unwrap(obj, str(path)), dict(config) if isinstance(config, Mapping) else {}


def _bundled_path(name: str) -> Path:
    path = Path(str(resources.files("elan_video") / "weights" / f"{name}.safetensors"))
    if not path.is_file():
        raise CheckpointError(f"{name}: bundled weights are not installed ({path} missing)")
    return path


def _reason(exc: BaseException) -> str:
    """The cause in one line: for a weights-only refusal, the unpickler's own words (what it found) rather than
    torch's paragraph suggesting ``weights_only=False``, which would run whatever the file holds."""
    text = str(exc).strip()
    if _UNPICKLER in text:
        text = text.split(_UNPICKLER, 1)[1].strip().split(". ")[0]
    return text.splitlines()[0] if text else type(exc).__name__


def load_model(
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    window_sizes: tuple[int, int, int] | None = None,
) -> ELAN:
    """Build an :class:`ELAN` in eval mode from ``source``.

    source: a bundled name ("elan-light-x2" | "elan-light-x3" | "elan-light-x4"), a path to a
    .pth/.pt (loaded with ``weights_only=True``, never unpickling arbitrary objects) or .safetensors
    file, or a state dict. Wrappers such as {"params_ema": ...} and "module." prefixes are removed.
    Hyperparameters are inferred from tensor shapes; window sizes come from ``window_sizes``, the
    checkpoint's stored config, or the default (4, 8, 16).

    Raises CheckpointError naming the file and the first offending key on unknown or missing keys,
    wrong shapes, or an unreadable file. The returned model is on the CPU in float32.
    """
    stored: dict[str, object] = {}
    if isinstance(source, Mapping):
        name = "state dict"
        state = _unwrap(source, name)
    else:
        text = str(source)
        path = _bundled_path(text) if text in BUNDLED else Path(text)
        if text not in BUNDLED and not path.exists() and path.suffix not in _SUFFIXES:
            raise CheckpointError(f"{text}: not a checkpoint file or a bundled model ({', '.join(BUNDLED)})")
        name = str(path)
        state, stored = _read_file(path)
    config = infer_config(state, name=name)
    sizes = window_sizes or stored.get("window_sizes") or (4, 8, 16)
    model = ELAN(**config, window_sizes=tuple(int(s) for s in sizes))  # type: ignore[arg-type]
    expected = model.state_dict()
    for key, value in state.items():
        if key not in expected:
            raise CheckpointError(f"{name}: unexpected key {key!r}")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{name}: wrong shape for {key!r}: {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{name}: missing key {missing[0]!r}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def save_safetensors(model: ELAN, path: str | Path) -> None:
    """Write ``model``'s state dict (authors' keys, float32, BN running stats) with its config as metadata."""
    from safetensors.torch import save_file

    state = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(path), metadata={"config": json.dumps(model.config()), "format": "pt"})
