"""Codec degradations: the LR that real video and photos give a network, for training pairs and benchmarks.

A clean SR pair is (MATLAB bicubic of an HR crop, the crop). Real inputs are also compressed. The
"video" degradation makes LR the way a camera pan reaches a viewer: an HR window moves a few pixels per
frame over a photo, each frame is shrunk by the MATLAB-exact bicubic, optionally blurred and given sensor
noise, then the short sequence is coded with H.264 (libx264 through PyAV, 4:2:0, one keyframe then P/B
frames, random CRF) and decoded; or a single frame is coded as 4:2:0 JPEG at a random quality; or it stays
clean. The HR target is always the clean crop.

Encoding dominates the cost (about 2 ms per 64x64 frame here), so :class:`VideoPatchSampler` degrades a pool
of pairs at a time and draws each pair ``reuse`` times, in a fresh random order, before the next pool.
Pool ``k`` is made from its own seed, so the sampler's state is three integers and a resumed run draws the
same batches (x264 runs with one thread, which is deterministic).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, MissingDependencyError, OptionError
from .data import _augment, _to_nchw, bicubic_downscale, list_images, read_image

__all__ = [
    "CodecSpec",
    "VideoDegradation",
    "VideoPatchSampler",
    "add_noise",
    "blur",
    "h264_decode",
    "h264_encode",
    "h264_roundtrip",
    "jpeg_roundtrip",
    "pan_sequence",
    "parse_codec",
]


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError("the video degradation needs PyAV: pip install av") from None
    return av


def h264_encode(
    frames: Sequence[np.ndarray],
    *,
    crf: int,
    keyint: int | None = None,
    preset: str = "veryfast",
    rate: int = 25,
) -> bytes:
    """Code H x W x 3 uint8 RGB frames (H, W even) with libx264 at ``crf`` (yuv420p, BT.601): a Matroska file's
    bytes, frame i at time i / ``rate``. keyint: frames between keyframes (default: one keyframe for the whole
    sequence, so the others are P/B frames)."""
    av = _av()
    if not frames:
        raise InputError("h264_encode needs at least one frame")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise InputError(f"4:2:0 coding needs an even frame size, got {w}x{h}")
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {
            "crf": str(crf),
            "preset": preset,
            "threads": "1",  # deterministic, and the trainer owns the cores
            "x264-params": "log-level=none:threads=1:lookahead-threads=1",
        }
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = keyint or len(frames)  # libx264's keyint
        for i, image in enumerate(frames):
            # Our own conversion to yuv420p: left to the encoder, the converted frames share a reused buffer
            # and the output is not reproducible (PyAV 19).
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def h264_decode(data: bytes, *, count: int, rate: int = 25) -> list[np.ndarray]:
    """The ``count`` frames of :func:`h264_encode`'s ``data`` (uint8 RGB, display order); raises InputError if
    the decoder's timestamps are not 0 .. count - 1 frames (every frame back, once, in order)."""
    av = _av()
    with av.open(io.BytesIO(data), "r") as inp:
        stream = inp.streams.video[0]
        tb = stream.time_base
        stream.codec_context.thread_count = 1
        # A copy: the array can be a view of a buffer the decoder reuses.
        decoded = [(f.pts, f.to_ndarray(format="rgb24").copy()) for f in inp.decode(stream)]
    if not decoded:
        raise InputError("the x264 round trip decoded no frame")
    # Matroska stores milliseconds: frame i of a 25 fps stream has pts 40 * i.
    index = [round(float(p * tb) * rate) if p is not None else -1 for p, _ in decoded]
    if index != list(range(count)):
        raise InputError(f"the x264 round trip gave frames {index}, expected 0..{count - 1}")
    return [image for _, image in decoded]


def h264_roundtrip(
    frames: Sequence[np.ndarray],
    *,
    crf: int,
    keyint: int | None = None,
    preset: str = "veryfast",
    rate: int = 25,
) -> list[np.ndarray]:
    """:func:`h264_encode` then :func:`h264_decode`: the frames as a viewer of the coded video sees them (same
    shape and dtype)."""
    data = h264_encode(frames, crf=crf, keyint=keyint, preset=preset, rate=rate)
    return h264_decode(data, count=len(frames), rate=rate)


def jpeg_roundtrip(image: np.ndarray, *, quality: int) -> np.ndarray:
    """Code an H x W x 3 uint8 RGB image as baseline JPEG (4:2:0) at ``quality`` (1..95) and decode it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB")).copy()


def add_noise(image: np.ndarray, *, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 image + Gaussian noise of ``sigma`` grey levels (independent per pixel and channel), rounded."""
    noisy = image.astype(np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, *, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an H x W x C uint8 image (edge-replicated borders), rounded to uint8."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    k /= k.sum()
    out = image.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(k[i] * np.take(padded, range(i, i + n), axis=axis) for i in range(len(k)))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pan_sequence(
    hr: np.ndarray, *, scale: int, size: tuple[int, int], frames: int, origin: tuple[int, int], step: tuple[int, int]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A camera pan over ``hr``: HR windows of (scale*h, scale*w) starting at ``origin`` (top, left, HR pixels),
    moving ``step`` HR pixels per frame, and the MATLAB bicubic LR of each. size: the LR (h, w).

    Returns (HR frames, LR frames), uint8 H x W x 3 each. Raises InputError if the pan leaves the image.
    """
    h, w = size[0] * scale, size[1] * scale
    tops = [origin[0] + i * step[0] for i in range(frames)]
    lefts = [origin[1] + i * step[1] for i in range(frames)]
    if min(tops) < 0 or min(lefts) < 0 or max(tops) + h > hr.shape[0] or max(lefts) + w > hr.shape[1]:
        raise InputError(f"a {frames}-frame pan of {w}x{h} by {step} from {origin} leaves the {hr.shape} image")
    hrs = [np.ascontiguousarray(hr[t : t + h, x : x + w]) for t, x in zip(tops, lefts, strict=True)]
    return hrs, [bicubic_downscale(x, scale) for x in hrs]


@dataclass(frozen=True)
class CodecSpec:
    """A fixed degradation for benchmarks: ``kind`` "x264" (CRF ``level``) or "jpeg" (quality ``level``)."""

    kind: str
    level: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.level}"


def parse_codec(text: str) -> CodecSpec:
    """Parse "x264:CRF" (CRF 0..51) or "jpeg:Q" (Q 1..95) into a :class:`CodecSpec`; OptionError otherwise."""
    match = re.fullmatch(r"\s*(x264|jpeg)\s*:\s*(\d+)\s*", text.lower())
    if match is None:
        raise OptionError(f"degrade must be x264:CRF or jpeg:Q (e.g. x264:28, jpeg:50), got {text!r}")
    kind, level = match.group(1), int(match.group(2))
    limits = {"x264": (0, 51), "jpeg": (1, 95)}[kind]
    if not limits[0] <= level <= limits[1]:
        raise OptionError(f"{kind} level must be in {limits[0]}..{limits[1]}, got {level}")
    return CodecSpec(kind, level)


@dataclass(frozen=True)
class VideoDegradation:
    """The random recipe of the "video" training degradation (stored in the exported weights' metadata).

    Per sequence: clean with probability ``p_clean``, else JPEG (one frame, quality in ``jpeg_quality``) with
    ``p_jpeg``, else H.264 (``frames`` frames, CRF in ``crf``, ``preset``). Before coding, with ``p_blur`` a
    Gaussian blur of sigma in ``blur`` (LR pixels) and with ``p_noise`` noise of sigma in ``noise`` (grey levels,
    fresh per frame). The HR window moves up to ``motion`` HR pixels per frame in each direction; each coded
    LR frame is the patch plus ``margin`` LR pixels a side (cut off after decoding, so patches are not frame
    edges); ``pairs`` frames of each sequence become training pairs.
    """

    crf: tuple[int, int] = (18, 35)
    jpeg_quality: tuple[int, int] = (30, 90)
    p_clean: float = 0.1
    p_jpeg: float = 0.2
    blur: tuple[float, float] = (0.3, 0.7)
    p_blur: float = 0.2
    noise: tuple[float, float] = (0.5, 3.0)
    p_noise: float = 0.5
    frames: int = 6
    motion: int = 3
    margin: int = 8
    pairs: int = 3
    preset: str = "veryfast"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class VideoPatchSampler:
    """Random (codec-degraded LR, clean HR) patch pairs from folders of HR images; reproducible and resumable.

    Same interface as :class:`elan_video.training.data.PatchSampler` (``sample``, ``sample_uint8``, ``state``,
    ``load_state``, ``len``). pool: pairs degraded at a time; reuse: how often each pair is drawn (in a new
    random order each pass) before the next pool is made.
    """

    def __init__(
        self,
        folders: Sequence[str | Path],
        *,
        scale: int,
        patch: int,
        seed: int = 0,
        recipe: VideoDegradation | None = None,
        pool: int = 256,
        reuse: int = 2,
    ) -> None:
        if scale not in (2, 3, 4):
            raise OptionError(f"scale must be 2, 3 or 4, got {scale}")
        if patch < 8:
            raise OptionError(f"patch must be at least 8 LR pixels, got {patch}")
        if pool < 1 or reuse < 1:
            raise OptionError(f"pool and reuse must be at least 1, got {pool} and {reuse}")
        self.scale, self.patch, self.seed = scale, patch, seed
        self.recipe = recipe or VideoDegradation()
        self.pool_size, self.reuse = pool, reuse
        r = self.recipe
        lr_side = patch + 2 * r.margin
        lr_side += lr_side % 2
        self._lr_side = lr_side
        self._need = lr_side * scale + (r.frames - 1) * r.motion  # HR side a whole pan needs
        self.images: list[np.ndarray] = []
        for folder in folders:
            for f in list_images(folder):
                image = read_image(f)
                if image.ndim == 2:
                    image = np.repeat(image[:, :, None], 3, axis=2)
                if min(image.shape[:2]) >= self._need:
                    self.images.append(image)
        if not self.images:
            raise InputError(
                f"no training image of at least {self._need}x{self._need} pixels in "
                f"{', '.join(str(f) for f in folders)}"
            )
        self._index = 0  # pool number
        self._drawn = 0  # pairs drawn from it
        self._pool: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # lr, hr, order

    def __len__(self) -> int:
        return len(self.images)

    def _sequence(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """One degraded sequence: ``recipe.pairs`` (LR patch, HR patch) pairs (one for clean/JPEG)."""
        r, s, p, m = self.recipe, self.scale, self.patch, self.recipe.margin
        image = self.images[int(rng.integers(len(self.images)))]
        kind = rng.random()
        frames = 1 if kind < r.p_clean + r.p_jpeg else r.frames
        step = (int(rng.integers(-r.motion, r.motion + 1)), int(rng.integers(-r.motion, r.motion + 1)))
        span = self._lr_side * s
        lo = [max(0, -st * (frames - 1)) for st in step]
        hi = [image.shape[a] - span - max(0, step[a] * (frames - 1)) for a in (0, 1)]
        origin = (int(rng.integers(lo[0], hi[0] + 1)), int(rng.integers(lo[1], hi[1] + 1)))
        hrs, lrs = pan_sequence(
            image, scale=s, size=(self._lr_side, self._lr_side), frames=frames, origin=origin, step=step
        )
        if kind >= r.p_clean:
            if rng.random() < r.p_blur:
                sigma = float(rng.uniform(*r.blur))
                lrs = [blur(x, sigma=sigma) for x in lrs]
            if rng.random() < r.p_noise:
                sigma = float(rng.uniform(*r.noise))
                lrs = [add_noise(x, sigma=sigma, rng=rng) for x in lrs]
            if frames == 1:
                lrs = [jpeg_roundtrip(lrs[0], quality=int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1)))]
            else:
                lrs = h264_roundtrip(lrs, crf=int(rng.integers(r.crf[0], r.crf[1] + 1)), preset=r.preset)
        chosen = rng.choice(frames, size=min(frames, r.pairs), replace=False)
        return [
            (lrs[i][m : m + p, m : m + p], hrs[i][m * s : (m + p) * s, m * s : (m + p) * s]) for i in sorted(chosen)
        ]

    def make_pool(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Pool ``index``: LR uint8 (pool, p, p, 3) and HR uint8 (pool, sp, sp, 3), each pair flipped/rotated
        by one of 8 dihedral transforms. A function of (seed, index) only."""
        rng = np.random.default_rng([self.seed, index])
        lrs: list[np.ndarray] = []
        hrs: list[np.ndarray] = []
        while len(lrs) < self.pool_size:
            for lr, hr in self._sequence(rng):
                hr, lr = _augment(hr, lr, int(rng.integers(8)))
                lrs.append(np.ascontiguousarray(lr))
                hrs.append(np.ascontiguousarray(hr))
        return np.stack(lrs[: self.pool_size]), np.stack(hrs[: self.pool_size])

    def _load_pool(self) -> None:
        lr, hr = self.make_pool(self._index)
        passes = [np.random.default_rng([self.seed, self._index, k + 1]) for k in range(self.reuse)]
        order = np.concatenate([rng.permutation(self.pool_size) for rng in passes])
        self._pool = (lr, hr, order)

    def sample_uint8(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as uint8 N x 3 x H x W views of channels-last memory: LR (batch, 3, p, p), HR (batch, 3, sp, sp)."""
        lrs, hrs = [], []
        for _ in range(batch):
            if self._drawn == self.pool_size * self.reuse:
                self._index, self._drawn, self._pool = self._index + 1, 0, None
            if self._pool is None:
                self._load_pool()
            lr, hr, order = self._pool  # type: ignore[misc]
            j = int(order[self._drawn])
            self._drawn += 1
            lrs.append(lr[j])
            hrs.append(hr[j])
        return _to_nchw(np.stack(lrs)), _to_nchw(np.stack(hrs))

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as float32 (batch, 3, p, p) LR and (batch, 3, sp, sp) HR in 0..255."""
        lr, hr = self.sample_uint8(batch)
        return lr.float().contiguous(), hr.float().contiguous()

    def state(self) -> dict[str, Any]:
        """Where the sampler is: the pool number and the pairs drawn from it (plain ints)."""
        return {"pool": self._index, "drawn": self._drawn}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` (the pool is remade from its seed when first needed)."""
        if int(state["pool"]) != self._index:
            self._pool = None
        self._index, self._drawn = int(state["pool"]), int(state["drawn"])
