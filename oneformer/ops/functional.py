"""``ms_deform_attn``: the one entry point of multi-scale deformable attention.

Implementations:
- "cpp": compiled CPU kernel (float32/float64; float16/bfloat16 inputs are computed in float32).
- "cuda": compiled CUDA kernel (float32/float64/float16/bfloat16; reduced-precision values are sampled at float32
  locations and accumulated in float32).
- "pytorch": the ``grid_sample`` reference (any device; computed in float32 for reduced-precision inputs).
- "auto": the compiled kernel for the tensors' device, else the reference with one warning. The environment variable
  ONEFORMER_MSDA_IMPL (auto|cpp|cuda|pytorch) replaces "auto", so it forces the choice of every caller that does not
  name an implementation explicitly.

The compiled kernels are the PyTorch operator ``torch.ops.oneformer.ms_deform_attn`` (and
``torch.ops.oneformer.ms_deform_attn_backward``), defined with a schema in C++ (oneformer/ops/csrc/vision.cpp) for
CPU and CUDA; this module registers their fake (meta) implementations (``torch.library.register_fake``) and the
autograd formula (``torch.library.register_autograd``), so ``torch.compile``, ``torch.export`` and AOTInductor
trace them as one op.

Under ``torch.compile`` / ``torch.export`` the host-side layout checks that would read ``spatial_shapes`` are
skipped (the operator checks the layout itself: exactly on CPU, with an asynchronous device assert on CUDA). Inside
``torch.jit.trace`` / the TorchScript-based ONNX exporter the reference always runs, on the traced
``spatial_shapes`` (the operator is invisible to a TorchScript trace), and the host-side checks are skipped.
"""
import os
import warnings
from typing import List, Optional

import torch

from .reference import ms_deform_attn_pytorch

__all__ = ["ms_deform_attn", "resolve_impl", "extension_status", "IMPLS", "ENV_VAR"]

IMPLS = ("auto", "cpp", "cuda", "pytorch")
ENV_VAR = "ONEFORMER_MSDA_IMPL"
_REDUCED = (torch.float16, torch.bfloat16)

OP_NAME = "oneformer::ms_deform_attn"
BACKWARD_OP_NAME = "oneformer::ms_deform_attn_backward"

try:
    # loading the library registers the operators with the dispatcher
    from . import _C  # type: ignore[attr-defined]  # noqa: F401

    _EXT_ERROR: Optional[BaseException] = None
except (ImportError, OSError) as e:  # not built (e.g. ONEFORMER_NO_EXT=1), built for another torch, or broken
    _C = None
    _EXT_ERROR = e


def _has_kernel(dispatch_key: str) -> bool:
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, dispatch_key)


# which devices have a compiled kernel: fixed once the library is loaded
_KERNELS = {"cpu": _has_kernel("CPU"), "cuda": _has_kernel("CUDA")}
if _C is not None and not _KERNELS["cpu"]:
    _EXT_ERROR = RuntimeError(f"oneformer.ops._C was loaded but registers no CPU kernel of {OP_NAME}")
    _C = None

_warned = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def extension_status() -> dict:
    """Return {"built": bool, "cuda": bool, "error": str or None} for the compiled extension ``oneformer.ops._C``."""
    return {
        "built": _C is not None,
        "cuda": _C is not None and _KERNELS["cuda"],
        "error": None if _EXT_ERROR is None else repr(_EXT_ERROR),
    }


def resolve_impl(impl: str, device: torch.device) -> str:
    """Map ``impl`` ("auto", "cpp", "cuda", "pytorch") to the implementation that will run for ``device``.

    Raises ValueError for unknown names and RuntimeError when an explicitly requested kernel cannot run there.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        forced = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if forced not in IMPLS:
            raise ValueError(f"environment variable {ENV_VAR}={forced!r} must be one of {IMPLS}")
        impl = forced
    if impl == "auto":
        if device.type == "cpu":
            if _C is not None:
                return "cpp"
            _warn_once(
                "cpu",
                "oneformer.ops: the compiled extension oneformer.ops._C is not available "
                f"({_EXT_ERROR}); using the slower PyTorch reference of multi-scale deformable attention. "
                "Build it with `pip install -e .` (or `make setup`).",
            )
            return "pytorch"
        if device.type == "cuda":
            if _C is not None and _KERNELS["cuda"]:
                return "cuda"
            _warn_once(
                "cuda",
                "oneformer.ops: the compiled extension has no CUDA kernel "
                f"({'not built' if _C is None else 'built without CUDA'}); using the PyTorch reference on the GPU. "
                "Rebuild with a CUDA toolkit (see README: FORCE_CUDA, CUDA_HOME, TORCH_CUDA_ARCH_LIST).",
            )
            return "pytorch"
        return "pytorch"
    if impl == "cpp":
        if _C is None:
            raise RuntimeError(f"impl='cpp' requested but oneformer.ops._C is not available: {_EXT_ERROR}")
        if device.type != "cpu":
            raise RuntimeError(f"impl='cpp' runs on CPU tensors, but value is on {device}")
    if impl == "cuda":
        if _C is None or not _KERNELS["cuda"]:
            raise RuntimeError(
                "impl='cuda' requested but oneformer.ops._C was "
                + ("not built" if _C is None else "built without CUDA")
                + " (rebuild with a CUDA toolkit; see README)"
            )
        if device.type != "cuda":
            raise RuntimeError(f"impl='cuda' runs on CUDA tensors, but value is on {device}")
    return impl


def _fake_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Output metadata of the operator (FakeTensor / meta tracing): (N, Lq, M * D) in value's dtype, contiguous."""
    torch._check(value.dim() == 4, lambda: f"value must be (N, S, M, D), got {tuple(value.shape)}")
    torch._check(sampling_locations.dim() == 6, lambda: "sampling_locations must be (N, Lq, M, L, P, 2)")
    torch._check(attention_weights.dim() == 5, lambda: "attention_weights must be (N, Lq, M, L, P)")
    N, _, M, D = value.shape
    return value.new_empty((N, sampling_locations.shape[1], M * D))


def _fake_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output):
    """(grad_value, grad_sampling_locations, grad_attention_weights), contiguous, shaped like the inputs."""
    return (value.new_empty(value.shape), sampling_locations.new_empty(sampling_locations.shape),
            attention_weights.new_empty(attention_weights.shape))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_loc, grad_attn = torch.ops.oneformer.ms_deform_attn_backward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output.contiguous()
    )
    # no gradient for the integer layout tensors
    return grad_value, None, None, grad_loc, grad_attn


if _C is not None:
    torch.library.register_fake(OP_NAME)(_fake_forward)
    torch.library.register_fake(BACKWARD_OP_NAME)(_fake_backward)
    torch.library.register_autograd(OP_NAME, _backward, setup_context=_setup_context)


def _check_tensor(name: str, t, dim: int) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")


def _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    """Validate ranks, shapes, dtypes and devices (tensor metadata only; nothing is read from the device)."""
    _check_tensor("value", value, 4)
    _check_tensor("spatial_shapes", spatial_shapes, 2)
    _check_tensor("level_start_index", level_start_index, 1)
    _check_tensor("sampling_locations", sampling_locations, 6)
    _check_tensor("attention_weights", attention_weights, 5)
    for name, t in (("value", value), ("sampling_locations", sampling_locations),
                    ("attention_weights", attention_weights)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != value.device:
            raise ValueError(f"{name} is on {t.device} but value is on {value.device}")
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
        if t.device.type != "cpu" and t.device != value.device:
            raise ValueError(f"{name} is on {t.device} but value is on {value.device}")
    N, S, M, _ = value.shape
    L = spatial_shapes.shape[0]
    if spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2), got {tuple(spatial_shapes.shape)}")
    if level_start_index.shape[0] != L:
        raise ValueError(f"level_start_index must have L={L} entries (from spatial_shapes), got "
                         f"{level_start_index.shape[0]}")
    n, _, m, l, _, two = sampling_locations.shape
    if (n, m, l, two) != (N, M, L, 2):
        raise ValueError(
            f"sampling_locations must be (N={N}, Lq, M={M}, L={L}, P, 2) to match value {tuple(value.shape)} and "
            f"spatial_shapes, got {tuple(sampling_locations.shape)}"
        )
    if attention_weights.shape != sampling_locations.shape[:5]:
        raise ValueError(
            f"attention_weights must be (N, Lq, M, L, P) = {tuple(sampling_locations.shape[:5])}, got "
            f"{tuple(attention_weights.shape)}"
        )
    return None


def _check_layout(value, spatial_shapes, level_start_index) -> List[List[int]]:
    """Check on the host that the levels tile value's S positions; return the shapes as [[H, W], ...].

    The kernels index value with these numbers, so a wrong layout must fail (the operator checks it again itself,
    so that direct calls and compiled graphs, which skip this, are safe too).
    """
    S = value.shape[1]
    L = spatial_shapes.shape[0]
    # one host transfer for both
    layout = torch.cat([spatial_shapes.reshape(-1), level_start_index.reshape(-1).to(spatial_shapes.device)])
    layout = layout.tolist()
    shapes = [layout[2 * i: 2 * i + 2] for i in range(L)]
    starts = layout[2 * L:]
    sizes = [h * w for h, w in shapes]
    if any(h < 0 or w < 0 for h, w in shapes):
        raise ValueError(f"spatial_shapes must be non-negative, got {shapes}")
    if sum(sizes) != S:
        raise ValueError(f"value has S={S} positions but spatial_shapes {shapes} sum to {sum(sizes)}")
    expected = [sum(sizes[:i]) for i in range(L)]
    if starts != expected:
        raise ValueError(f"level_start_index must be {expected} for spatial_shapes {shapes}, got {starts}")
    return shapes


def _check_dtypes(value, sampling_locations, attention_weights) -> None:
    if sampling_locations.dtype != attention_weights.dtype:
        raise TypeError(
            f"sampling_locations ({sampling_locations.dtype}) and attention_weights ({attention_weights.dtype}) "
            "must have the same dtype"
        )
    ok = sampling_locations.dtype == value.dtype or (
        value.dtype in _REDUCED and sampling_locations.dtype == torch.float32
    )
    if not ok:
        raise TypeError(
            f"sampling_locations/attention_weights are {sampling_locations.dtype} but value is {value.dtype}: "
            "they must match value's dtype (or be float32 for a float16/bfloat16 value)"
        )


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int = 64,
    impl: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention core (Zhu et al., Deformable DETR).

    Args:
        value: (N, S, M, D), the per-head values of all levels, S = sum of H_l * W_l.
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level.
        level_start_index: (L,) int64, offset of each level in S (the exclusive cumulative sum of H_l * W_l).
        sampling_locations: (N, Lq, M, L, P, 2), (x, y) in [0, 1] relative to each level; points outside the map
            sample zeros (bilinear, align_corners=False).
        attention_weights: (N, Lq, M, L, P).
        im2col_step: accepted for compatibility with the original signature; the kernels here need no im2col
            buffer, so any positive value gives the same result.
        impl: "auto", "cpp", "cuda" or "pytorch" (see the module docstring).
    Returns:
        (N, Lq, M * D) in value's dtype (the autocast dtype on CUDA under ``torch.autocast``).
    """
    if not isinstance(im2col_step, int) or im2col_step <= 0:
        raise ValueError(f"im2col_step must be a positive int, got {im2col_step!r}")
    device = value.device
    if torch.jit.is_tracing():
        # TorchScript trace: the grid_sample reference with the level sizes as traced values (no host reads, no
        # checks that would turn sizes into constants); shapes then stays a tensor
        impl, shapes = "pytorch", spatial_shapes
    else:
        _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        impl = resolve_impl(impl, device)
        on_host = spatial_shapes.device.type == "cpu" and level_start_index.device.type == "cpu"
        if impl == "pytorch":
            # the reference needs the sizes on the host (under torch.compile this read breaks the graph)
            shapes = _check_layout(value, spatial_shapes, level_start_index)
        elif on_host and not torch.compiler.is_compiling():
            shapes = _check_layout(value, spatial_shapes, level_start_index)
        else:
            shapes = None  # the operator checks the layout (compiled graphs; CUDA shapes, asynchronously)
    if torch.is_autocast_enabled(device.type):
        # Under autocast the inputs arrive in mixed dtypes; locations and weights always run in float32, the values
        # in the autocast dtype where the kernel supports it (CUDA), else in float32.
        compute = torch.get_autocast_dtype(device.type) if impl == "cuda" else torch.float32
        if compute not in _REDUCED + (torch.float32,):
            compute = torch.float32
        with torch.autocast(device.type, enabled=False):
            return _run(impl, value.to(compute), shapes, spatial_shapes, level_start_index,
                        sampling_locations.float(), attention_weights.float())
    _check_dtypes(value, sampling_locations, attention_weights)
    return _run(impl, value, shapes, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def _run(impl, value, shapes, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    out_dtype = value.dtype
    if impl == "pytorch" or (impl == "cpp" and value.dtype in _REDUCED):
        # reduced precision is computed in float32 (the reference for accuracy; the CPU kernel has no half path)
        compute = torch.float32 if value.dtype in _REDUCED else value.dtype
        value = value.to(compute)
    else:
        compute = value.dtype
    loc_dtype = torch.float32 if compute in _REDUCED else compute
    sampling_locations = sampling_locations.to(loc_dtype)
    attention_weights = attention_weights.to(loc_dtype)
    if impl == "pytorch":
        out = ms_deform_attn_pytorch(value, shapes, sampling_locations, attention_weights)
    else:
        device = value.device
        out = torch.ops.oneformer.ms_deform_attn(
            value.contiguous(),
            spatial_shapes.to(device=device, dtype=torch.int64).contiguous(),
            level_start_index.to(device=device, dtype=torch.int64).contiguous(),
            sampling_locations.contiguous(),
            attention_weights.contiguous(),
        )
    return out.to(out_dtype)
