#!/bin/sh
# Build the op with its CUDA kernels and run every GPU check: CUDA tests, the op benchmark on all dtypes and the
# GPU inference benchmark. Usage: sh tools/gpu_checks.sh [LOG_DIR]   (needs a visible GPU and a CUDA toolkit)
set -u
LOG="${1:-build/gpu_checks}"
mkdir -p "$LOG"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
step() { echo "=== $1 ($(date +%T))"; }
step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
step "build oneformer.ops._C"
MAX_JOBS="${MAX_JOBS:-16}" $PY setup.py -q build_ext --inplace > "$LOG/build.log" 2>&1 || { tail -40 "$LOG/build.log"; exit 1; }
$PY -c "from oneformer.ops import extension_status as s; print(s())"
step "CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/ops tests/test_oneformer_model.py -k "cuda or CUDA" -rfs --tb=short \
    > "$LOG/pytest_cuda.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/pytest_cuda.txt"
grep -E "^E  " "$LOG/pytest_cuda.txt" | head -20
step "op benchmark (all CUDA dtypes)"
$PY tools/benchmark_ms_deform_attn.py --device cuda --runs 11 2>&1 | tee "$LOG/bench_op_cuda.txt"
if [ -f tools/benchmark_inference.py ]; then
    step "inference benchmark (GPU)"
    $PY tools/benchmark_inference.py --device cuda 2>&1 | grep -v -E "shards|Loading weights" | tail -12 \
        | tee "$LOG/bench_inference_cuda.txt"
    step "inference benchmark (GPU, bf16 autocast, pixel decoder following autocast)"
    $PY tools/benchmark_inference.py --device cuda --precision bf16 --no-hf \
        MODEL.SEM_SEG_HEAD.PIXEL_DECODER_PRECISION autocast 2>&1 | tail -6 | tee "$LOG/bench_inference_cuda_bf16.txt"
fi
step "done"
