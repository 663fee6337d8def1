"""The standard SR benchmark protocol (DESIGN.md section 5): PSNR/SSIM on Y, border shaved by the scale.

A benchmark folder holds ``HR/`` (or the HR images directly) and optionally ``LR_bicubic/X{s}/`` with the
official LR images named ``{stem}x{s}.png``. When that folder is absent the LR images are made from HR
with the project's MATLAB-exact bicubic (HR cropped to a multiple of s first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..errors import InputError, OptionError
from ..model.arch import ELAN
from .data import bicubic_downscale, bicubic_upscale, crop_to_multiple, list_images, read_image
from .metrics import psnr, ssim

__all__ = [
    "AUTO",
    "BICUBIC",
    "DegradedResult",
    "DegradedScore",
    "EvalResult",
    "FlickerResult",
    "ImageScore",
    "benchmark_pairs",
    "evaluate",
    "evaluate_degraded",
    "flicker",
    "first_picture",
    "flicker_frames",
    "read_sequence",
]

BICUBIC = "bicubic"  # model name of the MATLAB bicubic baseline
# Model name of the codec benchmark's "the command line's default": per coded sequence, the bundled weights that
# elan_video.model.codec_weights.weights_for gives pictures coded that way.
AUTO = "auto"


@dataclass(frozen=True)
class ImageScore:
    """Scores of one image: Y-PSNR in dB and Y-SSIM in 0..1."""

    name: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class EvalResult:
    """Per-image scores of one benchmark folder at one scale, and their means."""

    dataset: str
    scale: int
    images: tuple[ImageScore, ...]

    @property
    def psnr(self) -> float:
        """Mean Y-PSNR over images (dB)."""
        return float(np.mean([s.psnr for s in self.images]))

    @property
    def ssim(self) -> float:
        """Mean Y-SSIM over images."""
        return float(np.mean([s.ssim for s in self.images]))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: dataset, scale, psnr, ssim (means) and images (list of name/psnr/ssim)."""
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "images": [asdict(s) for s in self.images],
        }


def benchmark_pairs(data_dir: str | Path, *, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) for every image of a benchmark folder; uint8, H x W x 3 or H x W for gray images.

    HR is cropped to a multiple of ``scale``; LR is the official file when ``LR_bicubic/X{scale}`` exists,
    otherwise the MATLAB-exact bicubic of HR.
    """
    if scale not in (2, 3, 4):
        raise OptionError(f"scale must be 2, 3 or 4, got {scale}")
    root = Path(data_dir)
    hr_dir = root / "HR" if (root / "HR").is_dir() else root
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    files = list_images(hr_dir)
    if not files:
        raise InputError(f"{hr_dir}: no images")
    pairs = []
    for f in files:
        hr = crop_to_multiple(read_image(f), scale)
        if lr_dir.is_dir():
            lr_file = next((p for p in list_images(lr_dir) if p.stem == f"{f.stem}x{scale}"), None)
            if lr_file is None:
                raise InputError(f"{lr_dir}: no LR image for {f.name} (expected {f.stem}x{scale}.png)")
            lr = read_image(lr_file)
            if lr.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale) or lr.ndim != hr.ndim:
                raise InputError(f"{lr_file}: shape {lr.shape} does not match HR {hr.shape} at x{scale}")
        else:
            lr = bicubic_downscale(hr, scale)
        pairs.append((f.stem, lr, hr))
    return pairs


def _model_runner(model: ELAN | str | Path | None, *, scale: int, device: str | None) -> Callable:
    """A function uint8 LR (H x W x 3 or H x W) -> uint8 SR of the same layout."""
    if isinstance(model, str) and model == BICUBIC:
        return lambda lr: bicubic_upscale(lr, scale)
    from ..model.upscaler import Upscaler

    # Benchmarks are scored in fp32: reduced precisions are an inference speed option, not the model.
    up = Upscaler(model, scale=scale, device=device, precision="fp32")

    def run(lr: np.ndarray) -> np.ndarray:
        if lr.ndim == 3:
            return up(lr)
        # A gray image goes through the colour network as neutral RGB; the channel mean is its gray answer.
        sr = up(np.repeat(lr[:, :, None], 3, axis=2)).astype(np.float64)
        return np.clip(np.floor(sr.mean(axis=2) + 0.5), 0, 255).astype(np.uint8)

    return run


def evaluate(
    model: ELAN | str | Path | None,
    data_dir: str | Path,
    *,
    scale: int,
    device: str | None = None,
    on_image: Callable[[ImageScore], None] | None = None,
) -> EvalResult:
    """Score ``model`` on a benchmark folder by the standard protocol.

    model: an :class:`ELAN`, a checkpoint path, a bundled name, None (the bundled ``elan-light-x{scale}``)
    or ``"bicubic"`` (the MATLAB bicubic baseline). The network runs in fp32 on ``device`` (default: CUDA
    if available) through :class:`elan_video.Upscaler`; its output is rounded to uint8 before scoring.
    on_image: called with each image's score as it is computed (for progress display).
    Returns per-image and mean Y-PSNR/SSIM with ``scale`` border pixels shaved.
    """
    pairs = benchmark_pairs(data_dir, scale=scale)
    run = _model_runner(model, scale=scale, device=device)
    scores = []
    for name, lr, hr in pairs:
        sr = run(lr)
        score = ImageScore(name=name, psnr=psnr(sr, hr, shave=scale), ssim=ssim(sr, hr, shave=scale))
        scores.append(score)
        if on_image is not None:
            on_image(score)
    root = Path(data_dir)
    return EvalResult(dataset=root.resolve().name, scale=scale, images=tuple(scores))


@dataclass(frozen=True)
class DegradedScore:
    """One image under a codec degradation: mean Y-PSNR (dB) of the model's and of bicubic's output, over the
    frames scored, both from the same decoded LR."""

    name: str
    psnr: float
    bicubic: float
    weights: str | None = None  # the bundled weights that scored it, for model "auto"
    qp: float | None = None  # the mean H.264 QP of its coded LR (x264 only)

    @property
    def gain(self) -> float:
        """The model's PSNR minus bicubic's, dB."""
        return self.psnr - self.bicubic


@dataclass(frozen=True)
class DegradedResult:
    """Scores of one benchmark folder under one degradation ("clean", "x264:CRF" or "jpeg:Q")."""

    dataset: str
    scale: int
    degrade: str
    images: tuple[DegradedScore, ...]

    @property
    def psnr(self) -> float:
        """Mean Y-PSNR of the model over images (dB)."""
        return float(np.mean([s.psnr for s in self.images]))

    @property
    def bicubic(self) -> float:
        """Mean Y-PSNR of bicubic upscaling of the same LR (dB)."""
        return float(np.mean([s.bicubic for s in self.images]))

    @property
    def gain(self) -> float:
        """Mean gain over bicubic (dB)."""
        return self.psnr - self.bicubic

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: dataset, scale, degrade, psnr, bicubic, gain and images (name/psnr/bicubic/gain)."""
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "degrade": self.degrade,
            "psnr": self.psnr,
            "bicubic": self.bicubic,
            "gain": self.gain,
            "images": [
                {"name": s.name, "psnr": s.psnr, "bicubic": s.bicubic, "gain": s.gain}
                | ({} if s.weights is None else {"weights": s.weights})
                | ({} if s.qp is None else {"qp": s.qp})
                for s in self.images
            ],
        }


@dataclass(frozen=True)
class FlickerResult:
    """Mean absolute difference (grey levels, RGB) between consecutive output frames of a static scene."""

    model: float
    bicubic: float
    weights: str | None = None  # the bundled weights measured, for model "auto"

    @property
    def ratio(self) -> float:
        """The model's flicker over bicubic's; 1.0 means no more shimmer than bicubic."""
        return self.model / self.bicubic

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: model, bicubic, ratio (and weights, for model "auto")."""
        doc: dict[str, object] = {"model": self.model, "bicubic": self.bicubic, "ratio": self.ratio}
        return doc | ({} if self.weights is None else {"weights": self.weights})


PAN_FRAMES = 6  # frames of the benchmark's pan (one keyframe, then P/B frames)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


@dataclass(frozen=True)
class _Coded:
    """Frames of one benchmark item as scored: (decoded LR, HR) pairs, uint8 RGB, and how the LR was coded."""

    frames: list[tuple[np.ndarray, np.ndarray]]
    lossy: bool
    qp: float | None = None  # mean H.264 QP of the coded LR


def _x264(lrs: list[np.ndarray], *, crf: int, keyint: int | None = None) -> tuple[list[np.ndarray], float | None]:
    """``lrs`` coded by x264 as one sequence and decoded, and the stream's mean QP."""
    import io

    from ..media.video.probe import mean_h264_qp
    from .degrade import h264_decode, h264_encode

    data = h264_encode(lrs, crf=crf, keyint=keyint)
    return h264_decode(data, count=len(lrs)), mean_h264_qp(io.BytesIO(data), frames=len(lrs))


def _degraded_frames(name: str, lr: np.ndarray, hr: np.ndarray, *, scale: int, degrade: str) -> _Coded:
    """The frames of one benchmark image under ``degrade``."""
    from .degrade import jpeg_roundtrip, pan_sequence, parse_codec

    if degrade == "clean":
        return _Coded([(lr, hr)], lossy=False)
    spec = parse_codec(degrade)
    if spec.kind == "jpeg":
        return _Coded([(jpeg_roundtrip(lr, quality=spec.level), hr)], lossy=True)
    # A slow diagonal pan, one LR pixel per frame, inside the image; LR frame sides even for 4:2:0.
    move = PAN_FRAMES - 1
    size = ((hr.shape[0] // scale - move) // 2 * 2, (hr.shape[1] // scale - move) // 2 * 2)
    if min(size) < 16:
        raise InputError(f"{name}: too small for a {PAN_FRAMES}-frame pan at x{scale}")
    hrs, lrs = pan_sequence(hr, scale=scale, size=size, frames=PAN_FRAMES, origin=(0, 0), step=(scale, scale))
    coded, qp = _x264(lrs, crf=spec.level)
    return _Coded(list(zip(coded, hrs, strict=True)), lossy=True, qp=qp)


SEQUENCE_FRAMES = 10  # frames of a video benchmark (the protocol: a standard sequence, 10 frames)


def read_sequence(path: str | Path, *, frames: int = SEQUENCE_FRAMES, scale: int) -> list[np.ndarray]:
    """The first ``frames`` frames of the video ``path`` as HR: uint8 RGB (BT.601 decoding for SD, as PyAV
    does), cropped to a multiple of 2 x ``scale`` so that the LR has even sides for 4:2:0 coding."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            decoded = []
            for frame in container.decode(video=0):
                decoded.append(crop_to_multiple(frame.to_ndarray(format="rgb24"), 2 * scale))
                if len(decoded) == frames:
                    break
    except (av.FFmpegError, IndexError) as exc:
        raise InputError(f"{path}: cannot be read as a video ({exc})") from None
    if len(decoded) < frames:
        raise InputError(f"{path}: {len(decoded)} frames; a sequence benchmark takes its first {frames}")
    return decoded


def _sequence_frames(path: Path, *, scale: int, degrade: str) -> _Coded:
    """The frames of a video benchmark: each frame's MATLAB bicubic LR, and for x264 the LR frames coded as one
    sequence (one keyframe, then P/B frames)."""
    from .degrade import jpeg_roundtrip, parse_codec

    hrs = read_sequence(path, scale=scale)
    lrs = [bicubic_downscale(hr, scale) for hr in hrs]
    qp = None
    if degrade != "clean":
        spec = parse_codec(degrade)
        if spec.kind == "jpeg":
            lrs = [jpeg_roundtrip(lr, quality=spec.level) for lr in lrs]
        else:
            lrs, qp = _x264(lrs, crf=spec.level)
    return _Coded(list(zip(lrs, hrs, strict=True)), lossy=degrade != "clean", qp=qp)


def _scored_frames(data: Path, *, scale: int, degrade: str) -> Iterator[tuple[str, _Coded]]:
    """(name, its frames) for each image of a benchmark folder, or once for a video."""
    if data.is_file():
        yield data.stem, _sequence_frames(data, scale=scale, degrade=degrade)
        return
    for name, lr, hr in benchmark_pairs(data, scale=scale):
        yield name, _degraded_frames(name, _rgb(lr), _rgb(hr), scale=scale, degrade=degrade)


def evaluate_degraded(
    model: ELAN | str | Path | None,
    data_dir: str | Path,
    *,
    scale: int,
    degrade: str,
    device: str | None = None,
    on_image: Callable[[DegradedScore], None] | None = None,
) -> DegradedResult:
    """Gain in Y-PSNR over bicubic on a benchmark folder (or video) whose LR is codec-degraded.

    model: weights as :func:`evaluate` takes them, "bicubic", or "auto": for each image or video, the bundled
    weights the command line gives video coded that way (clean LR: a lossless video; jpeg: a lossy video whose
    QP is not known; x264: by the coded stream's mean QP), named in each score's ``weights``.

    degrade: "clean" (the benchmark LR), "jpeg:Q" (the benchmark LR coded as 4:2:0 JPEG at quality Q) or
    "x264:CRF" (a slow pan over each HR image, six frames moving one LR pixel a frame diagonally, each the
    MATLAB bicubic of its HR window, coded by libx264 at CRF with one keyframe, 4:2:0; every frame scored
    against its HR window). The model and MATLAB bicubic upscale the same decoded LR; PSNR on Y with ``scale``
    pixels shaved, as :func:`evaluate`. Gray images are scored as neutral RGB. A video file as ``data_dir`` is
    one sequence: its first :data:`SEQUENCE_FRAMES` frames are the HR, their bicubic LR is coded as a whole
    (x264: one keyframe, then P/B frames; jpeg: frame by frame), every frame is scored, and the result holds one
    entry named after the file.
    """
    from .degrade import parse_codec

    text = degrade.strip().lower()
    degrade = text if text == "clean" else str(parse_codec(text))  # checked before the first (slow) image
    from ..model.codec_weights import weights_for

    auto = isinstance(model, str) and model == AUTO
    runners = {} if auto else {None: _model_runner(model, scale=scale, device=device)}  # a bad model fails first
    scores = []
    for name, coded in _scored_frames(Path(data_dir), scale=scale, degrade=degrade):
        weights = weights_for(scale, lossy=coded.lossy, qp=coded.qp) if auto else None
        if weights not in runners:
            runners[weights] = _model_runner(weights, scale=scale, device=device)
        model_db, bicubic_db = [], []
        for small, big in coded.frames:
            model_db.append(psnr(runners[weights](small), big, shave=scale))
            bicubic_db.append(psnr(bicubic_upscale(small, scale), big, shave=scale))
        score = DegradedScore(
            name=name,
            psnr=float(np.mean(model_db)),
            bicubic=float(np.mean(bicubic_db)),
            weights=weights,
            qp=coded.qp,
        )
        scores.append(score)
        if on_image is not None:
            on_image(score)
    return DegradedResult(dataset=Path(data_dir).resolve().name, scale=scale, degrade=degrade, images=tuple(scores))


def first_picture(data_dir: str | Path, *, scale: int) -> tuple[str, np.ndarray]:
    """(name, HR) of a benchmark's first image, or of a video benchmark's first frame: the flicker test's scene."""
    if Path(data_dir).is_file():
        return Path(data_dir).stem, read_sequence(data_dir, frames=1, scale=scale)[0]
    name, _, hr = benchmark_pairs(data_dir, scale=scale)[0]
    return name, hr


FLICKER_SIZE = (120, 160)  # LR rows, columns
FLICKER_FRAMES = 12
FLICKER_CRF = 28
FLICKER_KEYINT = 6
FLICKER_NOISE = 2.0  # grey levels, fresh per frame


def flicker_frames(image: np.ndarray, *, seed: int = 0) -> list[np.ndarray]:
    """The flicker test's input: a static 160x120 centre crop of ``image`` (uint8, H x W [x 3], at least that
    big), 12 frames each with fresh Gaussian noise of 2 grey levels, coded by x264 at CRF 28 with a keyframe
    every 6 frames, decoded. Returns 12 uint8 120 x 160 x 3 RGB frames."""
    return _flicker_clip(image, seed=seed)[0]


def _flicker_clip(image: np.ndarray, *, seed: int) -> tuple[list[np.ndarray], float | None]:
    """:func:`flicker_frames` and the coded clip's mean QP."""
    from .degrade import add_noise

    image = _rgb(image)
    h, w = FLICKER_SIZE
    if image.shape[0] < h or image.shape[1] < w:
        raise InputError(f"the flicker test needs an image of at least {w}x{h}, got {image.shape[1]}x{image.shape[0]}")
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    crop = np.ascontiguousarray(image[top : top + h, left : left + w])
    rng = np.random.default_rng(seed)
    noisy = [add_noise(crop, sigma=FLICKER_NOISE, rng=rng) for _ in range(FLICKER_FRAMES)]
    return _x264(noisy, crf=FLICKER_CRF, keyint=FLICKER_KEYINT)


def _mean_frame_difference(frames: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(b.astype(np.int16) - a.astype(np.int16)).mean() for a, b in pairwise(frames)]))


def flicker(
    model: ELAN | str | Path | None, image: np.ndarray, *, scale: int, device: str | None = None, seed: int = 0
) -> FlickerResult:
    """Shimmer on a static scene (:func:`flicker_frames` of ``image``): the mean absolute difference between
    consecutive upscaled frames (uint8 RGB, all pixels and channels) for the model and for MATLAB bicubic.
    model "auto": the bundled weights the command line gives video coded like the clip (by its mean QP)."""
    from ..model.codec_weights import weights_for

    frames, qp = _flicker_clip(image, seed=seed)
    weights = weights_for(scale, lossy=True, qp=qp) if isinstance(model, str) and model == AUTO else None
    run = _model_runner(model if weights is None else weights, scale=scale, device=device)
    return FlickerResult(
        model=_mean_frame_difference([run(f) for f in frames]),
        bicubic=_mean_frame_difference([bicubic_upscale(f, scale) for f in frames]),
        weights=weights,
    )
