"""Multi-scale deformable attention: compiled kernels against the PyTorch reference, gradients, dispatch, errors."""
import math
import warnings

import pytest
import torch

import oneformer.ops.functional as F_msda
from oneformer.ops import MSDeformAttn, extension_status, ms_deform_attn, ms_deform_attn_pytorch

HAS_EXT = extension_status()["built"]
HAS_CUDA = torch.cuda.is_available() and extension_status()["cuda"]
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="oneformer.ops._C is not built")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a visible GPU and the CUDA build of oneformer.ops._C")


def make_inputs(N, shapes, Lq, M, D, P, dtype=torch.float64, device="cpu", spread=(-0.15, 1.15), seed=0):
    """Random inputs; sampling locations cover [spread[0], spread[1]], i.e. some points lie outside the map."""
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    level_start_index = torch.cat([spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]])
    S = int(spatial_shapes.prod(1).sum())
    L = len(shapes)
    value = torch.randn(N, S, M, D, generator=g, dtype=torch.float64)
    lo, hi = spread
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=torch.float64) * (hi - lo) + lo
    w = torch.rand(N, Lq, M, L, P, generator=g, dtype=torch.float64) + 1e-3
    w = w / w.sum((-1, -2), keepdim=True)
    loc_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return (value.to(device, dtype), spatial_shapes.to(device), level_start_index.to(device),
            loc.to(device, loc_dtype), w.to(device, loc_dtype))


def run_with_grads(impl, inputs, grad_seed=1, im2col_step=64):
    """Output and (grad value, grad loc, grad weights) for a fixed random output gradient."""
    value, shapes, starts, loc, w = (t.detach().clone() for t in inputs)
    value.requires_grad_()
    loc.requires_grad_()
    w.requires_grad_()
    out = ms_deform_attn(value, shapes, starts, loc, w, im2col_step=im2col_step, impl=impl)
    g = torch.Generator().manual_seed(grad_seed)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype)
    out.backward(grad)
    return out.detach(), value.grad, loc.grad, w.grad


CASES = {
    # name: (N, shapes, Lq, M, D, P)
    "three_levels": (2, [(9, 7), (5, 4), (2, 3)], 13, 2, 4, 3),
    "single_level": (1, [(6, 5)], 7, 3, 8, 4),
    "one_pixel_levels": (2, [(1, 1), (1, 2)], 5, 1, 3, 2),
    "odd_channels": (1, [(4, 6), (2, 3)], 9, 2, 5, 1),
    "batch_over_im2col_step": (5, [(5, 5), (3, 3)], 6, 2, 4, 2),
    "zero_queries": (2, [(4, 4), (2, 2)], 0, 2, 4, 2),
}


@needs_ext
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_kernel_matches_reference(case, dtype, tol):
    N, shapes, Lq, M, D, P = CASES[case]
    inputs = make_inputs(N, shapes, Lq, M, D, P, dtype=dtype)
    ours = run_with_grads("cpp", inputs, im2col_step=2)
    ref = run_with_grads("pytorch", inputs)
    assert ours[0].shape == (N, Lq, M * D)
    assert ours[0].dtype == dtype
    for name, a, b in zip(("output", "grad_value", "grad_loc", "grad_weights"), ours, ref):
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        assert torch.allclose(a, b, rtol=0, atol=tol * scale), f"{name}: max diff {(a - b).abs().max()}"


@needs_ext
def test_points_outside_contribute_nothing():
    value, shapes, starts, loc, w = make_inputs(1, [(4, 4)], 3, 1, 2, 2)
    loc_out = loc.clone()
    loc_out[..., 0] = -0.3  # x < -0.5 pixel: all four corners are off the map
    out = ms_deform_attn(value, shapes, starts, loc_out, w, impl="cpp")
    assert torch.equal(out, torch.zeros_like(out))
    # a point exactly at a pixel centre returns that pixel
    loc_c = torch.full_like(loc, 0.5 / 4)
    w1 = torch.zeros_like(w)
    w1[..., 0] = 1.0
    out = ms_deform_attn(value, shapes, starts, loc_c, w1, impl="cpp")
    assert torch.allclose(out[0, :, :], value[0, 0, 0].expand(3, 2))


@needs_ext
def test_cpu_gradcheck_float64():
    value, shapes, starts, loc, w = make_inputs(2, [(4, 3), (2, 2)], 3, 2, 3, 2, spread=(0.05, 0.95))
    value.requires_grad_()
    loc.requires_grad_()
    w.requires_grad_()

    def fn(v, l_, a):
        return ms_deform_attn(v, shapes, starts, l_, a, impl="cpp")

    assert torch.autograd.gradcheck(fn, (value, loc, w), eps=1e-6, atol=1e-5)


@needs_ext
def test_cpu_result_independent_of_thread_count():
    inputs = make_inputs(2, [(16, 16), (8, 8), (4, 4)], 50, 4, 8, 4, dtype=torch.float32)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_with_grads("cpp", inputs)
        torch.set_num_threads(2)
        two = run_with_grads("cpp", inputs)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


@needs_ext
def test_non_contiguous_inputs():
    value, shapes, starts, loc, w = make_inputs(2, [(5, 4), (3, 2)], 6, 2, 4, 3)
    ref = ms_deform_attn_pytorch(value, shapes, loc, w)
    # same values, other memory layouts
    value_nc = value.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    loc_nc = loc.transpose(1, 2).contiguous().transpose(1, 2)
    w_nc = w.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (value_nc.is_contiguous() or loc_nc.is_contiguous() or w_nc.is_contiguous())
    out = ms_deform_attn(value_nc, shapes, starts, loc_nc, w_nc, impl="cpp")
    assert torch.allclose(out, ref, atol=1e-12)


@needs_ext
def test_cpu_autocast_and_reduced_precision():
    value, shapes, starts, loc, w = make_inputs(1, [(6, 6), (3, 3)], 8, 2, 4, 2, dtype=torch.float32)
    ref = ms_deform_attn_pytorch(value, shapes, loc, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ms_deform_attn(value.bfloat16(), shapes, starts, loc.bfloat16(), w, impl="cpp")
    # locations and weights run in float32 under autocast; only value was rounded to bfloat16
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=3e-2)
    # outside autocast: a half value with float32 locations is computed in float32, returned in half
    out_h = ms_deform_attn(value.half(), shapes, starts, loc, w, impl="cpp")
    assert out_h.dtype == torch.float16
    assert torch.allclose(out_h.float(), ref, atol=5e-3)


def test_reference_zero_queries_and_errors_without_extension():
    value, shapes, starts, loc, w = make_inputs(2, [(4, 4)], 0, 2, 4, 2)
    out = ms_deform_attn(value, shapes, starts, loc, w, impl="pytorch")
    assert out.shape == (2, 0, 8)


@pytest.mark.parametrize(
    "mutate,exc,words",
    [
        (lambda a: a.update(value=a["value"][..., 0]), ValueError, "value must be 4-D"),
        (lambda a: a.update(value=a["value"].long()), TypeError, "value must be a floating-point"),
        (lambda a: a.update(spatial_shapes=a["spatial_shapes"].float()), TypeError, "spatial_shapes must be an integer"),
        (lambda a: a.update(spatial_shapes=a["spatial_shapes"][:1]), ValueError, "level_start_index must have L=1"),
        (lambda a: a.update(level_start_index=a["level_start_index"] + 1), ValueError, "level_start_index must be [0, 16]"),
        (lambda a: a.update(value=a["value"][:, :-1]), ValueError, "value has S=19 positions"),
        (lambda a: a.update(sampling_locations=a["sampling_locations"][:, :, :1]), ValueError, "sampling_locations must be (N=2"),
        (lambda a: a.update(attention_weights=a["attention_weights"][..., :1]), ValueError, "attention_weights must be (N, Lq, M, L, P)"),
        (lambda a: a.update(attention_weights=a["attention_weights"].float()), TypeError, "must have the same dtype"),
        (lambda a: a.update(sampling_locations=a["sampling_locations"].float(),
                            attention_weights=a["attention_weights"].float()), TypeError, "must match value's dtype"),
        (lambda a: a.update(im2col_step=0), ValueError, "im2col_step must be a positive int"),
        (lambda a: a.update(impl="fast"), ValueError, "impl must be one of"),
        (lambda a: a.update(sampling_locations=a["sampling_locations"].numpy()), TypeError, "sampling_locations must be a torch.Tensor"),
    ],
)
def test_bad_arguments_name_the_problem(mutate, exc, words):
    value, shapes, starts, loc, w = make_inputs(2, [(4, 4), (2, 2)], 3, 2, 4, 2)
    args = dict(value=value, spatial_shapes=shapes, level_start_index=starts, sampling_locations=loc,
                attention_weights=w, im2col_step=64, impl="pytorch")
    mutate(args)
    with pytest.raises(exc) as info:
        ms_deform_attn(**args)
    assert words in str(info.value)


@needs_ext
def test_operator_rejects_level_layout_outside_value():
    # the operator itself (what compiled and exported graphs call) checks the layout, not only the Python entry
    value, shapes, starts, loc, w = make_inputs(1, [(4, 4), (2, 2)], 3, 2, 4, 2)
    with pytest.raises(RuntimeError, match="exceeds value's 20 positions"):
        torch.ops.oneformer.ms_deform_attn(value, shapes, starts + 2, loc, w)
    with pytest.raises(RuntimeError, match="grad_output must be"):
        torch.ops.oneformer.ms_deform_attn_backward(value, shapes, starts, loc, w,
                                                   torch.zeros(1, 3, 7, dtype=value.dtype))


def test_env_var_forces_implementation(monkeypatch):
    monkeypatch.setenv(F_msda.ENV_VAR, "pytorch")
    assert F_msda.resolve_impl("auto", torch.device("cpu")) == "pytorch"
    # an explicit choice wins over the variable
    if HAS_EXT:
        assert F_msda.resolve_impl("cpp", torch.device("cpu")) == "cpp"
    monkeypatch.setenv(F_msda.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="ONEFORMER_MSDA_IMPL"):
        F_msda.resolve_impl("auto", torch.device("cpu"))


def test_auto_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv(F_msda.ENV_VAR, raising=False)
    monkeypatch.setattr(F_msda, "_C", None)
    monkeypatch.setattr(F_msda, "_EXT_ERROR", ImportError("simulated"))
    monkeypatch.setattr(F_msda, "_warned", set())
    inputs = make_inputs(1, [(3, 3)], 2, 1, 2, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1 = ms_deform_attn(*inputs)
        out2 = ms_deform_attn(*inputs)
    msgs = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    assert len(msgs) == 1 and "PyTorch reference" in msgs[0] and "simulated" in msgs[0]
    assert torch.equal(out1, out2)
    with pytest.raises(RuntimeError, match="impl='cpp' requested"):
        ms_deform_attn(*inputs, impl="cpp")


def test_explicit_cuda_without_cuda_kernel_raises():
    if HAS_CUDA:
        pytest.skip("the CUDA kernel is available here")
    inputs = make_inputs(1, [(3, 3)], 2, 1, 2, 1)
    with pytest.raises(RuntimeError, match="impl='cuda'"):
        ms_deform_attn(*inputs, impl="cuda")


# ---------------------------------------------------------------------------------------------------------------
# the layer


def test_module_parameter_names_shapes_and_init():
    m = MSDeformAttn(d_model=256, n_levels=3, n_heads=8, n_points=4)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    # as in the pixel decoder's checkpoint entries (transformer.encoder.layers.{i}.self_attn.*)
    assert shapes == {
        "sampling_offsets.weight": (192, 256), "sampling_offsets.bias": (192,),
        "attention_weights.weight": (96, 256), "attention_weights.bias": (96,),
        "value_proj.weight": (256, 256), "value_proj.bias": (256,),
        "output_proj.weight": (256, 256), "output_proj.bias": (256,),
    }
    assert m.im2col_step == 128
    assert torch.count_nonzero(m.sampling_offsets.weight) == 0
    assert torch.count_nonzero(m.attention_weights.weight) == 0 and torch.count_nonzero(m.attention_weights.bias) == 0
    assert torch.count_nonzero(m.value_proj.bias) == 0 and torch.count_nonzero(m.output_proj.bias) == 0
    bias = m.sampling_offsets.bias.view(8, 3, 4, 2)
    # head h looks in direction 2*pi*h/8, scaled so the larger component is 1, point k at distance k+1
    for h in range(8):
        d = torch.tensor([math.cos(2 * math.pi * h / 8), math.sin(2 * math.pi * h / 8)])
        d = d / d.abs().max()
        for k in range(4):
            assert torch.allclose(bias[h, :, k], (k + 1) * d.expand(3, 2), atol=1e-6)
    # xavier-uniform projections: bounded by sqrt(6 / (fan_in + fan_out))
    assert m.value_proj.weight.abs().max() <= math.sqrt(6 / 512) + 1e-6
    assert m.value_proj.weight.std() > 0.02


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_forward_implementations_agree(ref_dim):
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    shapes = torch.tensor([[6, 5], [3, 3]])
    starts = torch.tensor([0, 30])
    x = torch.randn(2, 39, 32, dtype=torch.float64)
    q = torch.randn(2, 7, 32, dtype=torch.float64)
    ref = torch.rand(2, 7, 2, ref_dim, dtype=torch.float64)
    mask = torch.zeros(2, 39, dtype=torch.bool)
    mask[1, -5:] = True
    outs = {}
    for impl in (["cpp"] if HAS_EXT else []) + ["pytorch"]:
        m.impl = impl
        outs[impl] = m(q, ref, x, shapes, starts, mask)
    assert outs["pytorch"].shape == (2, 7, 32)
    if HAS_EXT:
        assert torch.allclose(outs["cpp"], outs["pytorch"], atol=1e-12)
    # the padding mask matters
    m.impl = "pytorch"
    assert not torch.allclose(m(q, ref, x, shapes, starts, None), outs["pytorch"])


def test_module_inference_path_equals_the_formula():
    """Float32 CPU inference writes the softmax out and forms the sampling locations with one addcdiv: the same
    result as the original's expressions (softmax, reference + offsets / (W, H)) to float rounding."""
    from oneformer.ops import ms_deform_attn_pytorch
    from oneformer.ops.modules import _softmax_last

    torch.manual_seed(1)
    m = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    shapes, starts = torch.tensor([[6, 5], [3, 3]]), torch.tensor([0, 30])
    x, q, ref = torch.randn(2, 39, 32), torch.randn(2, 7, 32), torch.rand(2, 7, 2, 2)
    with torch.no_grad():
        got = m(q, ref, x, shapes, starts)
        value = m.value_proj(x).view(2, 39, 4, 8)
        offsets = m.sampling_offsets(q).view(2, 7, 4, 2, 3, 2)
        weights = m.attention_weights(q).view(2, 7, 4, 6).softmax(-1).view(2, 7, 4, 2, 3)
        locations = ref[:, :, None, :, None, :] + offsets / torch.tensor([[5.0, 6.0], [3.0, 3.0]])[None, None, None,
                                                                                                   :, None, :]
        want = m.output_proj(ms_deform_attn_pytorch(value, shapes, locations, weights))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    logits = torch.randn(50, 12) * 20
    with torch.no_grad():
        torch.testing.assert_close(_softmax_last(logits), logits.softmax(-1), rtol=1e-6, atol=1e-7)
    assert torch.equal(_softmax_last(logits), logits.softmax(-1))  # with autograd: PyTorch's softmax itself


def test_module_rejects_bad_reference_points():
    m = MSDeformAttn(d_model=16, n_levels=1, n_heads=2, n_points=1)
    with pytest.raises(ValueError, match="reference_points must end in 2"):
        m(torch.randn(1, 2, 16), torch.rand(1, 2, 1, 3), torch.randn(1, 4, 16), torch.tensor([[2, 2]]),
          torch.tensor([0]))
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=10, n_heads=3)


# ---------------------------------------------------------------------------------------------------------------
# CUDA (run only where a GPU is visible)

CUDA_TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(CASES) + ["wide_heads"])
def test_cuda_kernel_matches_reference(case, dtype):
    N, shapes, Lq, M, D, P = CASES.get(case, (2, [(8, 8), (4, 4), (2, 2)], 33, 3, 64, 4))
    inputs = make_inputs(N, shapes, Lq, M, D, P, dtype=dtype, device="cuda")
    ours = run_with_grads("cuda", inputs)
    # reference in float64 on the same (rounded) inputs
    ref = run_with_grads("pytorch", [t.double() if t.is_floating_point() else t for t in inputs])
    assert ours[0].dtype == dtype and ours[1].dtype == dtype
    tol = CUDA_TOL[dtype]
    for name, a, b in zip(("output", "grad_value", "grad_loc", "grad_weights"), ours, ref):
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        diff = (a.double() - b).abs().max().item() if b.numel() else 0.0
        assert diff <= tol * scale, f"{name}: max diff {diff} (scale {scale})"


@needs_cuda
@pytest.mark.cuda
def test_cuda_gradcheck_float64():
    value, shapes, starts, loc, w = make_inputs(2, [(4, 3), (2, 2)], 3, 2, 3, 2, spread=(0.05, 0.95), device="cuda")
    value.requires_grad_()
    loc.requires_grad_()
    w.requires_grad_()

    def fn(v, l_, a):
        return ms_deform_attn(v, shapes, starts, l_, a, impl="cuda")

    assert torch.autograd.gradcheck(fn, (value, loc, w), eps=1e-6, atol=1e-5)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype):
    value, shapes, starts, loc, w = make_inputs(2, [(8, 8), (4, 4)], 20, 2, 32, 4, dtype=torch.float32, device="cuda")
    ref = ms_deform_attn_pytorch(value.double(), shapes, loc.double(), w.double())
    with torch.autocast("cuda", dtype=dtype):
        out = ms_deform_attn(value, shapes, starts, loc, w)
    assert out.dtype == dtype
    assert (out.double() - ref).abs().max() <= CUDA_TOL[dtype] * max(1.0, ref.abs().max().item())


@needs_cuda
@pytest.mark.cuda
def test_cuda_module_matches_cpu():
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=64, n_levels=3, n_heads=8, n_points=4)
    shapes = torch.tensor([[8, 8], [4, 4], [2, 2]])
    starts = torch.tensor([0, 64, 80])
    x = torch.randn(2, 84, 64)
    ref_points = torch.rand(2, 84, 3, 2)
    out_cpu = m(x, ref_points, x, shapes, starts)
    m_cuda = m.cuda()
    out_gpu = m_cuda(x.cuda(), ref_points.cuda(), x.cuda(), shapes.cuda(), starts.cuda())
    assert torch.allclose(out_gpu.cpu(), out_cpu, atol=1e-4)
