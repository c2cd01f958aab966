#!/usr/bin/env bash
# The project's one GPU check: run it once on a lent GPU and append its output to benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine (about 5 minutes on an H200)
#   bash benchmarks/gpu_check.sh cpu        # tiny sizes on the CPU, to keep the script working
#
# It times MAE training steps, mimsdk against transformers' ViTMAEForPreTraining holding the same weights,
# alternating round by round (benchmarks/bench_train.py), in bf16 on the GPU: ViT-B/16 at 224² with the
# whole decoder and with partial decoding (50 % and 25 % of the masked tokens), then ViT-L/16.
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cuda}"
python3 -c "import mimsdk" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
export PYTHONUNBUFFERED=1
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__)"
    python3 benchmarks/bench_train.py --device cuda --dtype bf16 --sizes base --batch 64 --steps 20 --warmup 5 \
        --rounds 3 --decoder-fractions 0.5,0.25
    python3 benchmarks/bench_train.py --device cuda --dtype bf16 --sizes large --batch 64 --steps 10 --warmup 3 \
        --rounds 3 --no-full-encoding
else
    python3 benchmarks/bench_train.py --device cpu --sizes tiny --batch 4 --steps 1 --warmup 1 --rounds 1 \
        --decoder-fractions 0.5 --min-cpu-share 0
fi
