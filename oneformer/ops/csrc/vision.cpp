// The operators oneformer::ms_deform_attn and oneformer::ms_deform_attn_backward: schemas, argument checks, and the
// CPU / CUDA kernels registered with the PyTorch dispatcher (TORCH_LIBRARY / TORCH_LIBRARY_IMPL), so that eager
// calls, FakeTensor tracing (torch.compile, torch.export) and AOTInductor all see one op. The fake (meta)
// implementations and the autograd formula are registered from Python (oneformer/ops/functional.py).
// Also CPU inference kernels: oneformer::swin_window_attention (cpu/window_attention_cpu.cpp; its fake
// implementation in oneformer/ops/window_attention.py), oneformer::separable_value_attention (the class
// transformer's attention to the positional encoding; cpu/separable_attention_cpu.cpp, oneformer/ops/
// separable_attention.py), and oneformer::mask_owners_ / resized_mask_owners_ (cpu/mask_owners_cpu.cpp, used by
// panoptic post-processing; oneformer/ops/mask_owners.py).
//
// Loading the shared library registers the operators: `import oneformer.ops._C` works through the empty Python
// module defined at the end of this file (no pybind11, no libtorch_python: the library uses only the stable Python
// ABI, as PyTorch's custom-operator guide recommends).
#include <Python.h>
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "mask_owners.h"
#include "ms_deform_attn.h"
#include "separable_attention.h"
#include "window_attention.h"

namespace oneformer {
namespace ops {

void check_ms_deform_attn_inputs(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  TORCH_CHECK(value.dim() == 4, "value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  const int64_t L = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == L,
              "level_start_index must be (L,) = (", L, ",), got ", level_start_index.sizes());
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "sampling_locations must be (N, Lq, M, L, P, 2), got ", sampling_loc.sizes());
  TORCH_CHECK(sampling_loc.size(0) == value.size(0) && sampling_loc.size(2) == value.size(2) &&
                  sampling_loc.size(3) == L,
              "sampling_locations ", sampling_loc.sizes(), " does not match value ", value.sizes(),
              " (N, M) and spatial_shapes (L = ", L, ")");
  TORCH_CHECK(attn_weight.dim() == 5 && attn_weight.sizes() == sampling_loc.sizes().slice(0, 5),
              "attention_weights must be (N, Lq, M, L, P) = ", sampling_loc.sizes().slice(0, 5), ", got ",
              attn_weight.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong, "spatial_shapes must be int64, got ",
              spatial_shapes.scalar_type());
  TORCH_CHECK(level_start_index.scalar_type() == at::kLong, "level_start_index must be int64, got ",
              level_start_index.scalar_type());
  const auto opmath = at::toOpMathType(value.scalar_type());
  TORCH_CHECK(sampling_loc.scalar_type() == opmath, "sampling_locations must be ", opmath, " for ",
              value.scalar_type(), " value, got ", sampling_loc.scalar_type());
  TORCH_CHECK(attn_weight.scalar_type() == opmath, "attention_weights must be ", opmath, " for ",
              value.scalar_type(), " value, got ", attn_weight.scalar_type());
  const auto dev = value.device();
  TORCH_CHECK(spatial_shapes.device() == dev && level_start_index.device() == dev &&
                  sampling_loc.device() == dev && attn_weight.device() == dev,
              "all inputs must be on the device of value (", dev, ")");
}

namespace {

// The kernels take dense arrays; callers (and the Python entry) normally pass contiguous tensors already, so these
// are no-ops then. The op's contract is only the schema's, as torch.library.opcheck tests it.
struct Dense {
  at::Tensor value, spatial_shapes, level_start_index, sampling_loc, attn_weight;
};

Dense dense(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
            const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  return {value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(), sampling_loc.contiguous(),
          attn_weight.contiguous()};
}

void check_grad_output(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& sampling_loc) {
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type() && grad_output.device() == value.device(),
              "grad_output must have the dtype and device of value");
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == value.size(0) &&
                  grad_output.size(1) == sampling_loc.size(1) && grad_output.size(2) == value.size(2) * value.size(3),
              "grad_output must be (N, Lq, M * D), got ", grad_output.sizes());
}

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                       const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  const auto d = dense(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  return ms_deform_attn_cpu_forward(d.value, d.spatial_shapes, d.level_start_index, d.sampling_loc, d.attn_weight);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output) {
  const auto d = dense(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  check_grad_output(grad_output, value, sampling_loc);
  auto grads = ms_deform_attn_cpu_backward(d.value, d.spatial_shapes, d.level_start_index, d.sampling_loc,
                                           d.attn_weight, grad_output.contiguous());
  return {grads[0], grads[1], grads[2]};
}

#ifdef WITH_CUDA
// CUDA shapes live on the device: the level layout is checked with an asynchronous device-side assert, so that no
// call waits for the GPU (the kernels index value with these numbers; a wrong layout must not read out of bounds).
void check_levels_async(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t S) {
  if (spatial_shapes.size(0) == 0) return;
  const auto sizes = spatial_shapes.prod(1);
  const auto starts = sizes.cumsum(0) - sizes;
  const auto ok = sizes.sum().eq(S).logical_and(spatial_shapes.ge(0).all()).logical_and(
      level_start_index.eq(starts).all());
  at::_assert_async(ok, "ms_deform_attn: spatial_shapes / level_start_index do not tile value's positions");
}

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                        const at::Tensor& attn_weight) {
  const auto d = dense(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  check_levels_async(d.spatial_shapes, d.level_start_index, value.size(1));
  return ms_deform_attn_cuda_forward(d.value, d.spatial_shapes, d.level_start_index, d.sampling_loc, d.attn_weight);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output) {
  const auto d = dense(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  check_grad_output(grad_output, value, sampling_loc);
  check_levels_async(d.spatial_shapes, d.level_start_index, value.size(1));
  auto grads = ms_deform_attn_cuda_backward(d.value, d.spatial_shapes, d.level_start_index, d.sampling_loc,
                                            d.attn_weight, grad_output.contiguous());
  return {grads[0], grads[1], grads[2]};
}
#endif

}  // namespace
}  // namespace ops
}  // namespace oneformer

TORCH_LIBRARY(oneformer, m) {
  m.def("ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
        "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def("ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
        "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) -> (Tensor, Tensor, Tensor)");
  m.def("swin_window_attention(Tensor qkv, Tensor index, Tensor bias, Tensor? masks, Tensor? mask_index, "
        "int num_heads, float scale, SymInt out_rows) -> Tensor");
  m.def("mask_owners_(Tensor probs, Tensor scores, int offset, bool weighted_area, Tensor(a!) best, "
        "Tensor(b!) owner, Tensor(c!)? own_prob) -> Tensor");
  m.def("separable_value_attention(Tensor q, Tensor kt, Tensor vy, Tensor vx) -> Tensor");
  m.def("resized_mask_owners_(Tensor masks, Tensor scores, int offset, bool weighted_area, bool sigmoid, "
        "Tensor(a!) best, Tensor(b!) owner, Tensor(c!)? own_prob) -> Tensor");
}

TORCH_LIBRARY_IMPL(oneformer, CPU, m) {
  m.impl("ms_deform_attn", &oneformer::ops::forward_cpu);
  m.impl("ms_deform_attn_backward", &oneformer::ops::backward_cpu);
  m.impl("swin_window_attention", &oneformer::ops::swin_window_attention_cpu);
  m.impl("mask_owners_", &oneformer::ops::mask_owners_cpu);
  m.impl("resized_mask_owners_", &oneformer::ops::resized_mask_owners_cpu);
  m.impl("separable_value_attention", &oneformer::ops::separable_value_attention_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(oneformer, CUDA, m) {
  m.impl("ms_deform_attn", &oneformer::ops::forward_cuda);
  m.impl("ms_deform_attn_backward", &oneformer::ops::backward_cuda);
}
#endif

// An empty Python module, so that `import oneformer.ops._C` loads this library (and with it the registrations).
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
