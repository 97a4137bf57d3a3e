"""``torch.ops.oneformer.ms_deform_attn`` as a PyTorch custom operator: schema, fake implementation and autograd
registration (``torch.library.opcheck``), and what compiled graphs see of it."""
import pytest
import torch

from oneformer.ops import extension_status, ms_deform_attn

from .test_ms_deform_attn import make_inputs

HAS_EXT = extension_status()["built"]
pytestmark = pytest.mark.skipif(not HAS_EXT, reason="oneformer.ops._C is not built")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and extension_status()["cuda"] else [])
# two levels (one of them odd-sized), points partly outside the maps
CASES = [dict(N=2, shapes=[(5, 4), (3, 2)], Lq=6, M=2, D=4, P=3), dict(N=1, shapes=[(4, 4)], Lq=3, M=1, D=8, P=2)]


def op_args(case, dtype, device, requires_grad):
    value, shapes, starts, loc, w = make_inputs(case["N"], case["shapes"], case["Lq"], case["M"], case["D"],
                                                case["P"], dtype=dtype, device=device)
    if requires_grad:
        for t in (value, loc, w):
            t.requires_grad_()
    return value, shapes, starts, loc, w


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_opcheck_forward(device, dtype, requires_grad, case):
    # schema (no hidden mutation or aliasing), fake tensor propagation, autograd registration, AOT dispatch
    # (static and dynamic shapes)
    args = op_args(CASES[case], dtype, device, requires_grad)
    torch.library.opcheck(torch.ops.oneformer.ms_deform_attn.default, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_backward(device, dtype):
    value, shapes, starts, loc, w = op_args(CASES[0], dtype, device, False)
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3], dtype=dtype, device=device)
    torch.library.opcheck(torch.ops.oneformer.ms_deform_attn_backward.default, (value, shapes, starts, loc, w, grad))


@pytest.mark.cuda
@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a visible GPU and the CUDA build of oneformer.ops._C")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_opcheck_cuda_reduced_precision(dtype, case):
    # the CUDA kernels take float16/bfloat16 values (float32 locations) directly; on the CPU the Python entry computes
    # them in float32, so the operator itself is checked in these dtypes on CUDA only
    args = op_args(CASES[case], dtype, "cuda", False)
    torch.library.opcheck(torch.ops.oneformer.ms_deform_attn.default, args)
    value, shapes, starts, loc, w = args
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3], device="cuda").to(dtype)
    torch.library.opcheck(torch.ops.oneformer.ms_deform_attn_backward.default, (value, shapes, starts, loc, w, grad))


def test_operator_gradients_match_the_reference():
    # the registered autograd formula, checked numerically in float64
    args = op_args(CASES[0], torch.float64, "cpu", True)
    assert torch.autograd.gradcheck(lambda v, l, w: torch.ops.oneformer.ms_deform_attn(v, args[1], args[2], l, w),
                                    (args[0], args[3], args[4]))


def test_fake_tensor_shapes_follow_the_inputs():
    from torch._subclasses.fake_tensor import FakeTensorMode

    value, shapes, starts, loc, w = op_args(CASES[0], torch.float32, "cpu", False)
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (value, shapes, starts, loc, w)]
        out = torch.ops.oneformer.ms_deform_attn(*fake)
        grads = torch.ops.oneformer.ms_deform_attn_backward(*fake, out)
    assert out.shape == (2, 6, 8) and out.dtype == torch.float32
    assert [g.shape for g in grads] == [value.shape, loc.shape, w.shape]


def test_entry_point_compiles_without_graph_breaks():
    # the Python entry (checks, dtype rules) and the operator trace into one graph with dynamic shapes
    value, shapes, starts, loc, w = op_args(CASES[0], torch.float32, "cpu", False)
    torch._dynamo.reset()
    compiled = torch.compile(ms_deform_attn, fullgraph=True, dynamic=True, backend="eager")
    torch.testing.assert_close(compiled(value, shapes, starts, loc, w), ms_deform_attn(value, shapes, starts, loc, w))
    explanation = torch._dynamo.explain(ms_deform_attn)(value, shapes, starts, loc, w)
    assert explanation.graph_break_count == 0
    ops = [n.target for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert torch.ops.oneformer.ms_deform_attn.default in ops or torch.ops.oneformer.ms_deform_attn in ops
