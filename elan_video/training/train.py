"""Train ELAN on random HR crops with the MATLAB bicubic degradation; exact resume; safetensors export.

One step: draw ``batch`` random (LR, HR) patches (:class:`elan_video.training.data.PatchSampler`), L1 loss on the
0..255 scale (with an ``anchor``, plus the L1 distance to the anchor network's output on ``batch`` clean bicubic
patches, so that a fine-tune on degraded LR keeps what the anchor does with clean LR), Adam, learning rate from
a cosine or step schedule (with linear warm-up), then an update of the exponential moving average (EMA) of the
weights. BatchNorm layers train in train mode (batch statistics, running statistics updated); the EMA model
copies the running statistics, and it is the EMA model that is validated and exported.

Checkpoints hold everything a run depends on (weights, EMA, optimizer, scheduler, step, the random states
of torch and of the patch sampler), so N steps in one go and N/2 + resume + N/2 give identical weights.
The file is also a weights file: :func:`elan_video.load_model` on it returns the EMA model ("params_ema").
"""

from __future__ import annotations

import copy
import functools
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, OptionError
from ..model.arch import ELAN, SHIFT_GROUPS, pad_to_multiple
from ..model.backends import precision_candidates
from ..model.checkpoint import load_model, save_safetensors
from .data import DEGRADATIONS, PatchSampler
from .degrade import VideoDegradation, VideoPatchSampler

__all__ = ["SCHEDULES", "StepInfo", "TrainingForward", "export_checkpoint", "load_checkpoint", "train"]

SCHEDULES = ("cosine", "step")
DEFAULT_LR = 5e-4
PRECISIONS = ("fp32", "bf16")


def shift_nchw(x: torch.Tensor) -> torch.Tensor:
    """The authors' 5-group one-pixel shift of (N, C, H, W) with zero fill, as slices instead of a depthwise conv.

    Same result as ``arch.shift_kernel``'s depthwise 3x3 convolution: group 0 reads its right neighbour,
    1 its left, 2 the pixel below, 3 the pixel above, the rest passes through.
    """
    g = x.shape[1] // SHIFT_GROUPS
    return torch.cat(
        [
            F.pad(x[:, 0:g, :, 1:], (0, 1)),
            F.pad(x[:, g : 2 * g, :, :-1], (1, 0)),
            F.pad(x[:, 2 * g : 3 * g, 1:, :], (0, 0, 0, 1)),
            F.pad(x[:, 3 * g : 4 * g, :-1, :], (0, 0, 1, 0)),
            x[:, 4 * g :],
        ],
        dim=1,
    )


class TrainingForward(nn.Module):
    """ELAN's forward on the same modules (and so the same parameters, keys and BatchNorm statistics) with
    the shift done by slicing: no depthwise convolution in the forward or backward pass.

    forward: float32 (N, 3, H, W) in 0..255 -> (N, 3, sH, sW), equal to ``net(x)`` up to float rounding in
    train and eval mode. Only ``net`` holds state; saving ``net.state_dict()`` gives the authors' keys.
    """

    def __init__(self, net: ELAN) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        h, w = x.shape[2:]
        x = pad_to_multiple(x, net.window_multiple)
        x = net.head(net.sub_mean(x))
        skip = x
        for elab in net.body:
            atn = None
            for lfe, gmsa in zip(elab.modules_lfe.values(), elab.modules_gmsa.values(), strict=True):
                y = F.relu(lfe.conv0.shift_conv.conv1x1(shift_nchw(x)))
                x = lfe.conv1.shift_conv.conv1x1(shift_nchw(y)) + x
                y, atn = gmsa(x, atn)
                x = y + x
        x = net.tail(x + skip)
        return net.add_mean(x)[:, :, : h * net.scale, : w * net.scale]


@dataclass(frozen=True)
class StepInfo:
    """Progress after one optimisation step: step (1-based), L1 loss on the 0..255 scale, learning rate."""

    step: int
    loss: float
    lr: float


def _lr_factor(step: int, *, steps: int, schedule: str, warmup: int, milestones: Sequence[int], gamma: float) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return gamma ** sum(step >= m for m in milestones)


def _update_ema(ema: ELAN, model: ELAN, *, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for trainable weights; buffers (BN statistics) are copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            if p.requires_grad:
                e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def _init_from(model: ELAN, source: str | Path) -> list[str]:
    """Copy every same-shaped tensor of ``source`` into ``model`` (x3/x4 may start from an x2 body).

    Returns the keys that were not copied (absent or of another shape, e.g. the tail at another scale).
    """
    state = load_model(source).state_dict()
    own = model.state_dict()
    skipped = [k for k, v in own.items() if k not in state or state[k].shape != v.shape]
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in skipped}, strict=False)
    return skipped


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`train` (weights-only unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is reported the same way
        raise CheckpointError(f"{path}: not a training checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "params_ema" not in ckpt or "step" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no params_ema/step)")
    return ckpt


def export_checkpoint(checkpoint: str | Path, path: str | Path) -> ELAN:
    """Write the EMA weights of a training checkpoint to ``path`` as safetensors (authors' keys, BN running
    statistics, config metadata); returns the exported model (eval mode, CPU, float32)."""
    ckpt = load_checkpoint(checkpoint)
    model = ELAN(**ckpt["config"])
    model.load_state_dict(ckpt["params_ema"])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    options = ckpt.get("options", {})
    metadata = export_metadata(
        options.get("degrade", "patch"),
        options.get("video"),
        anchor=options.get("anchor"),
        anchor_weight=options.get("anchor_weight", 1.0),
    )
    save_safetensors(model.eval(), path, metadata=metadata)
    return model


def _sampler(
    data_dirs: Sequence[str | Path],
    *,
    scale: int,
    patch: int,
    seed: int,
    degrade: str,
    batch: int,
    recipe: VideoDegradation | None = None,
) -> PatchSampler | VideoPatchSampler:
    """The training pairs of ``degrade``: "patch"/"image" (clean bicubic) or "video" (codec-degraded LR)."""
    if degrade == "video":  # a pool lasts 32 steps (16 batches, each pair drawn twice)
        return VideoPatchSampler(
            data_dirs, scale=scale, patch=patch, seed=seed, recipe=recipe, pool=16 * batch, reuse=2
        )
    if degrade not in DEGRADATIONS:
        raise OptionError(f"degrade must be one of {', '.join((*DEGRADATIONS, 'video'))}, got {degrade!r}")
    return PatchSampler(data_dirs, scale=scale, patch=patch, seed=seed, degrade=degrade)


def video_recipe(video: Mapping[str, Any] | None) -> VideoDegradation:
    """The "video" degradation with ``video``'s fields (a recipe's [video] table) over the defaults."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(video or {}).items()}
    known = set(VideoDegradation.__dataclass_fields__)
    if set(fields) - known:
        raise OptionError(f"video has unknown fields {sorted(set(fields) - known)} (known: {', '.join(sorted(known))})")
    return VideoDegradation(**fields)


def export_metadata(
    degrade: str, video: Mapping[str, Any] | None = None, *, anchor: str | None = None, anchor_weight: float = 1.0
) -> dict[str, str]:
    """The safetensors header entries that record how a run's LR was made (the "degradation" recipe, JSON) and,
    for an anchored run, what kept it near which weights ("anchor", JSON)."""
    import json

    recipe: dict[str, object] = {"kind": degrade}
    if degrade == "video":
        recipe |= video_recipe(video).to_dict()
    else:
        recipe["resize"] = "MATLAB bicubic"
    entries = {"degradation": json.dumps(recipe)}
    if anchor is not None:
        entries["anchor"] = json.dumps({"weights": anchor, "weight": anchor_weight, "loss": "L1 on clean bicubic LR"})
    return entries


def _name(weights: str | Path | None) -> str | None:
    return None if weights is None else str(weights)


def _atomic_save(obj: object, path: Path) -> None:
    # Write then rename, so an interrupted save never destroys the previous checkpoint.
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _check_options(
    *,
    scale: int,
    schedule: str,
    precision: str,
    counts: Mapping[str, int],
    lr: float | None,
    ema_decay: float,
    stop_at: int | None,
    resume: bool,
    init: str | Path | None,
    anchor_weight: float,
) -> None:
    """Validate :func:`train`'s options (raises OptionError); ``counts`` must each be at least 1."""
    if scale not in (2, 3, 4):
        raise OptionError(f"scale must be 2, 3 or 4, got {scale}")
    if schedule not in SCHEDULES:
        raise OptionError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for name, value in counts.items():
        if value < 1:
            raise OptionError(f"{name} must be at least 1, got {value}")
    if lr is not None and not lr > 0.0:
        raise OptionError(f"lr must be positive, got {lr}")
    if not 0.0 <= ema_decay < 1.0:
        raise OptionError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if stop_at is not None and stop_at < 1:
        raise OptionError(f"stop_at must be at least 1, got {stop_at}")
    if resume and init is not None:
        raise OptionError("init and resume are exclusive: resume continues the run stored in out")
    if not anchor_weight > 0.0:
        raise OptionError(f"anchor_weight must be positive, got {anchor_weight}")


def _run_config(
    ckpt: Mapping[str, Any] | None,
    out: Path,
    *,
    scale: int,
    arch: Mapping[str, Any] | None,
    same: Mapping[str, object],
) -> dict[str, Any]:
    """The network configuration of the run: the resumed checkpoint's, whose scale and ``same`` options (batch,
    patch, seed, degrade) must match this call's, or ELAN-light updated with ``arch``."""
    if ckpt is None:
        config = {"m_elan": 24, "c_elan": 60, "n_share": 1, "r_expand": 2, "window_sizes": (4, 8, 16)}
        return config | dict(arch or {}) | {"scale": scale}
    config = dict(ckpt["config"])
    if config["scale"] != scale:
        raise OptionError(f"scale {scale} does not match the checkpoint {out}, which trains x{config['scale']}")
    # Runs stored before "degrade" existed degraded patches; before "anchor", none had one.
    stored = {"degrade": "patch", "anchor": None} | ckpt["options"]
    for name, value in same.items():
        if stored[name] != value:
            raise OptionError(f"{name} {value} differs from the resumed run's {stored[name]} ({out})")
    return config


def _restore(
    ckpt: Mapping[str, Any],
    *,
    model: ELAN,
    ema: ELAN,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    sampler: PatchSampler | VideoPatchSampler,
    anchor: _Anchor | None,
) -> int:
    """Load a checkpoint's weights, EMA, optimizer, scheduler and random states; returns its step."""
    model.load_state_dict(ckpt["params"])
    ema.load_state_dict(ckpt["params_ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    sampler.load_state(ckpt["rng"]["sampler"])
    if anchor is not None:
        anchor.sampler.load_state(ckpt["rng"]["anchor_sampler"])
    return int(ckpt["step"])


class _Anchor:
    """The clean patches of an anchored run and the anchor network's outputs on them (see :func:`train`)."""

    def __init__(
        self,
        source: str | Path,
        data_dirs: Sequence[str | Path],
        *,
        scale: int,
        patch: int,
        seed: int,
        dev: torch.device,
    ) -> None:
        net = load_model(source)
        if net.scale != scale:
            raise OptionError(f"anchor {source} upscales x{net.scale}, not x{scale}")
        self.forward = TrainingForward(net.to(dev).eval())
        # Its own random stream: the degraded pairs are drawn as in an unanchored run with the same seed.
        self.sampler = PatchSampler(data_dirs, scale=scale, patch=patch, seed=seed + 1, degrade="patch")

    def sample(self, batch: int, dev: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` clean LR patches (float, 0..255) and the anchor's outputs on them."""
        lr, _ = self.sampler.sample_uint8(batch)
        lr = lr.to(dev).float().contiguous()
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return lr, self.forward(lr).float()


def train(
    data_dirs: Sequence[str | Path],
    *,
    scale: int,
    out: str | Path,
    steps: int,
    stop_at: int | None = None,
    init: str | Path | None = None,
    resume: bool = False,
    arch: Mapping[str, Any] | None = None,
    batch: int = 16,
    patch: int = 48,
    degrade: str = "patch",
    video: Mapping[str, Any] | None = None,
    lr: float | None = None,
    schedule: str = "cosine",
    warmup: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.5,
    ema_decay: float = 0.999,
    val_dir: str | Path | None = None,
    val_every: int = 1000,
    save_every: int = 500,
    seed: int = 0,
    device: str | None = None,
    precision: str = "fp32",
    fast_shift: bool = False,
    export: str | Path | None = None,
    anchor: str | Path | None = None,
    anchor_weight: float = 1.0,
    on_step: Callable[[StepInfo], None] | None = None,
    on_validate: Callable[[int, Any], None] | None = None,
) -> ELAN:
    """Train an ELAN for ``scale`` on random crops of the images in ``data_dirs``; returns the EMA model.

    out: the training checkpoint (written every ``save_every`` steps and at the end). steps: length of the
    run (the schedule's horizon). stop_at: end this call after that step (checkpoint written, no export)
    so a long run can span sessions. resume: continue from ``out`` (the random state, weights, optimizer and
    schedule are restored; data, batch, patch, degrade and seed must be those of the stored run). init: weights
    to start from (checkpoint, safetensors or bundled name; tensors of another shape, such as an x2 tail
    for x3, are left at their initial values). arch: ELAN keyword arguments (default ELAN-light).
    batch, patch: samples per step and LR patch side in pixels (HR side patch * scale). degrade: "patch"
    (bicubic of each HR crop), "image" (crops of each whole image's bicubic; no resize per step, see
    :class:`elan_video.training.data.PatchSampler`) or "video" (bicubic, then blur/noise and x264 or JPEG
    coding of short pans, see :class:`elan_video.training.degrade.VideoPatchSampler`). video: fields of
    :class:`elan_video.training.degrade.VideoDegradation` to change for degrade="video" (e.g. p_clean).
    lr: Adam's base learning rate (default 5e-4; on resume, the stored run's unless given, so a resumed
    run can be given a new base rate, schedule or milestones from its current step on).
    schedule: "cosine" (to 0 at ``steps``) or "step" (x ``gamma`` at each of ``milestones``), after
    ``warmup`` linear warm-up steps. val_dir: a benchmark folder scored (PSNR/SSIM of the EMA model) every
    ``val_every`` steps and at the end; results go to ``on_validate(step, EvalResult)``.
    device: "cpu", "cuda", "cuda:N" (default: CUDA if available). precision: "fp32", or "bf16" autocast
    (fast only with bf16 matmul hardware: AMX, AVX-512-BF16 or a GPU; a RuntimeWarning says so where this CPU's
    bf16 matmul measures slower than fp32). fast_shift: train through
    :class:`TrainingForward` (bit-identical function, slicing instead of the depthwise shift conv).
    export: also write the final EMA weights there as safetensors once ``steps`` is reached.
    anchor: weights (x``scale``) whose outputs on clean LR the run keeps, for fine-tunes on degraded LR
    (learning without forgetting): each step also runs the model on ``batch`` clean bicubic patches (their own
    random stream, seed + 1) and adds ``anchor_weight`` x the L1 distance to the anchor's outputs to the loss.
    """
    _check_options(
        scale=scale,
        schedule=schedule,
        precision=precision,
        counts={"steps": steps, "batch": batch, "val_every": val_every, "save_every": save_every},
        lr=lr,
        ema_decay=ema_decay,
        stop_at=stop_at,
        resume=resume,
        init=init,
        anchor_weight=anchor_weight,
    )
    out = Path(out)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu" and precision == "bf16" and "bf16" not in precision_candidates(dev):
        warnings.warn(
            "bf16 is emulated on this CPU (its bf16 matmul measures slower than fp32: no AVX-512-BF16 or AMX), "
            "so training in bf16 runs several times slower than with precision fp32",
            RuntimeWarning,
            stacklevel=2,
        )

    ckpt = load_checkpoint(out) if resume else None
    config = _run_config(
        ckpt,
        out,
        scale=scale,
        arch=arch,
        same={"batch": batch, "patch": patch, "seed": seed, "degrade": degrade, "anchor": _name(anchor)},
    )
    recipe = video_recipe(video) if degrade == "video" else None
    # After the resume checks: with degrade="image" the sampler resizes every image up front.
    sampler = _sampler(data_dirs, scale=scale, patch=patch, seed=seed, degrade=degrade, batch=batch, recipe=recipe)
    anchored = None
    if anchor is not None:
        anchored = _Anchor(anchor, data_dirs, scale=scale, patch=patch, seed=seed, dev=dev)
    torch.manual_seed(seed)  # the initial weights are part of the run's reproducible state
    model = ELAN(**config)
    if init is not None:
        _init_from(model, init)
    ema = copy.deepcopy(model)
    model.to(dev).train()
    ema.to(dev).eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=DEFAULT_LR if lr is None else lr)
    lr_factor = functools.partial(
        _lr_factor, steps=steps, schedule=schedule, warmup=warmup, milestones=milestones, gamma=gamma
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    step = 0
    if ckpt is not None:
        step = _restore(
            ckpt, model=model, ema=ema, optimizer=optimizer, scheduler=scheduler, sampler=sampler, anchor=anchored
        )
        if lr is not None:
            scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        # The stored lr was computed by the stored schedule; this call's schedule rules from here on.
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base * lr_factor(step)
    forward: nn.Module = TrainingForward(model) if fast_shift else model
    options = {
        "data": [str(d) for d in data_dirs],
        "batch": batch,
        "patch": patch,
        "degrade": degrade,
        "video": recipe.to_dict() if recipe is not None else None,
        "lr": scheduler.base_lrs[0],
        "schedule": schedule,
        "warmup": warmup,
        "milestones": list(milestones),
        "gamma": gamma,
        "ema_decay": ema_decay,
        "seed": seed,
        "steps": steps,
        "precision": precision,
        "anchor": _name(anchor),
        "anchor_weight": anchor_weight,
    }

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "params": model.state_dict(),
                "params_ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "rng": {"torch": torch.get_rng_state(), "sampler": sampler.state()}
                | ({} if anchored is None else {"anchor_sampler": anchored.sampler.state()}),
                "config": model.config(),
                "options": options,
            },
            out,
        )

    def validate() -> None:
        if val_dir is None:
            return
        from .evaluate import evaluate

        result = evaluate(ema, val_dir, scale=scale, device=str(dev))
        ema.to(dev).eval()
        if on_validate is not None:
            on_validate(step, result)

    end = steps if stop_at is None else min(steps, stop_at)
    while step < end:
        lr_batch, hr_batch = (t.to(dev).float().contiguous() for t in sampler.sample_uint8(batch))
        target = None
        if anchored is not None:
            clean, target = anchored.sample(batch, dev, precision)
            lr_batch = torch.cat([lr_batch, clean])  # one pass: BatchNorm sees both kinds of input
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            sr = forward(lr_batch).float()
        loss = F.l1_loss(sr[:batch], hr_batch)
        if target is not None:
            loss = loss + anchor_weight * F.l1_loss(sr[batch:], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        # Warm the average up so short runs are not dominated by the random initial weights.
        _update_ema(ema, model, decay=min(ema_decay, (1 + step) / (10 + step)))
        if on_step is not None:
            on_step(StepInfo(step=step, loss=float(loss.detach()), lr=optimizer.param_groups[0]["lr"]))
        if step % save_every == 0 or step == end:
            save()
        if step % val_every == 0 and step != end:
            validate()
    validate()
    if export is not None and step >= steps:
        Path(export).parent.mkdir(parents=True, exist_ok=True)
        metadata = export_metadata(degrade, video, anchor=_name(anchor), anchor_weight=anchor_weight)
        save_safetensors(copy.deepcopy(ema).cpu().eval(), export, metadata=metadata)
    return ema.cpu().eval()
