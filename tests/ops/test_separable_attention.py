"""``torch.ops.oneformer.separable_value_attention``: the CPU kernel of attention to a map of row + column values
(float32 inference) against the formula, as a custom operator (opcheck, fake tensors, compiled graphs) and its
argument checks."""
import re

import pytest
import torch
import torch.nn.functional as F

from oneformer.ops.separable_attention import separable_kernel_applies, separable_value_attention
from oneformer.ops.window_attention import window_kernel_available

pytestmark = pytest.mark.skipif(not window_kernel_available(), reason="oneformer.ops._C is not built")

CASES = [  # (B, heads, Lq, d, H, W)
    (1, 8, 249, 32, 16, 24),  # OneFormer's class transformer (at a small map); more queries than one block
    (2, 3, 37, 16, 7, 9),  # widths and head sizes that are not multiples of a vector
    (1, 2, 5, 8, 1, 13),  # one row
    (1, 1, 3, 4, 11, 1),  # one column
]


def make_case(B, heads, Lq, d, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, heads, Lq, d, generator=g)
    k = torch.randn(B, heads, H * W, d, generator=g) * 2
    return q, k.transpose(-1, -2).contiguous(), torch.randn(heads, H, d, generator=g), torch.randn(heads, W, d,
                                                                                                  generator=g)


def formula(q, kt, vy, vx):
    """softmax(q k^T) v with v[y * W + x] = vy[y] + vx[x] (float64)."""
    heads, H, d = vy.shape
    v = (vy.double()[:, :, None] + vx.double()[:, None]).reshape(heads, -1, d)
    return F.scaled_dot_product_attention(q.double(), kt.double().transpose(-1, -2), v.expand(q.shape[0], -1, -1, -1),
                                          scale=1.0)


@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_the_formula(case):
    args = make_case(*case)
    got = separable_value_attention(*args)
    assert got.shape == args[0].shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), formula(*args), rtol=1e-4, atol=5e-5)


def test_large_scores_stay_finite():
    # the running maximum keeps exp() in range where the scores themselves would overflow
    q, kt, vy, vx = make_case(1, 2, 9, 8, 5, 6)
    q = q * 40
    got = separable_value_attention(q, kt, vy, vx)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), formula(q, kt, vy, vx), rtol=1e-4, atol=1e-4)


def test_opcheck():
    torch.library.opcheck(torch.ops.oneformer.separable_value_attention.default, make_case(*CASES[1]))


def test_compiles_without_graph_breaks():
    args = make_case(*CASES[1])
    torch._dynamo.reset()
    compiled = torch.compile(separable_value_attention, fullgraph=True, dynamic=True, backend="eager")
    torch.testing.assert_close(compiled(*args), separable_value_attention(*args))


def test_backward_raises_a_clear_error():
    q, kt, vy, vx = make_case(*CASES[1])
    out = separable_value_attention(q.requires_grad_(), kt, vy, vx)
    with pytest.raises(RuntimeError, match="inference kernel"):
        out.sum().backward()


@pytest.mark.parametrize("index,replace,words", [
    (0, lambda t: t[0], "q must be (B, heads, Lq, d)"),
    (1, lambda t: t[..., :-1], "kt must be (B, heads, d, H * W) = (2, 3, 16, 63)"),
    (2, lambda t: t[:2], "vy must be (heads, H, d) = (3, H, 16)"),
    (3, lambda t: t[..., :-1], "vx must be (heads, W, d) = (3, W, 16)"),
    (3, lambda t: t[:, :0], "the map is empty"),
    (0, lambda t: t.double(), "float32 only"),
])
def test_bad_arguments_name_the_problem(index, replace, words):
    args = list(make_case(*CASES[1]))
    args[index] = replace(args[index])
    with pytest.raises(RuntimeError, match=re.escape(words)):
        separable_value_attention(*args)


def test_kernel_applies_only_to_float32_cpu_inference():
    x = torch.zeros(2, 3)
    with torch.no_grad():
        assert separable_kernel_applies(x, training=False)
        assert not separable_kernel_applies(x, training=True)
        assert not separable_kernel_applies(x.double(), training=False)
    assert not separable_kernel_applies(x, training=False)  # autograd on
