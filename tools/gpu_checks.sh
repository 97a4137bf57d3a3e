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
$PY -m pytest -q -p no:cacheprovider tests/ops tests/test_oneformer_model.py -k "cuda or CUDA" -rs 2>&1 | tail -15
step "op benchmark (all CUDA dtypes)"
$PY tools/benchmark_ms_deform_attn.py --device cuda --runs 11 2>&1 | tee "$LOG/bench_op_cuda.txt"
if [ -f tools/benchmark_inference.py ]; then
    step "inference benchmark (GPU)"
    $PY tools/benchmark_inference.py --device cuda 2>&1 | tail -40 | tee "$LOG/bench_inference_cuda.txt"
fi
step "done"
