// oneformer::separable_value_attention: attention over an H x W map whose values are a row term plus a column
// term (see cpu/separable_attention_cpu.cpp and oneformer/ops/separable_attention.py).
#pragma once

#include <ATen/ATen.h>

namespace oneformer {
namespace ops {

// q (B, heads, Lq, d) scaled queries; kt (B, heads, d, H * W) keys, transposed; vy (heads, H, d) and vx (heads, W, d):
// the value at map position (y, x) is vy[y] + vx[x]. Returns softmax(q k^T) v: (B, heads, Lq, d).
at::Tensor separable_value_attention_cpu(const at::Tensor& q, const at::Tensor& kt, const at::Tensor& vy,
                                         const at::Tensor& vx);

}  // namespace ops
}  // namespace oneformer
