// Python binding of the multi-scale deformable attention kernels; dispatches on the device of `value`.
#include <ATen/OpMathType.h>
#include <torch/extension.h>

#include "ms_deform_attn.h"

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
  TORCH_CHECK(value.is_contiguous() && spatial_shapes.is_contiguous() && level_start_index.is_contiguous() &&
                  sampling_loc.is_contiguous() && attn_weight.is_contiguous(),
              "all inputs must be contiguous");
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
#else
    TORCH_CHECK(false, "this build of oneformer.ops._C has no CUDA kernel (rebuild with a CUDA toolkit)");
#endif
  }
  TORCH_CHECK(value.device().is_cpu(), "unsupported device ", value.device());
  return ms_deform_attn_cpu_forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                 const at::Tensor& attn_weight, const at::Tensor& grad_output) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.device() == value.device(),
              "grad_output must be contiguous with the dtype and device of value");
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == value.size(0) &&
                  grad_output.size(1) == sampling_loc.size(1) && grad_output.size(2) == value.size(2) * value.size(3),
              "grad_output must be (N, Lq, M * D), got ", grad_output.sizes());
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_backward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
                                        grad_output);
#else
    TORCH_CHECK(false, "this build of oneformer.ops._C has no CUDA kernel (rebuild with a CUDA toolkit)");
#endif
  }
  TORCH_CHECK(value.device().is_cpu(), "unsupported device ", value.device());
  return ms_deform_attn_cpu_backward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
                                     grad_output);
}

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace ops
}  // namespace oneformer

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "OneFormer compiled ops: multi-scale deformable attention (CPU and, when built, CUDA)";
  m.def("ms_deform_attn_forward", &oneformer::ops::forward,
        "forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight) -> (N, Lq, M*D)");
  m.def("ms_deform_attn_backward", &oneformer::ops::backward,
        "backward(..., grad_output) -> [grad_value, grad_sampling_loc, grad_attn_weight]");
  m.def("with_cuda", &oneformer::ops::with_cuda, "whether the CUDA kernels were compiled in");
}
