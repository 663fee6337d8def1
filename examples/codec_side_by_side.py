"""Clean weights vs codec-aware weights on a compressed frame: writes out/codec_side_by_side.png.

A 256x180 window pans over scikit-image's astronaut photo (the demo's first picture, reduced to half size by the
MATLAB bicubic), six frames coded by x264 at CRF 28 (4:2:0, one keyframe) and decoded, as a web video would arrive.
The last (P/B) frame is upscaled x2 by bicubic, by the clean weights, by the -video weights and by the
-video-strong weights; a crop of each is enlarged 2x and the four are joined left to right.

Usage: python examples/codec_side_by_side.py [--video-model elan-light-x2-video|PATH]
    [--strong-model elan-light-x2-video-strong|PATH] [--crf 28] [--out out]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import elan_video as ev
from elan_video.training.data import bicubic_downscale, bicubic_upscale
from elan_video.training.degrade import h264_roundtrip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video-model", default="elan-light-x2-video", help="bundled name or checkpoint path")
    parser.add_argument("--strong-model", default="elan-light-x2-video-strong", help="bundled name or checkpoint path")
    parser.add_argument("--crf", type=int, default=28)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args(argv)
    from skimage import data

    low = bicubic_downscale(data.astronaut(), 2)  # 256x256
    pan = [np.ascontiguousarray(low[40 + i : 220 + i, :256]) for i in range(6)]  # 256x180, 1 px a frame
    frame = h264_roundtrip(pan, crf=args.crf)[-1]
    panels = {"bicubic": bicubic_upscale(frame, 2)}
    models = {"clean weights": "elan-light-x2", "-video": args.video_model, "-video-strong": args.strong_model}
    for name, model in models.items():
        panels[name] = ev.upscale_image(model, frame, precision="fp32")
    top, left, h, w = 40, 60, 140, 180  # output pixels
    tiles = []
    for name, image in panels.items():
        crop = Image.fromarray(image[top : top + h, left : left + w]).resize((w * 2, h * 2), Image.NEAREST)
        ImageDraw.Draw(crop).text((8, 8), f"{name} (x264 CRF {args.crf})", fill=(255, 255, 0))
        tiles.append(np.asarray(crop))
    gap = np.full((h * 2, 6, 3), 255, np.uint8)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "codec_side_by_side.png"
    joined = [part for tile in tiles for part in (gap, tile)][1:]
    Image.fromarray(np.concatenate(joined, axis=1)).save(target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
