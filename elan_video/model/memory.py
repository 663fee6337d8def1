"""How much memory a network call needs, how much the device has free, and the tile that fits.

Without tiling, ELAN's activations grow with the frame's area: on the fused fp32 CPU path, ELAN-light x2
added 3.3 GB to the process for a 1280x720 frame, so a 12-megapixel photo would need some 45 GB. A frame
that would not fit is cut into tiles instead of dying in the kernel's out-of-memory killer.
"""

from __future__ import annotations

import math
import os

import torch

__all__ = [
    "BYTES_PER_PIXEL_CHANNEL",
    "auto_tile",
    "bytes_per_pixel_channel",
    "free_memory",
    "frame_bytes",
    "tiling_bytes",
]

# Peak bytes per input pixel per feature channel of one network call on a CPU. Measured for ELAN-light
# (60 channels) with freed memory kept for reuse (elan_video.model.allocator): 3.6 KB per pixel for a whole
# 1280x720 frame, 4.7 KB per tile pixel when it is cut in 448-pixel tiles (the blended output and the
# heap's slack weigh more on small calls), so 80.
BYTES_PER_PIXEL_CHANNEL = 80
# The same on CUDA, where PyTorch's caching allocator hands freed blocks straight back. A whole 1920x1080
# frame on an H100 (tools/device-check.sh, 2026-11-26) peaked at 39.7 allocated and 50.9 reserved bytes per
# pixel and channel in fp32, 23.2 and 33.6 in bf16; the reserved figure plus a tenth for smaller frames.
_CUDA_BYTES_PER_PIXEL_CHANNEL = {"fp32": 56, "bf16": 36, "fp16": 36}
_MIN_TILE = 128  # below this the overlap is most of each tile; a frame too big even for this uses it anyway


def bytes_per_pixel_channel(device: str = "cpu", precision: str = "fp32") -> int:
    """Estimated peak bytes per input pixel and feature channel of one network call on a ``device`` type
    ("cpu", "cuda") in ``precision``; "auto" counts as fp32, the most it can pick."""
    if device == "cuda":
        return _CUDA_BYTES_PER_PIXEL_CHANNEL.get(precision, _CUDA_BYTES_PER_PIXEL_CHANNEL["fp32"])
    return BYTES_PER_PIXEL_CHANNEL


def frame_bytes(
    height: int, width: int, *, channels: int, batch: int = 1, device: str = "cpu", precision: str = "fp32"
) -> int:
    """Estimated peak bytes of one call on ``batch`` frames of height x width input pixels for a network
    with ``channels`` feature channels (ELAN's c_elan), on a ``device`` type in ``precision``."""
    return bytes_per_pixel_channel(device, precision) * channels * height * width * batch


def tiling_bytes(height: int, width: int, *, scale: int) -> int:
    """Bytes a tiled frame of height x width input pixels holds besides its tiles' calls: its float32
    input and, at the output size, the float32 blended output and its blending weights. With the whole-frame
    figure for each tile this matched the H100's peak for 3840x2160 in 512-pixel tiles (80 measured, 80
    estimated bytes per tile pixel and channel in fp32)."""
    return 4 * height * width * (3 + 4 * scale * scale)


def free_memory(device: torch.device) -> int | None:
    """Bytes a computation on ``device`` can still take: for CUDA the driver's free memory plus what
    PyTorch's caching allocator holds unused; for the CPU the kernel's MemAvailable (Linux), else the
    physical memory not in use. None where it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def auto_tile(
    height: int,
    width: int,
    *,
    budget: int,
    channels: int,
    scale: int,
    batch: int = 1,
    overlap: int = 32,
    device: str = "cpu",
    precision: str = "fp32",
) -> int | None:
    """The tile side (input pixels, a multiple of 16, the largest window) whose calls, with the whole-frame
    buffers of :func:`tiling_bytes`, stay within ``budget`` bytes; None when the whole frame does."""
    per_pixel = bytes_per_pixel_channel(device, precision) * channels * batch
    if per_pixel * height * width <= budget:
        return None
    side = math.isqrt(max(0, (budget - tiling_bytes(height, width, scale=scale)) // per_pixel))
    return max(side // 16 * 16, _MIN_TILE, 16 * (2 * overlap // 16 + 1))
