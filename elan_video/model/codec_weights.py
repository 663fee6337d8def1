"""Which bundled weights suit pictures by how they were coded: the rule the command line's default follows
(:mod:`elan_video.jobs.default_weights` probes a file for it) and the codec benchmark's ``--model auto`` scores.

Pictures that were never lossily coded (a still image, a losslessly coded video) get the clean weights. Lossily
coded video gets the codec-aware ``elan-light-x{s}-video`` weights, trained not to sharpen blocking and ringing
into the picture. H.264, whose decoder reports how coarsely each macroblock was quantised, gets them only when
finely quantised: from a mean QP of :data:`MEDIUM_FROM_QP` it gets ``elan-light-x{s}-video-medium`` and from
:data:`STRONG_FROM_QP` ``elan-light-x{s}-video-strong``, trained on more heavily coded pictures (the medium ones
are halfway between). The thresholds come from scoring each tier per picture of the x264 pans over Set5 and of
foreman and carphone, by mean QP (docs/weights.md). Scales without such weights fall back to the next finer ones.
"""

from __future__ import annotations

from .checkpoint import BUNDLED

__all__ = ["MEDIUM_FROM_QP", "STRONG_FROM_QP", "by_quantiser", "weights_for"]

MEDIUM_FROM_QP = 28.0
"""Mean H.264 QP (0..51) from which the medium codec-aware weights are chosen."""
STRONG_FROM_QP = 32.0
"""Mean H.264 QP (0..51) from which the strong codec-aware weights are chosen."""


def _tiers(scale: int) -> list[tuple[float, str]]:
    """(first mean QP, bundled name) of the weights chosen by the quantiser at ``scale``, coarsest first."""
    named = (
        (STRONG_FROM_QP, f"elan-light-x{scale}-video-strong"),
        (MEDIUM_FROM_QP, f"elan-light-x{scale}-video-medium"),
    )
    return [(qp, name) for qp, name in named if name in BUNDLED]


def by_quantiser(scale: int) -> bool:
    """Whether a mean QP can change :func:`weights_for`'s answer at ``scale`` (else it need not be measured)."""
    return bool(_tiers(scale))


def weights_for(scale: int, *, lossy: bool, qp: float | None = None) -> str:
    """The bundled weights' name for pictures upscaled by ``scale``: ``lossy`` whether they were lossily coded,
    ``qp`` their mean H.264 quantisation parameter where known (None: another codec, or not measured)."""
    clean, video = f"elan-light-x{scale}", f"elan-light-x{scale}-video"
    if not lossy or video not in BUNDLED:
        return clean
    if qp is None:
        return video
    return next((name for start, name in _tiers(scale) if qp >= start), video)
