#!/bin/sh
# Every GPU check of the project as one prepared run (tools/gpu_checks.py: its docstring lists the steps):
#   sh tools/gpu_checks.sh --part 1     build the op for the visible GPU, CUDA tests, inference at batch 1 and 8
#   sh tools/gpu_checks.sh --part 2     training with the 24 GB recipe (3 checkpointing variants), DiNAT, ConvNeXt
#   sh tools/gpu_checks.sh --dry-run    the same steps on the CPU (bundled synthetic model, tiny sizes)
# On a bare GPU machine (nothing downloadable), the wheels that `make gpu-wheels` put in .whl/gpu312 are installed
# first (carry that folder). One summary line per step; full logs in build/gpu_checks/. PYTHON picks the interpreter.
cd "$(dirname "$0")/.." || exit 2
exec "${PYTHON:-python3}" tools/gpu_checks.py "$@"
