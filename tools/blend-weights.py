"""Network interpolation: (1 - ALPHA) x FIRST + ALPHA x SECOND, tensor by tensor, written as .safetensors.

    python tools/blend-weights.py elan-light-x2 ckpt/elan-light-x2-video-c.safetensors 0.8 OUT.safetensors
    python tools/blend-weights.py elan-light-x2 ckpt/elan-light-x2-video-c.safetensors 0.4 OUT.safetensors --to 1

With ``--to``, ALPHA is the head's and rises linearly with depth to the tail's (each body block at its place).

Both must be ELAN checkpoints of one configuration, the second fine-tuned from the first (so that the two lie
in one basin and the blend is a network between them: Wang et al., "Deep Network Interpolation", CVPR 2019).
Floating-point tensors are blended (BatchNorm running statistics too); integer ones come from FIRST. The output
keeps SECOND's metadata (its degradation recipe) and records the blend under "blend".
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from safetensors import safe_open


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("alpha", type=float)
    parser.add_argument("out", type=Path)
    parser.add_argument("--to", type=float, help="the tail's alpha (default: ALPHA for every tensor)")
    args = parser.parse_args()
    last = args.alpha if args.to is None else args.to
    if not (0 <= args.alpha <= 1 and 0 <= last <= 1):
        parser.error(f"alpha must be in 0..1, got {args.alpha} and {last}")

    from elan_video.model.checkpoint import load_model, save_safetensors

    first, second = load_model(args.first), load_model(args.second)
    if first.config() != second.config():
        parser.error(f"the configurations differ: {first.config()} and {second.config()}")
    theirs, depth = second.state_dict(), len(first.body) + 1

    def alpha(name: str) -> float:
        """Head 0, body block i at i + 1, tail (and the mean shifts, equal in both) at the end."""
        block = re.match(r"body\.(\d+)\.", name)
        place = 0 if name.startswith("head.") else int(block.group(1)) + 1 if block else depth
        return args.alpha + (last - args.alpha) * place / depth

    blended = {
        name: (1 - alpha(name)) * mine + alpha(name) * theirs[name] if mine.is_floating_point() else mine
        for name, mine in first.state_dict().items()
    }
    first.load_state_dict(blended)
    metadata: dict[str, str] = {}
    if str(args.second).endswith(".safetensors"):
        with safe_open(args.second, "pt") as f:
            metadata = {k: v for k, v in (f.metadata() or {}).items() if k not in ("config", "format")}
    blend = {"first": Path(args.first).name, "second": Path(args.second).name, "alpha": args.alpha}
    if args.to is not None:
        blend["alpha_tail"] = args.to
    save_safetensors(first, args.out, metadata={**metadata, "blend": json.dumps(blend)})
    share = f"{args.alpha:g}" if args.to is None else f"{args.alpha:g}..{args.to:g}"
    print(f"{args.out}: {args.first} + {share} x ({args.second} - {args.first})")


if __name__ == "__main__":
    main()
