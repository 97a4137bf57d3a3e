"""``torch.ops.oneformer.swin_window_attention``: the CPU kernel of Swin's window attention (float32 inference)
against the formula, as a custom operator (opcheck, fake tensors, compiled graphs) and its argument checks."""
import re

import pytest
import torch
import torch.nn.functional as F

from oneformer.ops.window_attention import swin_window_attention, window_kernel_applies, window_kernel_available

pytestmark = pytest.mark.skipif(not window_kernel_available(), reason="oneformer.ops._C is not built")


def make_case(windows=5, N=16, heads=3, head_dim=8, pad=True, masks=True, seed=0):
    """Random windows over a token map: every real row read once, padding positions reading the extra last row
    (possibly several times). Returns the op's arguments as a dict."""
    g = torch.Generator().manual_seed(seed)
    P = windows * N
    out_rows = P - (P // 5 if pad else 0)
    C = heads * head_dim
    qkv = torch.randn(out_rows + 1, 3 * C, generator=g)
    index = torch.cat([torch.randperm(out_rows, generator=g), torch.full((P - out_rows,), out_rows)])
    index = index[torch.randperm(P, generator=g)]
    args = dict(qkv=qkv, index=index, bias=torch.randn(heads, N, N, generator=g), masks=None, mask_index=None,
                num_heads=heads, scale=head_dim**-0.5, out_rows=out_rows)
    if masks:
        args["masks"] = torch.where(torch.rand(4, N, N, generator=g) > 0.6, -100.0, 0.0)
        args["mask_index"] = torch.randint(0, 4, (windows,), generator=g)
    return args


def formula(qkv, index, bias, masks, mask_index, num_heads, scale, out_rows):
    """softmax(q k^T * scale + bias + mask) v per window, scattered back to token order (float64)."""
    N = bias.shape[-1]
    C = qkv.shape[1] // 3
    win = qkv.double()[index].view(-1, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    attn_mask = bias.double().unsqueeze(0)
    if masks is not None:
        attn_mask = attn_mask + masks.double()[mask_index].unsqueeze(1)
    out = F.scaled_dot_product_attention(win[0], win[1], win[2], attn_mask=attn_mask, scale=scale)
    out = out.transpose(1, 2).reshape(-1, C)
    result = torch.full((out_rows, C), float("nan"), dtype=torch.float64)
    real = index < out_rows
    result[index[real]] = out[real]
    return result


# window sizes 4 (N = 16) and 7 (N = 49, not a multiple of a vector), 12 (Swin-L's 144); head dims 8, 20, 32; heads
# beyond one group of 8
CASES = [dict(), dict(N=49, heads=2, head_dim=20), dict(N=144, heads=12, head_dim=32, windows=3),
         dict(pad=False, masks=False), dict(windows=1, N=9, heads=1, head_dim=4)]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_kernel_matches_the_formula(case):
    args = make_case(**CASES[case])
    got = swin_window_attention(**args)
    assert got.shape == (args["out_rows"], args["qkv"].shape[1] // 3) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), formula(**args), rtol=1e-5, atol=1e-5)


def test_result_independent_of_thread_count():
    args = make_case(N=144, heads=12, head_dim=32, windows=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = swin_window_attention(**args)
        torch.set_num_threads(2)
        two = swin_window_attention(**args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.parametrize("case", [0, 1])
def test_opcheck(case):
    # schema (no hidden mutation or aliasing), fake tensor propagation, AOT dispatch (static and dynamic shapes)
    args = make_case(**CASES[case])
    torch.library.opcheck(torch.ops.oneformer.swin_window_attention.default, tuple(args.values()))


def test_fake_tensor_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = make_case()
    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) if torch.is_tensor(v) else v for k, v in args.items()}
        out = swin_window_attention(**fake)
    assert out.shape == (args["out_rows"], args["qkv"].shape[1] // 3)


def test_compiles_without_graph_breaks():
    args = make_case()
    torch._dynamo.reset()
    compiled = torch.compile(swin_window_attention, fullgraph=True, dynamic=True, backend="eager")
    torch.testing.assert_close(compiled(**args), swin_window_attention(**args))


def test_backward_raises_a_clear_error():
    args = make_case()
    args["qkv"].requires_grad_()
    out = swin_window_attention(**args)
    with pytest.raises(RuntimeError, match="inference kernel"):
        out.sum().backward()


@pytest.mark.parametrize("mutate,words", [
    (lambda a: a.update(qkv=a["qkv"].double()), "float32 only"),
    (lambda a: a.update(num_heads=5), "must divide C"),
    (lambda a: a.update(bias=a["bias"][:, :-1]), "bias must be (num_heads, N, N)"),
    (lambda a: a.update(index=a["index"][:-3]), "index must be int64 (windows * N,)"),
    (lambda a: a.update(index=a["index"].int()), "index must be int64"),
    (lambda a: a["index"].__setitem__(0, 10_000), "outside qkv's"),
    (lambda a: a["index"].__setitem__(a["index"] == a["index"][a["index"] < a["out_rows"]][0], -1), "outside"),
    (lambda a: a["index"].__setitem__(a["index"] == 0, a["out_rows"]), "each must appear exactly once"),
    (lambda a: a.update(mask_index=None), "both given or both None"),
    (lambda a: a["mask_index"].__setitem__(0, 4), "outside masks' 4 masks"),
])
def test_bad_arguments_name_the_problem(mutate, words):
    args = make_case()
    mutate(args)
    with pytest.raises(RuntimeError, match=re.escape(words)):
        swin_window_attention(**args)


def test_duplicate_rows_are_refused():
    args = make_case(pad=False)
    args["index"][1] = args["index"][0]
    with pytest.raises(RuntimeError, match="appears more than once"):
        swin_window_attention(**args)


def test_kernel_applies_only_to_float32_cpu_inference():
    x = torch.zeros(2, 3)
    with torch.no_grad():
        assert window_kernel_applies(x, training=False)
        assert not window_kernel_applies(x, training=True)
        assert not window_kernel_applies(x.double(), training=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not window_kernel_applies(x, training=False)
    assert not window_kernel_applies(x, training=False)  # autograd on
