// oneformer::swin_window_attention: Swin window self-attention for float32 CPU inference (see
// cpu/window_attention_cpu.cpp and oneformer/ops/window_attention.py).
#pragma once

#include <ATen/ATen.h>

namespace oneformer {
namespace ops {

// Raises a c10::Error naming the problem for inputs that do not follow the schema's contract.
void check_swin_window_attention_inputs(const at::Tensor& qkv, const at::Tensor& index, const at::Tensor& bias,
                                        const c10::optional<at::Tensor>& masks,
                                        const c10::optional<at::Tensor>& mask_index, int64_t num_heads,
                                        int64_t out_rows);

// qkv (rows, 3C): the projected tokens (queries | keys | values, heads concatenated in each);
// index (windows * N,): for each position of each window (window-major), its row of qkv;
// bias (num_heads, N, N): added to every window's scores; masks (T, N, N) with mask_index (windows,): window w also
// adds masks[mask_index[w]];
// returns (out_rows, C): the attention output of the position that reads row r < out_rows, at row r (each such row
// must be read by exactly one position; positions reading rows >= out_rows are keys and values only).
at::Tensor swin_window_attention_cpu(const at::Tensor& qkv, const at::Tensor& index, const at::Tensor& bias,
                                     const c10::optional<at::Tensor>& masks,
                                     const c10::optional<at::Tensor>& mask_index, int64_t num_heads, double scale,
                                     int64_t out_rows);

}  // namespace ops
}  // namespace oneformer
