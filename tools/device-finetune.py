"""Fine-tune one scale on a GPU until a deadline (a lent machine's time is fixed, its speed unknown beforehand).

Takes 40 steps (inside the 100-step warm-up, so the lr does not depend on the plan), times them, then resumes
with ``steps`` set so the cosine reaches 0 at the deadline. Run one process per scale, e.g. from the repo root:

    D=$(python3 -c "import time; print(time.time() + 400)")
    for s in 2 3 4; do OMP_NUM_THREADS=4 python3 tools/device-finetune.py --scale $s --deadline $D \\
        --out $OUT/x$s.pt --data T91 --data BSD200 > $OUT/log-x$s.txt 2>&1 & done; wait

The lent machines have PyTorch and Pillow but not PyAV, which training does not need. T91 and BSD200 (66 MB of
BMP/PNG) do not fit the 64 MiB upload: carry a lossless WebP copy (about 40 MB, the same pixels and file order) in
a git-ignored folder. The sixteenth session ran this with a 240 s deadline, seeds 82/83/84: about 300 ms per step
with three runs sharing one H100, the GPU 100 % busy.

The eighth session's x3 run was an earlier form of this: ``--degrade patch`` (the only mode then), seed 23,
and ``torch.backends.cudnn.benchmark`` on (which this leaves off).
"""

from __future__ import annotations

import argparse
import time

import torch

from elan_video.training.train import StepInfo, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, required=True)
    parser.add_argument("--deadline", type=float, required=True, help="Unix time by which the run must end.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--init", default=None, help="Default: the bundled elan-light-xS.")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--degrade", default="image")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=None, help="Default: 20 + scale.")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    # TF32 matmuls: the float32 training the GPU does fast; cuDNN convolutions already use it by default.
    torch.backends.cuda.matmul.allow_tf32 = True
    common = dict(
        scale=args.scale, out=args.out, batch=args.batch, patch=args.patch, degrade=args.degrade, lr=args.lr,
        schedule="cosine", warmup=100, ema_decay=0.998, save_every=100, fast_shift=True, device=args.device,
        seed=20 + args.scale if args.seed is None else args.seed,
    )  # fmt: skip
    stamps: list[float] = []
    start = time.time()
    train(args.data, steps=100_000, stop_at=40, init=args.init or f"elan-light-x{args.scale}",
          on_step=lambda _: stamps.append(time.time()), **common)  # fmt: skip
    per_step = (stamps[-1] - stamps[9]) / 30
    steps = 40 + max(10, int((args.deadline - time.time() - 15) / per_step))  # 15 s: reload and final save
    print(f"x{args.scale}: {per_step * 1000:.0f} ms/step, plan {steps} steps", flush=True)

    def log(info: StepInfo) -> None:
        if info.step % 100 == 0:
            elapsed = time.time() - start
            print(f"x{args.scale} step {info.step}/{steps} loss {info.loss:.3f} t {elapsed:.0f} s", flush=True)

    train(args.data, steps=steps, resume=True, on_step=log, **common)
    print(f"x{args.scale}: {steps} steps in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
