"""Which bundled weights suit pictures by how they were coded: the rule the command line's default follows
(:mod:`elan_video.jobs.default_weights` probes a file for it) and the codec benchmark's ``--model auto`` scores.

Pictures that were never lossily coded (a still image, a losslessly coded video) get the clean weights. Lossily
coded video gets the codec-aware ``elan-light-x{s}-video`` weights, trained not to sharpen blocking and ringing
into the picture; H.264 quantised coarsely, with a mean QP of at least :data:`STRONG_FROM_QP` (web video often
is), gets ``elan-light-x{s}-video-strong``, trained on more heavily coded pictures: per picture of the x264 pans
over Set5 and of foreman and carphone, it gained more than the -video weights at every mean QP of 30 or more
measured, and less at most below 28 (docs/weights.md). Scales without such weights fall back to the next.
"""

from __future__ import annotations

from .checkpoint import BUNDLED

__all__ = ["STRONG_FROM_QP", "strong_weights", "weights_for"]

STRONG_FROM_QP = 30.0
"""Mean H.264 QP (0..51) from which the strong codec-aware weights are chosen."""


def strong_weights(scale: int) -> str | None:
    """The bundled strong codec-aware weights' name at ``scale``, or None where the scale has none (so a QP
    cannot change :func:`weights_for`'s answer)."""
    name = f"elan-light-x{scale}-video-strong"
    return name if name in BUNDLED else None


def weights_for(scale: int, *, lossy: bool, qp: float | None = None) -> str:
    """The bundled weights' name for pictures upscaled by ``scale``: ``lossy`` whether they were lossily coded,
    ``qp`` their mean H.264 quantisation parameter where known (None: another codec, or not measured)."""
    clean, video, strong = f"elan-light-x{scale}", f"elan-light-x{scale}-video", strong_weights(scale)
    if not lossy or video not in BUNDLED:
        return clean
    if strong is not None and qp is not None and qp >= STRONG_FROM_QP:
        return strong
    return video
