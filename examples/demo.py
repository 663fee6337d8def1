"""The README's demo (`make demo`): upscale a short clip x2 and write a bicubic-vs-ELAN comparison picture.

The clip is made on the spot from photographs that scikit-image ships (astronaut, coffee, chelsea): they are
joined into a strip, reduced to half size as a low-resolution source, and a 320x180 window pans slowly across it.
That clip goes through the real pipeline (`elan_video.upscale_video`, the same code as `elan-video IN OUT`)
with the bundled ELAN-light x2 weights. Outputs in ./out/:

    demo_input.mp4          the 320x180 source clip
    demo_x2.mp4             the 640x360 result
    demo_side_by_side.png   one frame, bicubic (left) vs ELAN (right), cropped and enlarged

Usage: python examples/demo.py [--model elan-light-x2|PATH] [--frames 24] [--out out]
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

import elan_video as ev
from elan_video.media.video import read_frames

WIDTH, HEIGHT, RATE, STEP = 320, 180, 24, 5  # pixels the window moves per frame


def photo_strip() -> np.ndarray:
    """scikit-image's bundled photographs side by side at 360 px height (H x W x 3 uint8)."""
    from skimage import data

    pictures = []
    for picture in (data.astronaut(), data.coffee(), data.chelsea()):
        image = Image.fromarray(picture)
        pictures.append(np.asarray(image.resize((round(image.width * 360 / image.height), 360), Image.LANCZOS)))
    return np.concatenate(pictures, axis=1)


def make_clip(path: Path, frames: int) -> None:
    """A slow horizontal pan (with a gentle vertical drift) over the half-size photo strip, H.264 at crf 12."""
    strip = Image.fromarray(photo_strip())
    low = np.asarray(strip.resize((strip.width // 2, strip.height // 2), Image.BICUBIC))
    span = low.shape[1] - WIDTH
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(RATE), options={"crf": "12", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            left = min(span, i * STEP)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(low[:HEIGHT, left : left + WIDTH]), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def side_by_side(source: Path, result: Path, target: Path, *, index: int) -> None:
    """Crop the same region of bicubic x2 and ELAN x2 of frame ``index``, enlarge 2x (nearest), label, join."""
    low = next(f.image for f in read_frames(source) if f.index == index)
    elan = next(f.image for f in read_frames(result) if f.index == index)
    bicubic = np.asarray(Image.fromarray(low).resize((low.shape[1] * 2, low.shape[0] * 2), Image.BICUBIC))
    top, left, h, w = 80, 200, 180, 240  # in output pixels
    panels = []
    for name, image in (("bicubic x2", bicubic), ("ELAN x2", elan)):
        crop = Image.fromarray(image[top : top + h, left : left + w]).resize((w * 2, h * 2), Image.NEAREST)
        ImageDraw.Draw(crop).text((8, 8), name, fill=(255, 255, 0))
        panels.append(np.asarray(crop))
    gap = np.full((h * 2, 6, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1)).save(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="elan-light-x2", help="bundled name or checkpoint path")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    source, result = args.out / "demo_input.mp4", args.out / "demo_x2.mp4"
    make_clip(source, args.frames)
    print(f"made {source}: {args.frames} frames {WIDTH}x{HEIGHT} panning across scikit-image's photographs")

    from tqdm import tqdm

    try:
        upscaler = ev.Upscaler(args.model, scale=2)
    except ev.ElanVideoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    with tqdm(total=args.frames, unit="frame", desc="upscaling") as bar:
        summary = ev.upscale_video(
            source, result, scale=2, model=upscaler, overwrite=True, progress=lambda d, _: bar.update(d - bar.n)
        )
    w, h = summary.output_size
    print(f"wrote {result}: {summary.frames} frames at {w}x{h}, {summary.seconds:.1f} s ({summary.fps:.2f} fps)")
    picture = args.out / "demo_side_by_side.png"
    side_by_side(source, result, picture, index=args.frames // 2)
    print(f"wrote {picture}: bicubic (left) vs ELAN (right), one frame, crop enlarged 2x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
