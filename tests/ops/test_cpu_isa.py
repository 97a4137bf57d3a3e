"""The CPU kernels' narrower code paths: each kernel is compiled for AVX-512, AVX2 and the baseline x86-64 target and
runs the widest one the CPU has (oneformer/ops/csrc/cpu/vec.h). ONEFORMER_CPU_ISA caps that choice, so a machine
with AVX-512 also checks the others, each in a fresh process (the choice is made once per process)."""
import os
import subprocess
import sys

import pytest

from oneformer.ops import extension_status

pytestmark = pytest.mark.skipif(not extension_status()["built"], reason="oneformer.ops._C is not built")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHECKS = """
import torch
from oneformer.ops import ms_deform_attn, ms_deform_attn_pytorch
from oneformer.ops.window_attention import swin_window_attention
from tests.ops.test_mask_owners import RESIZED_CASES, assert_resized_kernel_matches, owners_with_torch_ops, run_kernel
from tests.ops.test_ms_deform_attn import CASES as MSDA_CASES, make_inputs
from oneformer.ops.separable_attention import separable_value_attention
from tests.ops import test_separable_attention as SEP
from tests.ops.test_window_attention import CASES, formula, make_case

for case in CASES:
    args = make_case(**case)
    torch.testing.assert_close(swin_window_attention(**args).double(), formula(**args), rtol=1e-5, atol=1e-5)
for weighted in (False, True):
    probs, scores = torch.rand(7, 29, 37), torch.rand(7)
    probs[4] = probs[2]
    scores[4] = scores[2]
    value, arg, own, area = owners_with_torch_ops(probs, scores, weighted)
    best, owner, own_k, area_k = run_kernel(probs, scores, weighted, chunk=3)
    assert torch.equal(best, value) and torch.equal(owner.long(), arg) and torch.equal(own_k, own)
    assert torch.equal(area_k, area)
for case in SEP.CASES:
    args = SEP.make_case(*case)
    torch.testing.assert_close(separable_value_attention(*args).double(), SEP.formula(*args), rtol=1e-4, atol=5e-5)
for n, h, w, H, W in RESIZED_CASES:
    for original in (True, False):
        assert_resized_kernel_matches(torch.randn(n, h, w) * 4, torch.rand(n), (H, W), original)
for name, (N, shapes, Lq, M, D, P) in MSDA_CASES.items():
    value, shapes_t, starts, loc, w = make_inputs(N, shapes, Lq, M, D, P, dtype=torch.float32)
    torch.testing.assert_close(ms_deform_attn(value, shapes_t, starts, loc, w, impl="cpp"),
                               ms_deform_attn_pytorch(value, shapes_t, loc, w), rtol=2e-5, atol=2e-5)
print("checked")
"""


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_narrower_instruction_sets_give_the_same_results(isa):
    env = dict(os.environ, ONEFORMER_CPU_ISA=isa, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", CHECKS], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "checked" in run.stdout, run.stderr[-3000:]
