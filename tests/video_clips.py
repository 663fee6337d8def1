"""Small synthetic clips for the video tests, written with real PyAV/FFmpeg encoders (no mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from conftest import detail_elan, tiny_elan

from elan_video.model.checkpoint import save_safetensors

SRT = """1
00:00:00,000 --> 00:00:00,200
first line

2
00:00:00,200 --> 00:00:00,500
second line

3
00:00:00,600 --> 00:00:00,900
third line
"""


def pattern(index: int, width: int, height: int, *, seed: int = 0) -> np.ndarray:
    """A smooth moving RGB test picture (H x W x 3 uint8): gradients plus a drifting square."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin((x + 2 * index) / max(4.0, width / 5))
    g = 128 + 100 * np.cos((y + index) / max(4.0, height / 4))
    b = 60 + 150 * (x + y) / (width + height)
    img = np.stack([r, g, b], axis=-1)
    side = max(2, min(width, height) // 4)
    top, left = (index * 2 + seed) % max(1, height - side), (index * 3 + seed) % max(1, width - side)
    img[top : top + side, left : left + side] = (230, 40, 90)
    return np.clip(img, 0, 255).astype(np.uint8)


def woven(index: int, width: int = 64, height: int = 64) -> np.ndarray:
    """An interlaced picture: even rows from one instant of :func:`pattern`, odd rows from a later one."""
    first, second = pattern(8 * index, width, height), pattern(8 * index + 4, width, height)
    picture = first.copy()
    picture[1::2] = second[1::2]
    return picture


def combing(image: np.ndarray) -> float:
    """Mean distance of each row from the average of its neighbours: high for woven fields of a moving picture."""
    rows = image.astype(np.float64)
    return float(np.abs(rows[1:-1] - (rows[:-2] + rows[2:]) / 2).mean())


def make_interlaced_clip(path: Path, frames: int = 6) -> list[np.ndarray]:
    """An H.264 clip coded interlaced (top field first) from :func:`woven` pictures."""
    pictures = [woven(i) for i in range(frames)]
    make_clip(path, images=pictures, size=(64, 64), options={"x264-params": "interlaced=1:tff=1", "crf": "10"})
    return pictures


def transparent(index: int, width: int = 32, height: int = 24) -> np.ndarray:
    """An RGBA picture (H x W x 4 uint8): :func:`pattern` under an alpha ramp that moves with ``index``."""
    yy, xx = np.mgrid[0:height, 0:width]
    alpha = np.clip((xx + yy + 3 * index) * 6, 0, 255).astype(np.uint8)
    return np.dstack([pattern(index, width, height), alpha])


def make_alpha_clip(
    path: Path, *, codec: str, pix_fmt: str, frames: int = 4, options: dict[str, str] | None = None
) -> list[np.ndarray]:
    """A clip with an alpha channel (QuickTime RLE argb, FFV1 yuva420p, ...) of :func:`transparent` pictures;
    ``options`` for the encoder."""
    pictures = [transparent(i) for i in range(frames)]
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=10, options=options or {})
        stream.width, stream.height, stream.pix_fmt = 32, 24, pix_fmt
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgba").reformat(format=pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return pictures


def make_clip(
    path: Path,
    *,
    frames: int = 6,
    size: tuple[int, int] = (32, 32),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rate: Fraction = Fraction(25),
    time_base: Fraction | None = None,
    pts: Sequence[int] | None = None,
    matrix: int | None = None,
    full_range: bool = False,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    audio_from: Path | None = None,
    subtitles: Path | None = None,
    images: Sequence[np.ndarray] | None = None,
    sar: Fraction | None = None,
    display_matrix: Sequence[int] | None = None,
    tags: dict[str, str] | None = None,
    chapters: Sequence[tuple[float, float, str]] | None = None,
    cover: bytes | None = None,
    transfer: int | None = None,
    primaries: int | None = None,
    video_tags: dict[str, str] | None = None,
    attachments: Sequence[tuple[str, str, bytes]] | None = None,
) -> list[np.ndarray]:
    """Encode ``frames`` pattern pictures (or ``images``) to ``path``; returns the RGB frames given to the encoder.

    ``pts`` (in ``time_base`` units) makes a variable-rate clip; ``matrix`` (AVColorSpace) and ``full_range``
    tag and convert the YUV; ``audio_from`` copies that file's first audio stream packet for packet;
    ``subtitles`` (an .srt) adds a subtitle stream the same way; ``sar`` and ``display_matrix`` (FFmpeg's nine
    integers) tag the picture's geometry; ``tags`` are global metadata and ``chapters`` (start s, end s, title)
    the file's chapters; ``cover`` (PNG bytes) adds them as an attached picture, the way cover art is stored;
    ``transfer`` and ``primaries`` (AVColorTransferCharacteristic / AVColorPrimaries) tag the colour further;
    ``video_tags`` are the video stream's (a "timecode" makes MOV/MP4 write a timecode track); ``attachments``
    (file name, MIME type, bytes) are embedded files, as Matroska carries subtitle fonts.
    """
    width, height = size
    time_base = time_base or Fraction(1, int(rate) * 100)
    pts = list(pts) if pts is not None else [round(i / rate / time_base) for i in range(frames)]
    pictures = list(images) if images is not None else [pattern(i, width, height) for i in range(len(pts))]
    with av.open(str(path), mode="w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        out.metadata.update(tags or {})
        if chapters:
            ms = Fraction(1, 1000)
            out.set_chapters(
                [
                    {
                        "id": i + 1,
                        "start": round(a * 1000),
                        "end": round(b * 1000),
                        "time_base": ms,
                        "metadata": {"title": t},
                    }
                    for i, (a, b, t) in enumerate(chapters)
                ]
            )
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.metadata.update(video_tags or {})
        for name, mimetype, data in attachments or ():
            out.add_attachment(name, mimetype, data)
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        range_ = 2 if full_range else 1
        if transfer is not None:
            stream.codec_context.color_trc = transfer
        if primaries is not None:
            stream.codec_context.color_primaries = primaries
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if display_matrix is not None:
            stream.set_display_matrix(display_matrix)
        if matrix is not None:
            stream.codec_context.colorspace = matrix
            stream.codec_context.color_range = range_
        extra: list[tuple[av.container.InputContainer, av.stream.Stream, av.stream.Stream]] = []
        for source, kind in ((audio_from, "audio"), (subtitles, "subtitle")):
            if source is None:
                continue
            container = av.open(str(source))
            ins = next(s for s in container.streams if s.type == kind)
            extra.append((container, ins, out.add_stream_from_template(ins)))
            extra[-1][2].metadata["language"] = "fra"
        if cover is not None:
            art = out.add_stream("png")
            art.width, art.height, art.pix_fmt = 16, 16, "rgb24"
            art.disposition = av.stream.Disposition.attached_pic
            packet = av.Packet(cover)
            packet.stream, packet.pts, packet.dts = art, 0, 0
            out.mux(packet)
        for p, picture in zip(pts, pictures, strict=True):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            sws = {1: 1, 5: 5, 6: 5, 9: 9}.get(matrix or 6, 5)
            frame = frame.reformat(format=pix_fmt, dst_colorspace=sws, dst_color_range=range_)
            frame.pts, frame.time_base = p, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        for container, ins, outs in extra:
            for packet in container.demux(ins):
                if packet.dts is None:
                    continue
                packet.stream = outs
                out.mux(packet)
            container.close()
    return pictures


def make_tone(path: Path, codec: str, *, rate: int = 48000, seconds: float = 0.3, layout: str = "stereo") -> None:
    """A 440 Hz tone on every channel of ``layout`` encoded with ``codec`` into ``path`` (no video); Matroska
    leaves its channel order unnamed ("2 channels")."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        fmt = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        t = np.arange(int(rate * seconds)) / rate
        wave = np.tile((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (av.AudioLayout(layout).nb_channels, 1))
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        for converted in resampler.resample(frame):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))


def make_audio_only(path: Path, audio_from: Path) -> int:
    """Copy the first audio stream of ``audio_from`` into ``path`` (no video); returns the packet count."""
    count = 0
    with av.open(str(audio_from)) as src, av.open(str(path), mode="w") as out:
        ins = src.streams.audio[0]
        outs = out.add_stream_from_template(ins)
        for packet in src.demux(ins):
            if packet.dts is None:
                continue
            packet.stream = outs
            out.mux(packet)
            count += 1
    return count


def packets(path: Path, kind: str) -> list[bytes]:
    """Payloads of every packet of the first ``kind`` stream ("audio", "subtitle", "video")."""
    with av.open(str(path)) as c:
        stream = next(s for s in c.streams if s.type == kind)
        return [bytes(p) for p in c.demux(stream) if p.size]


def video_frames(path: Path, fmt: str = "rgb24") -> list[tuple[float, np.ndarray]]:
    """(time in seconds, H x W x 3 array in ``fmt``) of every decoded frame of ``path``, colour tags honoured."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [(float(f.pts * f.time_base), f.to_ndarray(format=fmt)) for f in c.decode(stream)]


def tiny_checkpoint(folder: Path, scale: int = 2) -> Path:
    """A tiny tamed ELAN saved as .safetensors (loads through the same path as real checkpoints)."""
    path = folder / f"tiny-x{scale}.safetensors"
    if not path.exists():
        save_safetensors(tiny_elan(scale), path)
    return path


def detail_checkpoint(folder: Path, scale: int = 2) -> Path:
    """:func:`conftest.detail_elan` saved as .safetensors: a tiny model whose output is a picture, for pixel checks
    whose thresholds the near-flat tamed model would pass with a shifted, stale or miscoloured frame."""
    path = folder / f"detail-x{scale}.safetensors"
    if not path.exists():
        save_safetensors(detail_elan(scale), path)
    return path
