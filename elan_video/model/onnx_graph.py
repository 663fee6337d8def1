"""ELAN as the graph ONNX tools expect: N x 3 x H x W RGB in 0..1 in, N x 3 x sH x sW in 0..1 out.

vs-mlrt and chaiNNer feed a network RGB scaled to 0..1 and take its output in the same range; ELAN works at
0..255, so the graph scales on the way in and out. Everything else is the authors' network with two exact
rewrites that export cleanly and run faster in ONNX runtimes:

* the fixed depthwise "shift" convolution becomes five padded slices (ONNX runtimes run a depthwise 3 x 3
  far slower than a copy, and the result is bit-identical);
* BatchNorm (eval statistics) is folded into the 1 x 1 convolution before it.

The reflect padding to whole attention windows is written as a gather with a triangle-wave index instead of
the reference's loop of ``F.pad`` calls, because the loop's trip count depends on the frame size and an
exported graph must serve every size. With ``half`` the weights and activations are float16 and the attention
logits are formed in float32: the network has no 1/sqrt(d) scaling, so q q^T overflows float16.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ELAN, GMSA, LFE, SHIFT_GROUPS, window_merge, window_partition

__all__ = ["OnnxGraph", "reflect_index"]


def reflect_index(line: torch.Tensor, multiple: int) -> torch.Tensor:
    """Indices (int64) that reflect-pad ``line`` (a 1-d view along one axis) to a multiple of ``multiple``.

    Equal to :func:`elan_video.model.arch.pad_to_multiple`'s repeated reflections: index j of the padded axis
    reads j's position on a triangle wave of period 2 (size - 1), and every index is 0 for a one-pixel axis.
    The length is read from ``line`` as data, so an exported graph computes it for each input.
    """
    size = line.shape[0]
    length = torch.ones_like(line, dtype=torch.int64).sum()
    period = torch.clamp(2 * length - 2, min=1)
    j = torch.arange(size + (-size) % multiple, device=line.device) % period
    return torch.where(j >= length, period - j, j)


def _shift(x: torch.Tensor) -> torch.Tensor:
    """The authors' 5-group one-pixel shift (zero fill) on N x C x H x W, as padded slices."""
    g = x.shape[1] // SHIFT_GROUPS
    return torch.cat(
        [
            F.pad(x[:, 0:g, :, 1:], (0, 1)),  # read the right neighbour
            F.pad(x[:, g : 2 * g, :, :-1], (1, 0)),  # read the left neighbour
            F.pad(x[:, 2 * g : 3 * g, 1:, :], (0, 0, 0, 1)),  # read the pixel below
            F.pad(x[:, 3 * g : 4 * g, :-1, :], (0, 0, 1, 0)),  # read the pixel above
            x[:, 4 * g :],
        ],
        dim=1,
    )


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``conv`` followed by eval-mode ``bn`` as one convolution (computed in float64)."""
    gain = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    out = copy.deepcopy(conv)
    with torch.no_grad():
        out.weight.copy_((conv.weight.double() * gain[:, None, None, None]).float())
        out.bias.copy_(((conv.bias.double() - bn.running_mean.double()) * gain + bn.bias.double()).float())
    return out


class _Lfe(nn.Module):
    def __init__(self, lfe: LFE) -> None:
        super().__init__()
        self.fc0 = lfe.conv0.shift_conv.conv1x1
        self.fc1 = lfe.conv1.shift_conv.conv1x1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(_shift(F.relu(self.fc0(_shift(x))))) + x


class _Gmsa(nn.Module):
    def __init__(self, gmsa: GMSA) -> None:
        super().__init__()
        self.project_inp = _folded(gmsa.project_inp[0], gmsa.project_inp[1])
        self.project_out = gmsa.project_out
        self.window_sizes = gmsa.window_sizes
        self.split = gmsa.split_chns
        self.shifted = gmsa.shifts > 0

    def forward(self, x: torch.Tensor, atns: list[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, _, h, w = x.shape
        ys, kept = [], []
        for idx, part in enumerate(torch.split(self.project_inp(x), self.split, dim=1)):
            wsize = self.window_sizes[idx]
            if self.shifted:
                part = torch.roll(part, shifts=(-wsize // 2, -wsize // 2), dims=(2, 3))
            tokens = window_partition(part, wsize)
            if atns is None:
                q, v = tokens.chunk(2, dim=-1)
                logits = q.float() @ q.float().transpose(-2, -1)  # float32 even in a float16 graph: no overflow
                atn = logits.softmax(dim=-1).to(v.dtype)
            else:
                atn, v = atns[idx], tokens
            y = window_merge(atn @ v, wsize, b, h, w)
            if self.shifted:
                y = torch.roll(y, shifts=(wsize // 2, wsize // 2), dims=(2, 3))
            ys.append(y)
            kept.append(atn)
        return self.project_out(torch.cat(ys, dim=1)) + x, kept


class _Elab(nn.Module):
    def __init__(self, lfes: list[LFE], gmsas: list[GMSA]) -> None:
        super().__init__()
        self.lfes = nn.ModuleList(_Lfe(m) for m in lfes)
        self.gmsas = nn.ModuleList(_Gmsa(m) for m in gmsas)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        atns = None
        for lfe, gmsa in zip(self.lfes, self.gmsas, strict=True):
            x, atns = gmsa(lfe(x), atns)
        return x


class OnnxGraph(nn.Module):
    """The exportable form of an :class:`ELAN` (a copy: the model itself is not changed).

    forward: N x 3 x H x W float32 (float16 with ``half``) RGB in 0..1 -> N x 3 x sH x sW in 0..1 (unclamped),
    any H and W >= 1.
    """

    def __init__(self, model: ELAN, *, half: bool = False) -> None:
        super().__init__()
        net = copy.deepcopy(model).float().eval()
        self.scale = net.scale
        self.multiple = net.window_multiple
        self.register_buffer("mean", net.add_mean.bias.detach().clone().view(1, -1, 1, 1))
        self.head = net.head[0]
        self.body = nn.ModuleList(_Elab(list(b.modules_lfe.values()), list(b.modules_gmsa.values())) for b in net.body)
        self.tail = net.tail[0]
        if half:
            self.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        x = x.index_select(2, reflect_index(x[0, 0, :, 0], self.multiple))
        x = x.index_select(3, reflect_index(x[0, 0, 0, :], self.multiple))
        skip = self.head(x * 255.0 - self.mean)
        feat = skip
        for block in self.body:
            feat = block(feat)
        out = F.pixel_shuffle(self.tail(feat + skip), self.scale) + self.mean
        return out[:, :, : h * self.scale, : w * self.scale] / 255.0
