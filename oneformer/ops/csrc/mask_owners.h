// oneformer::mask_owners_: the owner search of panoptic post-processing on the CPU (see cpu/mask_owners_cpu.cpp
// and oneformer/modeling/inference.py).
#pragma once

#include <ATen/ATen.h>

namespace oneformer {
namespace ops {

// Raises a c10::Error naming the problem (prefixed with the operator ``op``) for inputs that do not follow the
// schema's contract: ``probs`` (called ``what``) float32 (c, ...) on the CPU, scores float32 (c,), and best, owner
// (int32) and own_prob contiguous with P pixels each.
void check_owner_search_inputs(const char* op, const char* what, const at::Tensor& probs, int64_t P,
                               const at::Tensor& scores, int64_t offset, const at::Tensor& best,
                               const at::Tensor& owner, const c10::optional<at::Tensor>& own_prob);

// probs (c, ...) mask probabilities of queries offset .. offset + c - 1, scores (c,) their class scores; best, owner
// (int32) and own_prob (optional) hold, per pixel, the largest score x probability so far, its query and that
// query's probability, and are updated in place (a strictly larger value wins). Returns (c,) int64: each query's
// pixels with probability >= 0.5 (weighted_area: score x probability >= 0.5).
at::Tensor mask_owners_cpu(const at::Tensor& probs, const at::Tensor& scores, int64_t offset, bool weighted_area,
                           at::Tensor& best, at::Tensor& owner, const c10::optional<at::Tensor>& own_prob);

// The same owner search on masks (c, h, w) resized bilinearly (align_corners=False, as F.interpolate) to best's
// (H, W) on the fly, without the (c, H, W) resized masks: probability = sigmoid(resized mask) (sigmoid) or the
// resized mask itself.
at::Tensor resized_mask_owners_cpu(const at::Tensor& masks, const at::Tensor& scores, int64_t offset,
                                   bool weighted_area, bool sigmoid, at::Tensor& best, at::Tensor& owner,
                                   const c10::optional<at::Tensor>& own_prob);

}  // namespace ops
}  // namespace oneformer
