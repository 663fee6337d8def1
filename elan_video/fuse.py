"""Exact inference rewrites of ELAN: BatchNorm folded, shifts as slicing, channels-last linear layers.

The fused module computes the same function as :class:`elan_video.arch.ELAN` (up to float rounding):

* BatchNorm (eval statistics) is folded into the preceding 1x1 convolution;
* the fixed depthwise "shift" convolution becomes five strided copies (the depthwise conv is the slowest
  operation of the authors' network on a CPU);
* features stay in (N, H, W, C) layout so every 1x1 convolution is one matmul (AMX/tensor cores in bf16)
  and window partitioning is a reshape;
* attention is computed once per ELAB and reused by the shared modules, with the logits formed in
  float32 where the compute dtype is fp16 (the network has no 1/sqrt(d) scaling, so q q^T overflows fp16).

Head and tail convolutions, the mean shifts and the long skip stay in float32 whatever the body dtype:
they are ~1 % of the work and carry the output's full 0..255 dynamic range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ELAN, GMSA, LFE, SHIFT_GROUPS, pad_to_multiple

__all__ = ["FusedELAN", "fuse"]


def shift_nhwc(x: torch.Tensor) -> torch.Tensor:
    """The authors' 5-group one-pixel shift (zero fill) on an (N, H, W, C) tensor, as strided copies."""
    g = x.shape[-1] // SHIFT_GROUPS
    out = torch.empty_like(x)
    out[:, :, :-1, 0:g] = x[:, :, 1:, 0:g]  # read the right neighbour
    out[:, :, -1:, 0:g] = 0
    out[:, :, 1:, g : 2 * g] = x[:, :, :-1, g : 2 * g]  # read the left neighbour
    out[:, :, :1, g : 2 * g] = 0
    out[:, :-1, :, 2 * g : 3 * g] = x[:, 1:, :, 2 * g : 3 * g]  # read the pixel below
    out[:, -1:, :, 2 * g : 3 * g] = 0
    out[:, 1:, :, 3 * g : 4 * g] = x[:, :-1, :, 3 * g : 4 * g]  # read the pixel above
    out[:, :1, :, 3 * g : 4 * g] = 0
    out[..., 4 * g :] = x[..., 4 * g :]
    return out


def _linear_from_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> nn.Linear:
    """A Linear equal to a 1x1 conv (optionally followed by eval-mode BatchNorm) on channels-last data."""
    weight = conv.weight.detach().flatten(1).double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.double)
    if bn is not None:
        gain = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = weight * gain[:, None]
        bias = (bias - bn.running_mean.double()) * gain + bn.bias.detach().double()
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight.float())
        linear.bias.copy_(bias.float())
    return linear


class _FusedLFE(nn.Module):
    def __init__(self, lfe: LFE) -> None:
        super().__init__()
        self.fc0 = _linear_from_conv(lfe.conv0.shift_conv.conv1x1)
        self.fc1 = _linear_from_conv(lfe.conv1.shift_conv.conv1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.fc0(shift_nhwc(x)))
        return self.fc1(shift_nhwc(y)) + x


def _partition(x: torch.Tensor, wsize: int) -> torch.Tensor:
    """(N, H, W, C) -> (N * H/w * W/w, w*w, C)."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // wsize, wsize, w // wsize, wsize, c)
    return x.transpose(2, 3).reshape(-1, wsize * wsize, c)


def _merge(y: torch.Tensor, wsize: int, n: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_partition`."""
    y = y.reshape(n, h // wsize, w // wsize, wsize, wsize, y.shape[-1])
    return y.transpose(2, 3).reshape(n, h, w, -1)


def _attention(q: torch.Tensor) -> torch.Tensor:
    """softmax(q q^T) over the last axis, unscaled as in the paper; logits in fp32 when q is fp16."""
    if q.dtype == torch.float16:
        logits = q.float() @ q.float().transpose(-2, -1)
        return logits.softmax(dim=-1).to(q.dtype)
    return (q @ q.transpose(-2, -1)).softmax(dim=-1)


class _FusedGMSA(nn.Module):
    def __init__(self, gmsa: GMSA) -> None:
        super().__init__()
        self.proj_in = _linear_from_conv(gmsa.project_inp[0], gmsa.project_inp[1])
        self.proj_out = _linear_from_conv(gmsa.project_out)
        self.window_sizes = gmsa.window_sizes
        self.shifted = gmsa.shifts > 0
        self.calc_attn = gmsa.calc_attn
        self.width = gmsa.split_chns[0]

    def forward(self, x: torch.Tensor, atns: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n, h, w, _ = x.shape
        t = self.proj_in(x)
        ys = []
        new_atns = []
        for idx, wsize in enumerate(self.window_sizes):
            part = t[..., idx * self.width : (idx + 1) * self.width]
            if self.shifted:
                part = torch.roll(part, shifts=(-wsize // 2, -wsize // 2), dims=(1, 2))
            tokens = _partition(part, wsize)
            if self.calc_attn:
                q, v = tokens.chunk(2, dim=-1)
                atn = _attention(q)
            else:
                atn, v = atns[idx], tokens
            y = _merge(torch.bmm(atn, v), wsize, n, h, w)
            if self.shifted:
                y = torch.roll(y, shifts=(wsize // 2, wsize // 2), dims=(1, 2))
            ys.append(y)
            new_atns.append(atn)
        return self.proj_out(torch.cat(ys, dim=-1)) + x, new_atns


class _FusedELAB(nn.Module):
    def __init__(self, lfes: list[LFE], gmsas: list[GMSA]) -> None:
        super().__init__()
        self.lfes = nn.ModuleList(_FusedLFE(m) for m in lfes)
        self.gmsas = nn.ModuleList(_FusedGMSA(m) for m in gmsas)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        atns: list[torch.Tensor] = []
        for lfe, gmsa in zip(self.lfes, self.gmsas, strict=True):
            x, atns = gmsa(lfe(x), atns)
        return x


class FusedELAN(nn.Module):
    """Inference form of :class:`ELAN`; same forward contract (N x 3 x H x W float, 0..255).

    ``dtype`` is the body's compute dtype (float32, bfloat16 or float16). Input and output are float32
    (other float inputs are converted); output is unclamped like the original network's.
    """

    def __init__(self, model: ELAN, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.scale = model.scale
        self.colors = model.colors
        self.window_sizes = model.window_sizes
        self.window_multiple = model.window_multiple
        self.dtype = dtype
        self.head = _clone_conv(model.head[0])
        self.tail = _clone_conv(model.tail[0])
        self.register_buffer("mean", model.add_mean.bias.detach().clone().view(1, -1, 1, 1))
        self.body = nn.ModuleList(
            _FusedELAB(list(b.modules_lfe.values()), list(b.modules_gmsa.values())) for b in model.body
        )
        self.body.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x = pad_to_multiple(x.float(), self.window_multiple) - self.mean
        x = self.head(x.contiguous(memory_format=torch.channels_last))
        skip = x.permute(0, 2, 3, 1)  # channels-last storage: a free view as (N, H, W, C)
        feat = skip.to(self.dtype)
        for block in self.body:
            feat = block(feat)
        feat = (feat.float() + skip).permute(0, 3, 1, 2)
        out = F.pixel_shuffle(self.tail(feat), self.scale) + self.mean
        return out[:, :, : h * self.scale, : w * self.scale]


def _clone_conv(conv: nn.Conv2d) -> nn.Conv2d:
    clone = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
    clone.load_state_dict(conv.state_dict())
    return clone.to(memory_format=torch.channels_last)


def fuse(model: ELAN, *, dtype: torch.dtype = torch.float32) -> FusedELAN:
    """Fold BatchNorm and rewrite ``model`` for fast inference (see module docstring).

    model: an :class:`ELAN` (its eval-mode BatchNorm statistics are used; the model is not modified).
    dtype: compute dtype of the body (torch.float32, torch.bfloat16 or torch.float16).
    Returns a :class:`FusedELAN` in eval mode on the model's device; move it with ``.to(device)``.
    """
    if not isinstance(model, ELAN):
        raise TypeError(f"fuse expects an elan_video.ELAN, got {type(model).__name__}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    device = model.head[0].weight.device
    return FusedELAN(model, dtype=dtype).to(device).eval()
