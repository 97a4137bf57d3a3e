// Multi-scale deformable attention: declarations shared by the CPU and CUDA kernels and the Python binding.
//
// Shapes (N batch, S = sum of H_l * W_l value positions, M heads, D channels per head, Lq queries, L levels,
// P points per level):
//   value               (N, S, M, D)          float32/float64 (CUDA also float16/bfloat16)
//   spatial_shapes      (L, 2) int64           (H_l, W_l) per level
//   level_start_index   (L,)   int64           offset of level l in S
//   sampling_loc        (N, Lq, M, L, P, 2)    (x, y) in [0, 1]; dtype = opmath(value dtype)
//   attn_weight         (N, Lq, M, L, P)       dtype = opmath(value dtype)
//   output              (N, Lq, M * D)         value dtype
// opmath(float16/bfloat16) = float32, otherwise the dtype itself: reduced-precision values are sampled at
// full-precision locations. Sampling is bilinear with zero padding and align_corners=False semantics.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace oneformer {
namespace ops {

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight);

// Returns {grad_value, grad_sampling_loc, grad_attn_weight}.
std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_cuda_forward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight);

std::vector<at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output);
#endif

// Argument checks shared by both devices; throw c10::Error naming the offending argument.
void check_ms_deform_attn_inputs(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight);

}  // namespace ops
}  // namespace oneformer
