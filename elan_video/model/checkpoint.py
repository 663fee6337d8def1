"""Load ELAN weights from files, state dicts or bundled names; infer the hyperparameters from shapes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

import torch

from ..errors import CheckpointError
from .arch import ELAN
from .options import SCALES

__all__ = ["BLENDED", "BUNDLED", "infer_config", "load_model", "provenance", "save_safetensors"]

# Bundled weights made when loaded, as (1 - alpha) x FIRST + alpha x SECOND tensor by tensor (network
# interpolation, Wang et al., CVPR 2019; both are fine-tunes of elan-light-x2, so they lie in one basin), rather
# than stored: name -> (first, second, alpha).
BLENDED: dict[str, tuple[str, str, float]] = {
    "elan-light-x2-video-medium": ("elan-light-x2-video", "elan-light-x2-video-strong", 0.5),
}
# Clean-bicubic weights, and codec-aware ones for each scale (trained on compressed LR; docs/weights.md): x2 also
# in a medium and a strong variant, for H.264 by how coarsely it was quantised.
BUNDLED = (
    "elan-light-x2",
    "elan-light-x3",
    "elan-light-x4",
    "elan-light-x2-video",
    "elan-light-x3-video",
    "elan-light-x4-video",
    "elan-light-x2-video-strong",
    *BLENDED,
)
# Searched in this order, so BasicSR's EMA weights win over its raw ones; "model_state_dict" is the authors' train.py.
_WRAPPERS = ("params_ema", "params", "model_state_dict", "state_dict", "model", "net", "generator")
_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_BODY_KEY = re.compile(r"body\.(\d+)\.modules_lfe\.lfe_(\d+)\.")
_EXPAND = "body.0.modules_lfe.lfe_0.conv0.shift_conv.conv1x1.weight"
# Where torch's weights-only refusal says what it found in the file.
_UNPICKLER = "WeightsUnpickler error:"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true must not pass as 1


# What each hyperparameter must be for ELAN to build and run: a test and its wording for the message.
_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "scale": (lambda v: _is_int(v) and v in SCALES, "must be 2, 3 or 4"),
    "colors": (lambda v: _is_int(v) and v == 3, "must be 3 (the mean shift is RGB)"),
    "m_elan": (lambda v: _is_int(v) and v > 0, "must be a positive integer"),
    "c_elan": (
        lambda v: _is_int(v) and v > 0 and v % 3 == 0,
        "must be a positive multiple of 3 (three attention groups)",
    ),
    "n_share": (lambda v: _is_int(v) and v >= 0, "must be a non-negative integer"),
    "r_expand": (lambda v: _is_int(v) and v > 0, "must be a positive integer"),
    "window_sizes": (
        lambda v: isinstance(v, list | tuple) and len(v) == 3 and all(_is_int(s) and s > 0 for s in v),
        "must be 3 positive integers",
    ),
}


def _violation(field: str, value: object) -> str | None:
    """The rule ``value`` breaks as the hyperparameter ``field``; None when it is fine or ``field`` is unknown."""
    rule = _RULES.get(field)
    return rule[1] if rule and not rule[0](value) else None


def _unwrap(obj: object, name: str) -> dict[str, torch.Tensor]:
    """Peel training wrappers ({"params_ema": ...}, "module." prefixes) off a loaded object."""
    # A state dict's values are tensors, so a wrapper key holding a mapping is never part of one; tensors beside it
    # (a reference input and output, say) do not make the outer dict a state dict.
    for _ in range(3):  # nested, e.g. {"state_dict": {"params_ema": ...}}
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name}: not an ELAN checkpoint (holds a {type(obj).__name__}, not a state dict)")
    if not obj:
        raise CheckpointError(f"{name}: not an ELAN checkpoint (empty state dict)")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            raise CheckpointError(f"{name}: not an ELAN checkpoint (entry {key!r} is not a tensor)")
        state[key.removeprefix("module.")] = value  # nn.DataParallel's prefix, as the authors' train.py saves it
    return state


def _conv_weight(state: Mapping[str, torch.Tensor], key: str, name: str) -> torch.Tensor:
    """The 4-d weight ``key``; the shapes are divided and indexed below, so a flat or empty one is refused here."""
    if key not in state:
        raise CheckpointError(f"{name}: missing key {key!r}")
    weight = state[key]
    if weight.ndim != 4 or 0 in weight.shape:
        raise CheckpointError(f"{name}: wrong shape for {key!r}: {tuple(weight.shape)}")
    return weight


def _read_off(weight: torch.Tensor, key: str, field: str, value: int, name: str) -> int:
    """``value``, the hyperparameter ``field`` read off the shape of ``key``, once it is one ELAN can have."""
    wording = _violation(field, value)
    if wording:
        raise CheckpointError(
            f"{name}: wrong shape for {key!r}: {tuple(weight.shape)} gives {field} {value}, which {wording}"
        )
    return value


def infer_config(state: Mapping[str, torch.Tensor], *, name: str = "state dict") -> dict[str, object]:
    """Hyperparameters of the ELAN that owns ``state``, read off tensor shapes and key names.

    scale from the tail conv, colors and c_elan from the head conv, n_share and the number of ELABs
    from the body keys, r_expand from the first LFE's expanding 1x1 conv. Window sizes are not stored
    in the weights; the caller supplies them (default (4, 8, 16)). Raises CheckpointError naming the
    tensor when a key is missing or a shape gives a network ELAN cannot be (x5, c_elan not a multiple of 3).
    """
    head = _conv_weight(state, "head.0.weight", name)
    tail = _conv_weight(state, "tail.0.weight", name)
    expand = _conv_weight(state, _EXPAND, name)
    # colors first: the tail's rows are colors x scale^2.
    colors = _read_off(head, "head.0.weight", "colors", int(head.shape[1]), name)
    c_elan = _read_off(head, "head.0.weight", "c_elan", int(head.shape[0]), name)
    scale = round((tail.shape[0] / colors) ** 0.5)
    if scale * scale * colors != tail.shape[0]:
        raise CheckpointError(f"{name}: wrong shape for 'tail.0.weight': {tuple(tail.shape)}")
    _read_off(tail, "tail.0.weight", "scale", scale, name)
    r_expand = _read_off(expand, _EXPAND, "r_expand", int(expand.shape[0]) // c_elan, name)
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
        "r_expand": r_expand,
    }


def _check_stored(stored: Mapping[str, object], inferred: Mapping[str, object], name: str) -> None:
    """Refuse a stored config whose fields are of the wrong type or impossible, or disagree with the tensors."""
    for field, value in stored.items():
        wording = _violation(field, value)
        if wording:
            raise CheckpointError(f"{name}: config field {field!r} {wording}, got {value!r}")
    for field, actual in inferred.items():
        if field in stored and stored[field] != actual:
            raise CheckpointError(f"{name}: config field {field!r} is {stored[field]!r}, the tensors give {actual!r}")


def _json_config(text: str | None, name: str) -> dict[str, object]:
    """The ``config`` metadata of a safetensors file, parsed; {} when there is none."""
    if text is None:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{name}: metadata 'config' is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{name}: metadata 'config' is not a JSON object, got {type(config).__name__}")
    return config


def _pt_config(obj: object, name: str) -> dict[str, object]:
    """The ``config`` entry of a loaded .pt (this project's training checkpoints store one); {} when absent."""
    config = obj.get("config", {}) if isinstance(obj, Mapping) else {}
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{name}: entry 'config' is a {type(config).__name__}, not a mapping")
    return dict(config)


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Tensors and the stored config (a safetensors file's metadata, a .pt's "config" entry) from a checkpoint file."""
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
        return state, _json_config(meta.get("config"), str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # A damaged pickle fails however its bytes lead the unpickler (UnpicklingError, EOFError, a KeyError from the
        # memo, an AssertionError on a storage key, BadZipFile, OSError...): each means the file cannot be read.
        raise CheckpointError(f"{path}: corrupt or not a weights-only PyTorch checkpoint ({_reason(exc)})") from None
    return _unwrap(obj, str(path)), _pt_config(obj, str(path))


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
    elif text:
        text = f"{type(exc).__name__}: {text}"  # the type too: a damaged pickle's KeyError says only "116"
    return text.splitlines()[0] if text else type(exc).__name__


def load_model(
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    window_sizes: tuple[int, int, int] | None = None,
) -> ELAN:
    """Build an :class:`ELAN` in eval mode from ``source``.

    source: a bundled name (see :data:`BUNDLED`: "elan-light-x2", ..., "elan-light-x2-video"; those in
    :data:`BLENDED` are interpolated from two bundled files as they load), a path to a
    .pth/.pt (loaded with ``weights_only=True``, never unpickling arbitrary objects) or .safetensors
    file, or a state dict. Training wrappers are removed: BasicSR's {"params_ema"|"params": ...} (EMA
    preferred), the authors' train.py's {"model_state_dict": ..., "optimizer_state_dict": ...},
    {"state_dict"|"model": ...}, and nn.DataParallel's "module." prefixes.
    Hyperparameters are inferred from tensor shapes; window sizes come from ``window_sizes``, the
    checkpoint's stored config, or the default (4, 8, 16).

    Raises CheckpointError, one line naming the file and the first offending key or config field, on
    unknown or missing keys, wrong shapes, an unreadable file, or a stored config that is not JSON, has
    a field of the wrong type or an impossible value, or disagrees with the tensors. The returned model
    is on the CPU in float32.
    """
    if isinstance(source, str) and source in BLENDED:
        return _blended(source, window_sizes=window_sizes)
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
    _check_stored(stored, config, name)
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


def _blended(name: str, *, window_sizes: tuple[int, int, int] | None) -> ELAN:
    first, second, alpha = BLENDED[name]
    model = load_model(first, window_sizes=window_sizes)
    theirs = load_model(second, window_sizes=window_sizes).state_dict()
    mine = model.state_dict()
    model.load_state_dict({k: torch.lerp(v, theirs[k], alpha) if v.is_floating_point() else v for k, v in mine.items()})
    return model


def save_safetensors(
    model: ELAN, path: str | Path, *, metadata: Mapping[str, str] | None = None, half: bool = False
) -> None:
    """Write ``model``'s state dict (authors' keys, BN running stats) with its config as metadata.

    metadata: more string entries for the file's header (e.g. "degradation", the training LR's recipe as JSON);
    "config" and "format" are this function's own.
    half: store the weights as float16, half the file (how the bundled weights are shipped: the network's output
    moves by at most one level, about 71 dB, and Set5 scores by under 0.001 dB); the BatchNorm running
    statistics stay float32, as a variance can fall below float16's normal range. Else float32 throughout.
    Loading always gives a float32 model.
    """
    from safetensors.torch import save

    def stored(name: str, value: torch.Tensor) -> torch.Tensor:
        if not value.is_floating_point():
            return value.detach().contiguous()
        small = half and not name.rsplit(".", 1)[-1].startswith("running_")
        return value.detach().to(torch.float16 if small else torch.float32).contiguous()

    state = {k: stored(k, v) for k, v in model.state_dict().items()}
    header = {**(metadata or {}), "config": json.dumps(model.config()), "format": "pt"}
    # Written by Python rather than safetensors' save_file, which creates the file readable by its owner only.
    Path(path).write_bytes(save(state, metadata=header))


def provenance(source: str | Path) -> dict[str, str]:
    """The header entries of a safetensors file or bundled weights besides its configuration (the training
    degradation, a blend...), for a copy to keep; {} for other sources."""
    text = str(source)
    if text in BLENDED:
        first, second, alpha = BLENDED[text]
        return {**provenance(second), "blend": json.dumps({"first": first, "second": second, "alpha": alpha})}
    path = _bundled_path(text) if text in BUNDLED else Path(text)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({exc})") from None
    return {k: v for k, v in meta.items() if k not in ("config", "format")}
