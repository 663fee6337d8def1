#!/usr/bin/env bash
# CUDA tests and timings on a lent GPU machine; run from the repository root there:
#   bash tools/device-check.sh [memory] [tests] [bench]   (all three when none is named)
# The lent machines have PyTorch but not PyAV. Carry its wheel in an ignored .whl/ folder, made here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl av==19.0.2 pillow==13.0.0 pillow-heif==1.8.1
# Logs go to $OUT (the device tool sets it; default out/device). Each step has its own time limit, so one
# that hangs costs its limit, not the loan: memory ~20 s, tests ~150 s, bench ~200 s on an H100 (2026-11-26).
set -u
OUT=${OUT:-out/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
python3 -c "import torch, av; print('torch', torch.__version__, 'av', av.__version__, torch.cuda.get_device_name())"
STEPS=" ${*:-memory tests bench} "
EV=(python3 -m elan_video)
if [[ $STEPS == *" memory "* ]]; then
# Peak CUDA memory per input pixel and feature channel of one call, whole frame and tiled, against what
# elan_video.model.memory.bytes_per_pixel_channel assumes when it decides to tile.
timeout 90 python3 - <<'PY' 2>&1 | tee "$OUT/memory.txt"
import numpy as np, torch, elan_video as ev
from elan_video.model.memory import bytes_per_pixel_channel
for precision in ("fp32", "bf16"):
    for (h, w), tile in (((1080, 1920), None), ((2160, 3840), 512)):
        up = ev.Upscaler("elan-light-x2", device="cuda", precision=precision, max_memory=1 << 45, tile=tile)
        image = np.zeros((h, w, 3), np.uint8)
        up(image)
        torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        base, held = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
        up(image)
        pixels = (tile or h) * (tile or w) * up.model.c_elan
        print(precision, f"{w}x{h}", f"tile {tile}", "bytes per pixel and channel: allocated",
              round((torch.cuda.max_memory_allocated() - base) / pixels, 1), "reserved",
              round((torch.cuda.max_memory_reserved() - held) / pixels, 1), "assumed",
              bytes_per_pixel_channel("cuda", precision))
PY
fi
if [[ $STEPS == *" tests "* ]]; then
# The CUDA-touching files first, so that a timeout cuts the least relevant ones.
# The CPU torch.compile test is left out: a fresh machine's first inductor build of C++ kernels ran past its
# 90 s there (2026-11-27); CI runs it, and the CUDA compile test here covers the backend on the GPU.
timeout 240 python3 -m pytest -q -rs -p no:cacheprovider --timeout 90 --durations 10 \
    --deselect tests/test_backends.py::test_compile_backend_equals_the_network \
    tests/test_backends.py tests/test_upscaler.py tests/test_upscaler_backend_precision.py tests/test_pipeline_cuda.py \
    tests/test_pipeline_memory.py tests/test_cli_video.py tests/test_bench.py \
    tests/test_arch.py tests/test_fuse.py tests/test_bundled.py tests/test_checkpoint.py tests/test_video.py \
    tests/test_image.py tests/test_animation.py tests/test_metrics.py tests/test_eval.py tests/test_train.py \
    >"$OUT/tests.log" 2>&1
echo "pytest exit $?"; grep -E "passed|failed|FAILED|Error" "$OUT/tests.log" | tail -15
fi
if [[ $STEPS == *" bench "* ]]; then
timeout 90 "${EV[@]}" bench --device cuda --size 960x540 --frames 10 --precision fp32 --precision bf16 --precision fp16 \
    --backend eager --backend torchscript 2>&1 | tee "$OUT/bench-540p.txt"
timeout 60 "${EV[@]}" bench --device cuda --size 960x540 --frames 5 --precision fp16 --video 2>&1 | tee "$OUT/bench-video.txt"
timeout 60 "${EV[@]}" bench --device cuda --size 1920x1080 --frames 5 --precision fp16 --precision bf16 2>&1 | tee "$OUT/bench-1080p.txt"
timeout 120 "${EV[@]}" bench --device cuda --size 960x540 --frames 10 --precision fp16 --backend compile --no-reference 2>&1 \
    | tee "$OUT/bench-compile.txt"
fi
