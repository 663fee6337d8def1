"""Exact inference rewrites of ELAN: BatchNorm folded, shifts as slicing, channels-last linear layers.

The fused module computes the same function as :class:`elan_video.model.arch.ELAN` (up to float rounding):

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
    n, h, w, c = x.shape
    g = c // SHIFT_GROUPS
    out = torch.empty_like(x)
    # Horizontal moves are done on the flattened pixel axis (one long copy instead of one per row),
    # then the column that wrapped around from the neighbouring row is zeroed.
    flat_in, flat_out = x.view(n, h * w, c), out.view(n, h * w, c)
    flat_out[:, :-1, 0:g] = flat_in[:, 1:, 0:g]  # read the right neighbour
    out[:, :, -1:, 0:g] = 0
    flat_out[:, 1:, g : 2 * g] = flat_in[:, :-1, g : 2 * g]  # read the left neighbour
    out[:, :, :1, g : 2 * g] = 0
    out[:, :-1, :, 2 * g : 3 * g] = x[:, 1:, :, 2 * g : 3 * g]  # read the pixel below
    out[:, -1:, :, 2 * g : 3 * g] = 0
    out[:, 1:, :, 3 * g : 4 * g] = x[:, :-1, :, 3 * g : 4 * g]  # read the pixel above
    out[:, :1, :, 3 * g : 4 * g] = 0
    out[..., 4 * g :] = x[..., 4 * g :]
    return out


def _onednn_fp32(x: torch.Tensor) -> bool:
    # oneDNN's inner product fuses bias, ReLU and the residual add into the GEMM (no broadcast copy of
    # the bias, one pass over the output); PyTorch exposes it for fp32 CPU tensors.
    return x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()


class _Linear(nn.Module):
    """A 1x1 conv (optionally followed by eval-mode BatchNorm) as one GEMM on (..., C) channels-last data."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> None:
        super().__init__()
        weight = conv.weight.detach().flatten(1).double()
        bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
        if bn is not None:
            gain = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            weight = weight * gain[:, None]
            bias = (bias - bn.running_mean.double()) * gain + bn.bias.detach().double()
        self.weight = nn.Parameter(weight.float().contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.float(), requires_grad=False)
        self.onednn = True  # cleared for graph capture (TorchScript cannot trace the oneDNN op)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        """y = [relu](x W^T + b) [+ residual]; x (..., in), residual (..., out)."""
        flat = x.reshape(-1, x.shape[-1])
        out_features = self.weight.shape[0]
        if self.onednn and _onednn_fp32(flat):
            if residual is not None:
                res = residual.reshape(-1, out_features)
                y = torch.ops.mkldnn._linear_pointwise(flat, res, self.weight, self.bias, "add")
            else:
                y = torch.ops.mkldnn._linear_pointwise(flat, self.weight, self.bias, "relu" if relu else "none", [], "")
        else:
            y = torch.addmm(self.bias, flat, self.weight.t())
            if relu:
                y = y.relu_()
            if residual is not None:
                y = y.add_(residual.reshape(-1, out_features))
        return y.view(*x.shape[:-1], out_features)


class _FusedLFE(nn.Module):
    def __init__(self, lfe: LFE) -> None:
        super().__init__()
        self.fc0 = _Linear(lfe.conv0.shift_conv.conv1x1)
        self.fc1 = _Linear(lfe.conv1.shift_conv.conv1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc0(shift_nhwc(x), relu=True)
        return self.fc1(shift_nhwc(y), residual=x)


def window_index(h: int, w: int, wsize: int, shifted: bool, device: torch.device) -> torch.Tensor:
    """Flat pixel index (length h*w) listing pixels window by window, row-major inside each window.

    With ``shifted`` the windows are those of the image rolled by -wsize/2 in both axes (the
    authors' cyclic shift), so one gather replaces roll + partition and one scatter undoes both.
    """
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    if shifted:
        rows = torch.roll(rows, -(wsize // 2))
        cols = torch.roll(cols, -(wsize // 2))
    grid = (rows[:, None] * w + cols[None, :]).view(h // wsize, wsize, w // wsize, wsize)
    return grid.transpose(1, 2).reshape(-1)


# Window sizes with at least this many tokens use the fused SDPA kernel (no L x L matrix in memory);
# below it the explicit product is faster (measured on a 2-core AVX2 CPU: 16 tokens 8 ms vs 16 ms,
# 256 tokens 151 ms vs 29 ms for a 320x192 map).
_SDPA_MIN_TOKENS = 64


def _uses_sdpa(tokens: int, dtype: torch.dtype) -> bool:
    # fp16 stays on the explicit path, whose logits are formed in fp32: SDPA's fallback kernel would
    # form the unscaled q q^T in fp16 and overflow.
    return tokens >= _SDPA_MIN_TOKENS and dtype != torch.float16


def _attention(q: torch.Tensor) -> torch.Tensor:
    """softmax(q q^T) over the last axis, unscaled as in the paper; logits in fp32 when q is fp16."""
    if q.dtype == torch.float16:
        return (q.float() @ q.float().transpose(-2, -1)).softmax(dim=-1).to(q.dtype)
    return torch.bmm(q, q.transpose(-2, -1)).softmax(dim=-1)


def _attend(q: torch.Tensor | None, v: torch.Tensor, cached: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q q^T) v per window; returns (output, what the shared modules reuse).

    q, v: (windows, tokens, d). The first module of an ELAB passes q and no cache; shared modules pass
    the cache, which is q itself where the fused SDPA kernel is used (recomputing is cheaper than
    keeping a tokens x tokens matrix in memory) and the attention matrix elsewhere.
    """
    if _uses_sdpa(v.shape[1], v.dtype):
        q = q if cached is None else cached
        out = F.scaled_dot_product_attention(q[:, None], q[:, None], v[:, None], scale=1.0)[:, 0]
        return out, q
    atn = _attention(q) if cached is None else cached
    return torch.bmm(atn, v), atn


class _FusedGMSA(nn.Module):
    def __init__(self, gmsa: GMSA) -> None:
        super().__init__()
        self.proj_in = _Linear(gmsa.project_inp[0], gmsa.project_inp[1])
        self.proj_out = _Linear(gmsa.project_out)
        self.window_sizes = gmsa.window_sizes
        self.shifted = gmsa.shifts > 0
        self.calc_attn = gmsa.calc_attn
        self.width = gmsa.split_chns[0]

    def forward(
        self, x: torch.Tensor, cache: list[torch.Tensor], indices: dict[tuple[int, bool], torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n, h, w, _ = x.shape
        t = self.proj_in(x).view(n, h * w, -1)
        c_out = self.width // 2 if self.calc_attn else self.width
        merged = x.new_empty(n, h * w, c_out * len(self.window_sizes))
        new_cache = []
        for idx, wsize in enumerate(self.window_sizes):
            index = indices[wsize, self.shifted]
            part = t[:, :, idx * self.width : (idx + 1) * self.width]
            tokens = part.index_select(1, index).view(-1, wsize * wsize, self.width)
            if self.calc_attn:
                q, v = tokens.chunk(2, dim=-1)
                y, kept = _attend(q, v, None)
            else:
                y, kept = _attend(None, tokens, cache[idx])
            merged[:, :, idx * c_out : (idx + 1) * c_out].index_copy_(1, index, y.view(n, h * w, c_out))
            new_cache.append(kept)
        return self.proj_out(merged.view(n, h, w, -1), residual=x), new_cache


class _FusedELAB(nn.Module):
    def __init__(self, lfes: list[LFE], gmsas: list[GMSA]) -> None:
        super().__init__()
        self.lfes = nn.ModuleList(_FusedLFE(m) for m in lfes)
        self.gmsas = nn.ModuleList(_FusedGMSA(m) for m in gmsas)

    def forward(self, x: torch.Tensor, indices: dict[tuple[int, bool], torch.Tensor]) -> torch.Tensor:
        cache: list[torch.Tensor] = []
        for lfe, gmsa in zip(self.lfes, self.gmsas, strict=True):
            x, cache = gmsa(lfe(x), cache, indices)
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

    def portable(self) -> FusedELAN:
        """Use only standard ATen ops (for TorchScript tracing and torch.compile); returns self."""
        for module in self.modules():
            if isinstance(module, _Linear):
                module.onednn = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x = pad_to_multiple(x.float(), self.window_multiple) - self.mean
        x = self.head(x.contiguous(memory_format=torch.channels_last))
        skip = x.permute(0, 2, 3, 1)  # channels-last storage: a free view as (N, H, W, C)
        feat = skip.to(self.dtype)
        _, hp, wp, _ = feat.shape
        # The window orders depend only on the frame size: built once per frame, shared by every block.
        indices = {
            (size, shifted): window_index(hp, wp, size, shifted, feat.device)
            for size in set(self.window_sizes)
            for shifted in (False, True)
        }
        for block in self.body:
            feat = block(feat, indices)
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
