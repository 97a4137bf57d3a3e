// CPU kernel of oneformer::mask_owners_: one pass of panoptic post-processing's owner search over a chunk of
// queries. For each pixel it keeps the query with the largest score x mask probability (a strictly larger value
// replaces the current one, so the first query wins ties, as an argmax does), that query's probability, and it
// counts each query's own area; the same results as the PyTorch ops it replaces (multiply, argmax, gather, compare
// and sum), without their passes over the (queries, H, W) probabilities.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

#ifdef __x86_64__
#include <immintrin.h>
#endif

#include "mask_owners.h"
#include "vec.h"

namespace oneformer {
namespace ops {
namespace {

using vec::load;
using vec::splat;
using vec::store;
using vec::VecTypes;

struct Chunk {
  const float* probs;   // (c, P)
  const float* scores;  // (c,)
  int64_t c, P;
  int32_t offset;
  float* best;      // (P,)
  int32_t* owner;   // (P,)
  float* own_prob;  // (P,) or null
};

template <class V, class VI>
ONEFORMER_INLINE VI is_nan(V v) {
  VI bits;
  std::memcpy(&bits, &v, sizeof(V));
  return (bits & 0x7fffffff) > 0x7f800000;
}

template <int W>
ONEFORMER_INLINE void update_pixels(const Chunk& k, int64_t begin, int64_t end) {
  typedef typename VecTypes<W>::vec V;
  typedef typename VecTypes<W>::ivec VI;
  int64_t x = begin;
  for (; x + W <= end; x += W) {
    V best = load<V>(k.best + x);
    VI owner;
    std::memcpy(&owner, k.owner + x, sizeof(VI));
    V own = k.own_prob ? load<V>(k.own_prob + x) : V{};
    for (int64_t q = 0; q < k.c; ++q) {
      const V p = load<V>(k.probs + q * k.P + x);
      const V w = p * k.scores[q];
      // a NaN value replaces a number, as torch.max lets NaN win (NaN tests on the bits: GCC does not vectorize
      // unordered float comparisons of generic vectors)
      const VI better = (w > best) | (is_nan<V, VI>(w) & ~is_nan<V, VI>(best));
      best = better ? w : best;
      owner = better ? VI{} + static_cast<int32_t>(k.offset + q) : owner;
      own = better ? p : own;
    }
    store<V>(k.best + x, best);
    std::memcpy(k.owner + x, &owner, sizeof(VI));
    if (k.own_prob) store<V>(k.own_prob + x, own);
  }
  for (; x < end; ++x) {
    for (int64_t q = 0; q < k.c; ++q) {
      const float p = k.probs[q * k.P + x], w = p * k.scores[q];
      if (w > k.best[x] || (std::isnan(w) && !std::isnan(k.best[x]))) {
        k.best[x] = w;
        k.owner[x] = static_cast<int32_t>(k.offset + q);
        if (k.own_prob) k.own_prob[x] = p;
      }
    }
  }
}

// Pixels of query q whose probability (weighted: score x probability) is at least 0.5.
template <int W>
ONEFORMER_INLINE int64_t count_area(const Chunk& k, int64_t q, bool weighted) {
  typedef typename VecTypes<W>::vec V;
  typedef typename VecTypes<W>::ivec VI;
  const float* p = k.probs + q * k.P;
  const float s = weighted ? k.scores[q] : 1.f;
  VI acc = VI{};
  int64_t x = 0;
  for (; x + W <= k.P; x += W) {
    V v = load<V>(p + x);
    if (weighted) v = v * s;
    acc -= v >= 0.5f;  // true lanes are -1
  }
  int64_t n = 0;
  for (int i = 0; i < W; ++i) n += acc[i];
  for (; x < k.P; ++x) n += (weighted ? p[x] * s : p[x]) >= 0.5f;
  return n;
}

// One range of pixels (update) or one query's area (count) with W-float vectors.
template <int W>
ONEFORMER_INLINE void run_part(const Chunk& k, bool weighted, int64_t* area, int64_t begin, int64_t end,
                               bool pixels) {
  if (pixels) {
    update_pixels<W>(k, begin, end);
  } else {
    for (int64_t q = begin; q < end; ++q) area[q] = count_area<W>(k, q, weighted);
  }
}

void part_baseline(const Chunk& k, bool weighted, int64_t* area, int64_t begin, int64_t end, bool pixels) {
  run_part<4>(k, weighted, area, begin, end, pixels);
}

#ifdef ONEFORMER_X86_DISPATCH
ONEFORMER_TARGET_AVX2 void part_avx2(const Chunk& k, bool weighted, int64_t* area, int64_t begin, int64_t end,
                                     bool pixels) {
  run_part<8>(k, weighted, area, begin, end, pixels);
}
// AVX-512 with intrinsics: GCC turns the comparisons of generic 16-float vectors above, whose results are combined,
// into per-lane scalar code.
ONEFORMER_TARGET_AVX512 void part_avx512(const Chunk& k, bool weighted, int64_t* area, int64_t begin, int64_t end,
                                         bool pixels) {
  if (!pixels) {
    const __m512 half = _mm512_set1_ps(0.5f);
    for (int64_t q = begin; q < end; ++q) {
      const float* p = k.probs + q * k.P;
      const __m512 s = _mm512_set1_ps(weighted ? k.scores[q] : 1.f);
      int64_t n = 0, x = 0;
      for (; x + 16 <= k.P; x += 16) {
        __m512 v = _mm512_loadu_ps(p + x);
        if (weighted) v = _mm512_mul_ps(v, s);
        n += __builtin_popcount(_mm512_cmp_ps_mask(v, half, _CMP_GE_OQ));
      }
      for (; x < k.P; ++x) n += (weighted ? p[x] * k.scores[q] : p[x]) >= 0.5f;
      area[q] = n;
    }
    return;
  }
  int64_t x = begin;
  for (; x + 16 <= end; x += 16) {
    __m512 best = _mm512_loadu_ps(k.best + x);
    __m512i owner = _mm512_loadu_si512(k.owner + x);
    __m512 own = k.own_prob ? _mm512_loadu_ps(k.own_prob + x) : _mm512_setzero_ps();
    for (int64_t q = 0; q < k.c; ++q) {
      const __m512 p = _mm512_loadu_ps(k.probs + q * k.P + x);
      const __m512 w = _mm512_mul_ps(p, _mm512_set1_ps(k.scores[q]));
      // larger, or NaN over a number (as torch.max lets NaN win)
      const __mmask16 better = _mm512_cmp_ps_mask(w, best, _CMP_GT_OQ) |
                               (_mm512_cmp_ps_mask(w, w, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
      best = _mm512_mask_blend_ps(better, best, w);
      owner = _mm512_mask_blend_epi32(better, owner, _mm512_set1_epi32(static_cast<int32_t>(k.offset + q)));
      own = _mm512_mask_blend_ps(better, own, p);
    }
    _mm512_storeu_ps(k.best + x, best);
    _mm512_storeu_si512(k.owner + x, owner);
    if (k.own_prob) _mm512_storeu_ps(k.own_prob + x, own);
  }
  update_pixels<1>(k, x, end);  // the last pixels, one at a time
}
#endif

void run_part(const Chunk& k, bool weighted, int64_t* area, int64_t begin, int64_t end, bool pixels) {
#ifdef ONEFORMER_X86_DISPATCH
  switch (vec::best_isa()) {
    case vec::Isa::kAvx512:
      return part_avx512(k, weighted, area, begin, end, pixels);
    case vec::Isa::kAvx2:
      return part_avx2(k, weighted, area, begin, end, pixels);
    default:
      break;
  }
#endif
  part_baseline(k, weighted, area, begin, end, pixels);
}

}  // namespace

void check_mask_owners_inputs(const at::Tensor& probs, const at::Tensor& scores, int64_t offset,
                              const at::Tensor& best, const at::Tensor& owner,
                              const c10::optional<at::Tensor>& own_prob) {
  TORCH_CHECK(probs.dim() >= 1 && probs.scalar_type() == at::kFloat,
              "mask_owners_: probs must be float32 (c, ...), got ", probs.scalar_type(), " ", probs.sizes());
  const int64_t c = probs.size(0), P = c ? probs.numel() / c : 0;
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == c && scores.scalar_type() == at::kFloat,
              "mask_owners_: scores must be float32 (c,) = (", c, ",), got ", scores.scalar_type(), " ",
              scores.sizes());
  TORCH_CHECK(best.numel() == P && best.scalar_type() == at::kFloat && best.is_contiguous(),
              "mask_owners_: best must be a contiguous float32 tensor of ", P, " pixels, got ", best.scalar_type(),
              " ", best.sizes());
  TORCH_CHECK(owner.numel() == P && owner.scalar_type() == at::kInt && owner.is_contiguous(),
              "mask_owners_: owner must be a contiguous int32 tensor of ", P, " pixels, got ", owner.scalar_type(),
              " ", owner.sizes());
  if (own_prob.has_value()) {
    TORCH_CHECK(own_prob->numel() == P && own_prob->scalar_type() == at::kFloat && own_prob->is_contiguous(),
                "mask_owners_: own_prob must be a contiguous float32 tensor of ", P, " pixels, got ",
                own_prob->scalar_type(), " ", own_prob->sizes());
  }
  TORCH_CHECK(offset >= 0 && offset + c <= INT32_MAX, "mask_owners_: offset ", offset, " out of range");
  for (const at::Tensor* t : {&probs, &scores, &best, &owner}) {
    TORCH_CHECK(t->device().is_cpu(), "mask_owners_: CPU tensors only, got one on ", t->device());
  }
}

at::Tensor mask_owners_cpu(const at::Tensor& probs, const at::Tensor& scores, int64_t offset, bool weighted_area,
                           at::Tensor& best, at::Tensor& owner, const c10::optional<at::Tensor>& own_prob) {
  check_mask_owners_inputs(probs, scores, offset, best, owner, own_prob);
  const auto probs_c = probs.contiguous(), scores_c = scores.contiguous();
  const int64_t c = probs.size(0);
  auto area = at::zeros({c}, probs.options().dtype(at::kLong));
  if (c == 0 || best.numel() == 0) return area;
  Chunk k{probs_c.data_ptr<float>(), scores_c.data_ptr<float>(), c, probs.numel() / c, static_cast<int32_t>(offset),
          best.data_ptr<float>(), owner.data_ptr<int32_t>(),
          own_prob.has_value() ? own_prob->data_ptr<float>() : nullptr};
  int64_t* a = area.data_ptr<int64_t>();
  at::parallel_for(0, k.P, 8192, [&](int64_t begin, int64_t end) { run_part(k, weighted_area, a, begin, end, true); });
  at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) { run_part(k, weighted_area, a, begin, end, false); });
  return area;
}

}  // namespace ops
}  // namespace oneformer
