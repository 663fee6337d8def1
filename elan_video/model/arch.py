"""The ELAN network (Zhang et al., ECCV 2022), operation for operation as the authors wrote it.

This module is the reference definition: its state-dict keys equal the authors' and its forward pass
performs the same operations in the same order (including the shift as a fixed depthwise 3x3
convolution). Fast inference rewrites live in :mod:`elan_video.model.fusion`; this file stays faithful so that
checkpoints and training behave exactly like the published code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ELAN", "ELAB", "GMSA", "LFE", "MeanShift", "ShiftConv2d", "DIV2K_MEAN", "pad_to_multiple"]

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
SHIFT_GROUPS = 5


class MeanShift(nn.Conv2d):
    """Fixed 1x1 conv that subtracts (sign=-1) or adds (sign=+1) the DIV2K mean at ``rgb_range``."""

    def __init__(self, rgb_range: float, *, sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(DIV2K_MEAN))
        for p in self.parameters():
            p.requires_grad = False


def shift_kernel(channels: int) -> torch.Tensor:
    """Depthwise 3x3 kernel (channels x 1 x 3 x 3) moving 4 of 5 channel groups by one pixel.

    Group 0 reads its right neighbour, 1 its left, 2 the pixel below, 3 the pixel above; the rest
    (including the remainder when channels is not a multiple of 5) is passed through.
    """
    g = channels // SHIFT_GROUPS
    k = torch.zeros(channels, 1, 3, 3)
    k[0 * g : 1 * g, 0, 1, 2] = 1.0
    k[1 * g : 2 * g, 0, 1, 0] = 1.0
    k[2 * g : 3 * g, 0, 2, 1] = 1.0
    k[3 * g : 4 * g, 0, 0, 1] = 1.0
    k[4 * g :, 0, 1, 1] = 1.0
    return k


class _ShiftConvCore(nn.Module):
    """The authors' 'fast-training-speed' shift conv: fixed depthwise shift, then a 1x1 conv."""

    def __init__(self, inp_channels: int, out_channels: int) -> None:
        super().__init__()
        # A frozen Parameter (not a buffer) because that is how the authors' checkpoints store it.
        self.weight = nn.Parameter(shift_kernel(inp_channels), requires_grad=False)
        self.conv1x1 = nn.Conv2d(inp_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, None, 1, 1, 1, x.shape[1])
        return self.conv1x1(y)


class ShiftConv2d(nn.Module):
    """Shift-conv: 5-group one-pixel shift followed by a 1x1 conv (keys ``shift_conv.*``)."""

    def __init__(self, inp_channels: int, out_channels: int) -> None:
        super().__init__()
        self.shift_conv = _ShiftConvCore(inp_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift_conv(x)


class LFE(nn.Module):
    """Local feature extraction: shift-conv (C -> rC), ReLU, shift-conv (rC -> C)."""

    def __init__(self, channels: int, *, r_expand: int) -> None:
        super().__init__()
        self.conv0 = ShiftConv2d(channels, channels * r_expand)
        self.conv1 = ShiftConv2d(channels * r_expand, channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))


def window_partition(x: torch.Tensor, wsize: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * H/w * W/w, w*w, C); H and W must be multiples of ``wsize``."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // wsize, wsize, w // wsize, wsize)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, wsize * wsize, c)


def window_merge(y: torch.Tensor, wsize: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * H/w * W/w, w*w, C) -> (B, C, H, W)."""
    c = y.shape[-1]
    y = y.view(b, h // wsize, w // wsize, wsize, wsize, c)
    return y.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


class GMSA(nn.Module):
    """Group-wise multi-scale self-attention over non-overlapping windows (optionally cyclic-shifted).

    With ``calc_attn`` the input projection yields q and v for three channel groups (window sizes
    ``window_sizes``) and the attention softmax(q q^T) (no 1/sqrt(d) scaling) is returned for reuse;
    without it only v is projected and the previous module's attention is applied.
    """

    def __init__(self, channels: int, *, shifts: int, window_sizes: Sequence[int], calc_attn: bool) -> None:
        super().__init__()
        self.channels = channels
        self.shifts = shifts
        self.window_sizes = tuple(window_sizes)
        self.calc_attn = calc_attn
        width = channels * 2 if calc_attn else channels
        self.split_chns = [width // 3] * 3
        self.project_inp = nn.Sequential(nn.Conv2d(channels, width, kernel_size=1), nn.BatchNorm2d(width))
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(
        self, x: torch.Tensor, prev_atns: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, _, h, w = x.shape
        xs = torch.split(self.project_inp(x), self.split_chns, dim=1)
        ys = []
        atns = []
        for idx, x_ in enumerate(xs):
            wsize = self.window_sizes[idx]
            if self.shifts > 0:
                x_ = torch.roll(x_, shifts=(-wsize // 2, -wsize // 2), dims=(2, 3))
            tokens = window_partition(x_, wsize)
            if prev_atns is None:
                q, v = tokens.chunk(2, dim=-1)
                atn = (q @ q.transpose(-2, -1)).softmax(dim=-1)
            else:
                atn, v = prev_atns[idx], tokens
            y_ = window_merge(atn @ v, wsize, b, h, w)
            if self.shifts > 0:
                y_ = torch.roll(y_, shifts=(wsize // 2, wsize // 2), dims=(2, 3))
            ys.append(y_)
            atns.append(atn)
        return self.project_out(torch.cat(ys, dim=1)), atns


class ELAB(nn.Module):
    """Efficient long-range attention block: (1 + n_share) x [LFE + residual, GMSA + residual]."""

    def __init__(self, channels: int, *, r_expand: int, shifts: int, window_sizes: Sequence[int], n_share: int) -> None:
        super().__init__()
        self.n_share = n_share
        self.modules_lfe = nn.ModuleDict({f"lfe_{i}": LFE(channels, r_expand=r_expand) for i in range(n_share + 1)})
        self.modules_gmsa = nn.ModuleDict(
            {
                f"gmsa_{i}": GMSA(channels, shifts=shifts, window_sizes=window_sizes, calc_attn=i == 0)
                for i in range(n_share + 1)
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        atn = None
        for lfe, gmsa in zip(self.modules_lfe.values(), self.modules_gmsa.values(), strict=True):
            x = lfe(x) + x
            y, atn = gmsa(x, atn)
            x = y + x
        return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad (B, C, H, W) at the bottom/right so H and W become multiples of ``multiple``.

    Matches ``F.pad(x, ..., 'reflect')`` of the authors' code; inputs smaller than the padding (where
    one reflection is not enough) are reflected repeatedly instead of failing.
    """
    _, _, h, w = x.shape
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    while pad_h or pad_w:
        step_h = min(pad_h, x.shape[2] - 1)
        step_w = min(pad_w, x.shape[3] - 1)
        if step_h == 0 and step_w == 0:  # a 1-pixel edge cannot reflect; repeat it
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h -= step_h
        pad_w -= step_w
    return x


class ELAN(nn.Module):
    """ELAN super-resolution network with the authors' state-dict keys.

    Args (keyword-only): scale (upscaling factor), colors (input/output channels), m_elan (number of
    LFE+GMSA pairs; the body has m_elan // (1 + n_share) ELABs), c_elan (feature width), n_share (GMSA
    modules per ELAB reusing the first one's attention), r_expand (LFE expansion), window_sizes (three
    attention window sizes), rgb_range (value of white; the authors use 255).

    forward: float tensor N x colors x H x W, values in 0..rgb_range -> N x colors x sH x sW,
    unclamped, same dtype and device. Any H and W: the input is reflect-padded to a multiple of
    lcm(window_sizes) and the output cropped back.
    """

    def __init__(
        self,
        *,
        scale: int = 2,
        colors: int = 3,
        m_elan: int = 24,
        c_elan: int = 60,
        n_share: int = 1,
        r_expand: int = 2,
        window_sizes: Sequence[int] = (4, 8, 16),
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        if len(window_sizes) != 3:
            raise ValueError(f"window_sizes must have 3 entries, got {tuple(window_sizes)}")
        if c_elan % 3:
            raise ValueError(f"c_elan must be a multiple of 3 (three attention groups), got {c_elan}")
        self.scale = scale
        self.colors = colors
        self.m_elan = m_elan
        self.c_elan = c_elan
        self.n_share = n_share
        self.r_expand = r_expand
        self.window_sizes = tuple(int(s) for s in window_sizes)
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(nn.Conv2d(colors, c_elan, kernel_size=3, padding=1))
        self.body = nn.Sequential(
            *(
                ELAB(c_elan, r_expand=r_expand, shifts=i % 2, window_sizes=self.window_sizes, n_share=n_share)
                for i in range(m_elan // (1 + n_share))
            )
        )
        self.tail = nn.Sequential(
            nn.Conv2d(c_elan, colors * scale * scale, kernel_size=3, padding=1), nn.PixelShuffle(scale)
        )

    @property
    def window_multiple(self) -> int:
        """Least common multiple of the window sizes: the padded input size is a multiple of it."""
        return math.lcm(*self.window_sizes)

    def config(self) -> dict[str, object]:
        """The keyword arguments that rebuild this network (stored in checkpoint metadata)."""
        return {
            "scale": self.scale,
            "colors": self.colors,
            "m_elan": self.m_elan,
            "c_elan": self.c_elan,
            "n_share": self.n_share,
            "r_expand": self.r_expand,
            "window_sizes": list(self.window_sizes),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x = pad_to_multiple(x, self.window_multiple)
        x = self.head(self.sub_mean(x))
        x = self.tail(self.body(x) + x)
        return self.add_mean(x)[:, :, : h * self.scale, : w * self.scale]
