#!/usr/bin/env bash
# CUDA tests and timings on a lent GPU machine; run from the repository root there: bash tools/device-check.sh
# The lent machines have PyTorch but not PyAV. Carry its wheel in an ignored .whl/ folder, made here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl av==19.0.2
# Logs go to $OUT (the device tool sets it; default out/device). Each step has its own time limit, so one
# that hangs costs its limit, not the loan: about 6 minutes in all on an H100 (2026-11-26).
set -u
OUT=${OUT:-out/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
python3 -c "import torch, av; print('torch', torch.__version__, 'av', av.__version__, torch.cuda.get_device_name())"
timeout 180 python3 -m pytest -q -rs -p no:cacheprovider --ignore tests/test_vselan.py tests >"$OUT/tests.log" 2>&1
echo "pytest exit $?"; tail -3 "$OUT/tests.log"
EV=(python3 -m elan_video)
timeout 90 "${EV[@]}" bench --device cuda --size 960x540 --frames 10 --precision fp32 --precision bf16 --precision fp16 \
    --backend eager --backend torchscript 2>&1 | tee "$OUT/bench-540p.txt"
timeout 60 "${EV[@]}" bench --device cuda --size 960x540 --frames 5 --precision fp16 --video 2>&1 | tee "$OUT/bench-video.txt"
timeout 60 "${EV[@]}" bench --device cuda --size 1920x1080 --frames 5 --precision fp16 --precision bf16 2>&1 | tee "$OUT/bench-1080p.txt"
timeout 120 "${EV[@]}" bench --device cuda --size 960x540 --frames 10 --precision fp16 --backend compile --no-reference 2>&1 \
    | tee "$OUT/bench-compile.txt"
# Peak CUDA memory per input pixel and feature channel of one whole-frame call, against the 80 bytes that
# elan_video.memory assumes (measured on a CPU) when it decides to tile.
timeout 60 python3 - <<'PY' 2>&1 | tee "$OUT/memory.txt"
import numpy as np, torch, elan_video as ev
for precision in ("fp32", "bf16"):
    up = ev.Upscaler("elan-light-x2", device="cuda", precision=precision, max_memory=1 << 45)
    image = np.zeros((1080, 1920, 3), np.uint8)
    up(image)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    up(image)
    extra = torch.cuda.max_memory_allocated() - base
    print(precision, "bytes per pixel and channel:", round(extra / (1080 * 1920 * up.model.c_elan), 1))
PY
