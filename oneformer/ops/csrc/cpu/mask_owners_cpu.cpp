// CPU kernel of oneformer::mask_owners_: one pass of panoptic post-processing's owner search over a chunk of
// queries. For each pixel it keeps the query with the largest score x mask probability (a strictly larger value
// replaces the current one, so the first query wins ties, as an argmax does), that query's probability, and it
// counts each query's own area; the same results as the PyTorch ops it replaces (multiply, argmax, gather, compare
// and sum), without their passes over the (queries, H, W) probabilities.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

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
ONEFORMER_TARGET_AVX512 ONEFORMER_INLINE void update_pixels_avx512(const Chunk& k, int64_t begin, int64_t end) {
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
  update_pixels_avx512(k, begin, end);
}
#endif

void run_part(const Chunk& k, bool weighted, int64_t* area, int64_t begin, int64_t end, bool pixels) {
#ifdef ONEFORMER_X86_DISPATCH
  vec::pick_isa(part_avx512, part_avx2, part_baseline)(k, weighted, area, begin, end, pixels);
#else
  part_baseline(k, weighted, area, begin, end, pixels);
#endif
}


// Bilinear resizing (align_corners=False) along one axis, with the source indices and weights that ATen's
// upsample_bilinear2d computes: source = max(in / out * (i + 0.5) - 0.5, 0) in float, its floor (at most in - 1)
// and the next index (clamped), weights 1 - frac and frac; the same index twice with weights 1, 0 when in == out.
struct Axis {
  std::vector<int64_t> i0, i1;
  std::vector<float> w0, w1;
};

Axis resize_axis(int64_t in, int64_t out) {
  Axis a;
  a.i0.resize(out);
  a.i1.resize(out);
  a.w0.resize(out);
  a.w1.resize(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t i = 0; i < out; ++i) {
    if (in == out) {
      a.i0[i] = a.i1[i] = i;
      a.w0[i] = 1.f;
      a.w1[i] = 0.f;
      continue;
    }
    const float src = std::max(scale * (static_cast<float>(i) + 0.5f) - 0.5f, 0.f);
    const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), in - 1);
    const float lambda = std::min(std::max(src - static_cast<float>(i0), 0.f), 1.f);
    a.i0[i] = i0;
    a.i1[i] = i0 + (i0 < in - 1 ? 1 : 0);
    a.w0[i] = 1.f - lambda;
    a.w1[i] = lambda;
  }
  return a;
}

struct Resized {
  const float* masks;   // (c, h, w) logits (sigmoid) or probabilities
  const float* scores;  // (c,)
  int64_t c, h, w, H, W;
  int32_t offset;
  bool sigmoid, weighted;
  const Axis *rows, *cols;  // output row -> source rows, output column -> source columns
  float* best;              // (H, W)
  int32_t* owner;           // (H, W)
  float* own_prob;          // (H, W) or null
};

// Output rows [Y0, Y1) of the resized owner search: per query, its source rows that these output rows read are
// resized along the width once (to xs), then each output row blends two of them, applies the sigmoid and updates
// the owners of that row with ``update`` (the per-pixel state of a band stays in the core's caches); area[q] +=
// its pixels >= 0.5.
typedef void (*UpdateRow)(const Chunk& k, int64_t begin, int64_t end);

template <int W>
ONEFORMER_INLINE void resized_rows(const Resized& r, int64_t Y0, int64_t Y1, int64_t* area, UpdateRow update) {
  typedef typename VecTypes<W>::vec V;
  typedef typename VecTypes<W>::ivec VI;
  const int64_t s0 = r.rows->i0[Y0], s1 = r.rows->i1[Y1 - 1];  // source rows are nondecreasing in Y
  std::vector<float> xs((s1 - s0 + 1) * r.W), prob(r.W);
  const int64_t* x0 = r.cols->i0.data();
  const int64_t* x1 = r.cols->i1.data();
  const float* wx0 = r.cols->w0.data();
  const float* wx1 = r.cols->w1.data();
  for (int64_t q = 0; q < r.c; ++q) {
    const float* src = r.masks + q * r.h * r.w;
    for (int64_t s = s0; s <= s1; ++s) {
      const float* in = src + s * r.w;
      float* out = xs.data() + (s - s0) * r.W;
      for (int64_t X = 0; X < r.W; ++X) out[X] = in[x0[X]] * wx0[X] + in[x1[X]] * wx1[X];
    }
    const float score = r.scores[q];
    const float area_scale = r.weighted ? score : 1.f;
    int64_t n = 0;
    for (int64_t Y = Y0; Y < Y1; ++Y) {
      const float* a = xs.data() + (r.rows->i0[Y] - s0) * r.W;
      const float* b = xs.data() + (r.rows->i1[Y] - s0) * r.W;
      const float wa = r.rows->w0[Y], wb = r.rows->w1[Y];
      VI count = VI{};
      int64_t X = 0;
      for (; X + W <= r.W; X += W) {
        V v = load<V>(a + X) * wa + load<V>(b + X) * wb;
        if (r.sigmoid) v = 1.f / (1.f + vec::exp_any<V, VI>(-v));  // as torch.sigmoid: 1 / (1 + exp(-x))
        store<V>(prob.data() + X, v);
        count -= v * area_scale >= 0.5f;  // true lanes are -1
      }
      for (int k = 0; k < W; ++k) n += count[k];
      for (; X < r.W; ++X) {
        float v = a[X] * wa + b[X] * wb;
        if (r.sigmoid) v = 1.f / (1.f + std::exp(-v));
        prob[X] = v;
        n += v * area_scale >= 0.5f;
      }
      const Chunk k{prob.data(), r.scores + q, 1, r.W, static_cast<int32_t>(r.offset + q), r.best + Y * r.W,
                    r.owner + Y * r.W, r.own_prob ? r.own_prob + Y * r.W : nullptr};
      update(k, 0, r.W);
    }
    area[q] += n;
  }
}

void update_row_baseline(const Chunk& k, int64_t begin, int64_t end) { update_pixels<4>(k, begin, end); }
void resized_baseline(const Resized& r, int64_t Y0, int64_t Y1, int64_t* area) {
  resized_rows<4>(r, Y0, Y1, area, update_row_baseline);
}

#ifdef ONEFORMER_X86_DISPATCH
ONEFORMER_TARGET_AVX2 void update_row_avx2(const Chunk& k, int64_t begin, int64_t end) {
  update_pixels<8>(k, begin, end);
}
ONEFORMER_TARGET_AVX2 void resized_avx2(const Resized& r, int64_t Y0, int64_t Y1, int64_t* area) {
  resized_rows<8>(r, Y0, Y1, area, update_row_avx2);
}
ONEFORMER_TARGET_AVX512 void update_row_avx512(const Chunk& k, int64_t begin, int64_t end) {
  update_pixels_avx512(k, begin, end);
}
ONEFORMER_TARGET_AVX512 void resized_avx512(const Resized& r, int64_t Y0, int64_t Y1, int64_t* area) {
  resized_rows<16>(r, Y0, Y1, area, update_row_avx512);
}
#endif

void run_resized(const Resized& r, int64_t Y0, int64_t Y1, int64_t* area) {
#ifdef ONEFORMER_X86_DISPATCH
  vec::pick_isa(resized_avx512, resized_avx2, resized_baseline)(r, Y0, Y1, area);
#else
  resized_baseline(r, Y0, Y1, area);
#endif
}

}  // namespace

void check_owner_search_inputs(const char* op, const char* what, const at::Tensor& probs, int64_t P,
                               const at::Tensor& scores, int64_t offset, const at::Tensor& best,
                               const at::Tensor& owner, const c10::optional<at::Tensor>& own_prob) {
  TORCH_CHECK(probs.dim() >= 1 && probs.scalar_type() == at::kFloat, op, ": ", what, " must be float32 (c, ...), got ",
              probs.scalar_type(), " ", probs.sizes());
  const int64_t c = probs.size(0);
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == c && scores.scalar_type() == at::kFloat, op,
              ": scores must be float32 (c,) = (", c, ",), got ", scores.scalar_type(), " ", scores.sizes());
  TORCH_CHECK(best.numel() == P && best.scalar_type() == at::kFloat && best.is_contiguous(), op,
              ": best must be a contiguous float32 tensor of ", P, " pixels, got ", best.scalar_type(), " ",
              best.sizes());
  TORCH_CHECK(owner.numel() == P && owner.scalar_type() == at::kInt && owner.is_contiguous(), op,
              ": owner must be a contiguous int32 tensor of ", P, " pixels, got ", owner.scalar_type(), " ",
              owner.sizes());
  if (own_prob.has_value()) {
    TORCH_CHECK(own_prob->numel() == P && own_prob->scalar_type() == at::kFloat && own_prob->is_contiguous(), op,
                ": own_prob must be a contiguous float32 tensor of ", P, " pixels, got ", own_prob->scalar_type(), " ",
                own_prob->sizes());
  }
  TORCH_CHECK(offset >= 0 && offset + c <= INT32_MAX, op, ": offset ", offset, " out of range");
  for (const at::Tensor* t : {&probs, &scores, &best, &owner}) {
    TORCH_CHECK(t->device().is_cpu(), op, ": CPU tensors only, got one on ", t->device());
  }
}

at::Tensor mask_owners_cpu(const at::Tensor& probs, const at::Tensor& scores, int64_t offset, bool weighted_area,
                           at::Tensor& best, at::Tensor& owner, const c10::optional<at::Tensor>& own_prob) {
  const int64_t pixels = probs.dim() >= 1 && probs.size(0) ? probs.numel() / probs.size(0) : 0;
  check_owner_search_inputs("mask_owners_", "probs", probs, pixels, scores, offset, best, owner, own_prob);
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

at::Tensor resized_mask_owners_cpu(const at::Tensor& masks, const at::Tensor& scores, int64_t offset,
                                   bool weighted_area, bool sigmoid, at::Tensor& best, at::Tensor& owner,
                                   const c10::optional<at::Tensor>& own_prob) {
  TORCH_CHECK(masks.dim() == 3, "resized_mask_owners_: masks must be (c, h, w), got ", masks.sizes());
  TORCH_CHECK(best.dim() == 2, "resized_mask_owners_: best must be (H, W), got ", best.sizes());
  const int64_t c = masks.size(0), h = masks.size(1), w = masks.size(2), H = best.size(0), W = best.size(1);
  TORCH_CHECK(c == 0 || (h > 0 && w > 0), "resized_mask_owners_: masks (", c, ", ", h, ", ", w,
              ") have no pixels to resize");
  // the same contract as mask_owners_, for the resized (H, W) pixels
  check_owner_search_inputs("resized_mask_owners_", "masks", masks, H * W, scores, offset, best, owner, own_prob);
  const auto masks_c = masks.contiguous(), scores_c = scores.contiguous();
  auto area = at::zeros({c}, masks.options().dtype(at::kLong));
  if (c == 0 || best.numel() == 0) return area;
  const Axis rows = resize_axis(h, H), cols = resize_axis(w, W);
  const Resized r{masks_c.data_ptr<float>(), scores_c.data_ptr<float>(), c, h, w, H, W, static_cast<int32_t>(offset),
                  sigmoid, weighted_area, &rows, &cols, best.data_ptr<float>(), owner.data_ptr<int32_t>(),
                  own_prob.has_value() ? own_prob->data_ptr<float>() : nullptr};
  // bands of 16 output rows: each thread adds its queries' areas to its own row of counts
  constexpr int64_t kBand = 16;
  const int64_t bands = (H + kBand - 1) / kBand;
  std::vector<int64_t> counts(at::get_num_threads() * c, 0);
  at::parallel_for(0, bands, 1, [&](int64_t begin, int64_t end) {
    int64_t* mine = counts.data() + at::get_thread_num() * c;
    for (int64_t band = begin; band < end; ++band)
      run_resized(r, band * kBand, std::min(H, (band + 1) * kBand), mine);
  });
  int64_t* a = area.data_ptr<int64_t>();
  for (int64_t t = 0; t < at::get_num_threads(); ++t)
    for (int64_t q = 0; q < c; ++q) a[q] += counts[t * c + q];
  return area;
}

}  // namespace ops
}  // namespace oneformer
