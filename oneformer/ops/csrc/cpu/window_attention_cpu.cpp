// CPU kernel of oneformer::swin_window_attention: Swin's (shifted) window self-attention for float32 inference.
//
// The windows are given by a row index into the projected tokens, so the gather into window order and the scatter
// back to token order happen inside the kernel instead of as two copies of the whole map. One task is one window and
// a group of heads: its rows are read once, its queries, transposed keys and values are packed into small buffers,
// and then per head S = q k^T (a register-blocked product), softmax(S + bias + mask) and S v run out of the core's
// caches. Window positions that hold padding serve as keys and values but are skipped as queries (no output reads
// them). Inner loops are written with GCC/Clang vector extensions (vec.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "micro_gemm.h"
#include "vec.h"
#include "window_attention.h"

namespace oneformer {
namespace ops {
namespace {

using vec::exp_below_88;
using vec::gemm;
using vec::load;
using vec::splat;
using vec::store;
using vec::VecTypes;

struct Problem {
  const float* qkv;           // (rows, 3C)
  const int64_t* index;       // (windows * N,)
  const float* bias;          // (heads, N, N)
  const float* masks;         // (T, N, N) or null
  const int64_t* mask_index;  // (windows,) or null
  float* out;                 // (out_rows, C)
  int64_t windows, N, C, heads, head_dim, out_rows, group;
  float scale;
};

// Softmax of one row of scores in place: s (N) += bias (+ mask); returns 1 / sum of the exponentials.
template <class V, class VI, int W>
ONEFORMER_INLINE float softmax_row(float* s, const float* bias, const float* mask, int64_t N) {
  int64_t c = 0;
  V vmax = splat<V>(-INFINITY);
  for (; c + W <= N; c += W) {
    V x = load<V>(s + c) + load<V>(bias + c);
    if (mask) x += load<V>(mask + c);
    store<V>(s + c, x);
    vmax = x > vmax ? x : vmax;
  }
  float m = -INFINITY;
  for (int k = 0; k < W; ++k) m = std::max(m, vmax[k]);
  for (int64_t t = c; t < N; ++t) {
    s[t] += bias[t] + (mask ? mask[t] : 0.f);
    m = std::max(m, s[t]);
  }
  const V vm = splat<V>(m);
  V vsum = V{};
  for (c = 0; c + W <= N; c += W) {
    const V e = exp_below_88<V, VI>(load<V>(s + c) - vm);
    store<V>(s + c, e);
    vsum += e;
  }
  float sum = 0.f;
  for (int k = 0; k < W; ++k) sum += vsum[k];
  for (int64_t t = c; t < N; ++t) {
    s[t] = std::exp(s[t] - m);
    sum += s[t];
  }
  return 1.f / sum;
}

// Tasks [begin, end) of window-major (window, head group) pairs. RB x J: register blocking of q k^T; RB2: rows of
// the blocking of S v.
template <int W, int RB, int J, int RB2>
ONEFORMER_INLINE void run_tasks(const Problem& p, int64_t begin, int64_t end) {
  typedef typename VecTypes<W>::vec V;
  typedef typename VecTypes<W>::ivec VI;
  const int64_t N = p.N, d = p.head_dim, C = p.C, G = p.group;
  const int64_t Np = (N + W - 1) / W * W, dp = (d + W - 1) / W * W;
  const int64_t groups = (p.heads + G - 1) / G;
  // per head of the group: queries (real positions only), keys transposed (d x Np), values (N x dp)
  std::vector<float> q(G * N * d), kt(G * d * Np, 0.f), v(G * N * dp, 0.f);
  std::vector<float> s(N * Np), o(N * dp), inv_sum(N);
  std::vector<int64_t> qpos(N);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t w = t / groups, h0 = t % groups * G, hn = std::min(G, p.heads - h0);
    const int64_t* rows = p.index + w * N;
    int64_t M = 0;  // real query positions of this window
    for (int64_t n = 0; n < N; ++n) {
      const float* src = p.qkv + rows[n] * 3 * C + h0 * d;
      if (n + 4 < N) __builtin_prefetch(p.qkv + rows[n + 4] * 3 * C + h0 * d);
      if (rows[n] < p.out_rows) {
        for (int64_t g = 0; g < hn; ++g)
          for (int64_t c = 0; c < d; ++c) q[(g * N + M) * d + c] = src[g * d + c] * p.scale;
        qpos[M++] = n;
      }
      for (int64_t g = 0; g < hn; ++g)
        for (int64_t c = 0; c < d; ++c) v[(g * N + n) * dp + c] = src[2 * C + g * d + c];
    }
    // keys, transposed 16 positions at a time, so that each written line is filled at once
    for (int64_t n0 = 0; n0 < N; n0 += 16) {
      const int64_t n1 = std::min(N, n0 + 16);
      for (int64_t g = 0; g < hn; ++g)
        for (int64_t c = 0; c < d; ++c) {
          float* dst = kt.data() + (g * d + c) * Np;
          for (int64_t n = n0; n < n1; ++n) dst[n] = p.qkv[rows[n] * 3 * C + C + (h0 + g) * d + c];
        }
    }
    const float* mask = p.masks ? p.masks + p.mask_index[w] * N * N : nullptr;
    for (int64_t g = 0; g < hn; ++g) {
      const int64_t h = h0 + g;
      gemm<V, W, RB, J>(q.data() + g * N * d, d, kt.data() + g * d * Np, Np, M, d, Np, s.data(), Np);
      const float* bias = p.bias + h * N * N;
      for (int64_t i = 0; i < M; ++i)
        inv_sum[i] = softmax_row<V, VI, W>(s.data() + i * Np, bias + qpos[i] * N,
                                            mask ? mask + qpos[i] * N : nullptr, N);
      gemm<V, W, RB2, 2>(s.data(), Np, v.data() + g * N * dp, dp, M, N, dp, o.data(), dp);
      for (int64_t i = 0; i < M; ++i) {
        float* dst = p.out + rows[qpos[i]] * C + h * d;
        for (int64_t c = 0; c < d; ++c) dst[c] = o[i * dp + c] * inv_sum[i];
      }
    }
  }
}

void run_baseline(const Problem& p, int64_t begin, int64_t end) { run_tasks<4, 3, 3, 4>(p, begin, end); }

#ifdef ONEFORMER_X86_DISPATCH
ONEFORMER_TARGET_AVX2 void run_avx2(const Problem& p, int64_t begin, int64_t end) {
  run_tasks<8, 3, 3, 4>(p, begin, end);
}
ONEFORMER_TARGET_AVX512 void run_avx512(const Problem& p, int64_t begin, int64_t end) {
  run_tasks<16, 4, 3, 6>(p, begin, end);
}
#endif

void run(const Problem& p, int64_t begin, int64_t end) {
#ifdef ONEFORMER_X86_DISPATCH
  vec::pick_isa(run_avx512, run_avx2, run_baseline)(p, begin, end);
#else
  run_baseline(p, begin, end);
#endif
}

// Every output row must come from exactly one window position (else rows would be left unset, or written by two
// threads), and the indices must stay inside qkv and masks.
void check_window_rows(const at::Tensor& index, int64_t rows, int64_t out_rows, const at::Tensor* mask_index,
                       int64_t num_masks) {
  const int64_t* idx = index.data_ptr<int64_t>();
  std::vector<uint8_t> seen(out_rows, 0);
  for (int64_t i = 0; i < index.numel(); ++i) {
    TORCH_CHECK(idx[i] >= 0 && idx[i] < rows, "swin_window_attention: index[", i, "] = ", idx[i],
                " is outside qkv's ", rows, " rows");
    if (idx[i] < out_rows) {
      TORCH_CHECK(!seen[idx[i]], "swin_window_attention: row ", idx[i], " (< out_rows = ", out_rows,
                  ") appears more than once in index");
      seen[idx[i]] = 1;
    }
  }
  const int64_t covered = std::count(seen.begin(), seen.end(), uint8_t(1));
  TORCH_CHECK(covered == out_rows, "swin_window_attention: index holds ", covered, " of the rows 0..", out_rows - 1,
              "; each must appear exactly once");
  if (mask_index != nullptr) {
    const int64_t* m = mask_index->data_ptr<int64_t>();
    for (int64_t w = 0; w < mask_index->numel(); ++w)
      TORCH_CHECK(m[w] >= 0 && m[w] < num_masks, "swin_window_attention: mask_index[", w, "] = ", m[w],
                  " is outside masks' ", num_masks, " masks");
  }
}

}  // namespace

void check_swin_window_attention_inputs(const at::Tensor& qkv, const at::Tensor& index, const at::Tensor& bias,
                                        const c10::optional<at::Tensor>& masks,
                                        const c10::optional<at::Tensor>& mask_index, int64_t num_heads,
                                        int64_t out_rows) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(1) % 3 == 0, "swin_window_attention: qkv must be (rows, 3 * C), got ",
              qkv.sizes());
  TORCH_CHECK(qkv.scalar_type() == at::kFloat, "swin_window_attention: float32 only, got ", qkv.scalar_type());
  const int64_t C = qkv.size(1) / 3;
  TORCH_CHECK(num_heads > 0 && C % num_heads == 0, "swin_window_attention: num_heads = ", num_heads,
              " must divide C = ", C);
  TORCH_CHECK(bias.dim() == 3 && bias.size(0) == num_heads && bias.size(1) == bias.size(2) && bias.size(1) > 0,
              "swin_window_attention: bias must be (num_heads, N, N) = (", num_heads, ", N, N), got ", bias.sizes());
  TORCH_CHECK(bias.scalar_type() == at::kFloat, "swin_window_attention: bias must be float32, got ",
              bias.scalar_type());
  const int64_t N = bias.size(1);
  TORCH_CHECK(index.dim() == 1 && index.numel() % N == 0 && index.scalar_type() == at::kLong,
              "swin_window_attention: index must be int64 (windows * N,) with N = ", N, ", got ", index.scalar_type(),
              " ", index.sizes());
  TORCH_CHECK(out_rows >= 0 && out_rows <= qkv.size(0), "swin_window_attention: out_rows = ", out_rows,
              " must be in [0, ", qkv.size(0), "]");
  TORCH_CHECK(masks.has_value() == mask_index.has_value(),
              "swin_window_attention: masks and mask_index go together (both given or both None)");
  if (masks.has_value()) {
    TORCH_CHECK(masks->dim() == 3 && masks->size(1) == N && masks->size(2) == N &&
                    masks->scalar_type() == at::kFloat,
                "swin_window_attention: masks must be float32 (T, N, N) with N = ", N, ", got ",
                masks->scalar_type(), " ", masks->sizes());
    TORCH_CHECK(mask_index->dim() == 1 && mask_index->numel() == index.numel() / N &&
                    mask_index->scalar_type() == at::kLong,
                "swin_window_attention: mask_index must be int64 (windows,) = (", index.numel() / N, ",), got ",
                mask_index->scalar_type(), " ", mask_index->sizes());
  }
  for (const at::Tensor* t : {&qkv, &index, &bias}) {
    TORCH_CHECK(t->device().is_cpu(), "swin_window_attention: CPU tensors only, got one on ", t->device());
  }
}

at::Tensor swin_window_attention_cpu(const at::Tensor& qkv, const at::Tensor& index, const at::Tensor& bias,
                                     const c10::optional<at::Tensor>& masks,
                                     const c10::optional<at::Tensor>& mask_index, int64_t num_heads, double scale,
                                     int64_t out_rows) {
  check_swin_window_attention_inputs(qkv, index, bias, masks, mask_index, num_heads, out_rows);
  const int64_t N = bias.size(1), C = qkv.size(1) / 3;
  const int64_t windows = index.numel() / N;
  auto out = at::empty({out_rows, C}, qkv.options());
  if (windows == 0 || out_rows == 0) return out;
  const auto qkv_c = qkv.contiguous(), index_c = index.contiguous(), bias_c = bias.contiguous();
  at::Tensor masks_c, mask_index_c;
  if (masks.has_value()) {
    masks_c = masks->contiguous();
    mask_index_c = mask_index->contiguous();
  }
  check_window_rows(index_c, qkv.size(0), out_rows, masks_c.defined() ? &mask_index_c : nullptr,
                    masks_c.defined() ? masks_c.size(0) : 0);
  Problem p;
  p.qkv = qkv_c.data_ptr<float>();
  p.index = index_c.data_ptr<int64_t>();
  p.bias = bias_c.data_ptr<float>();
  p.masks = masks_c.defined() ? masks_c.data_ptr<float>() : nullptr;
  p.mask_index = masks_c.defined() ? mask_index_c.data_ptr<int64_t>() : nullptr;
  p.out = out.data_ptr<float>();
  p.windows = windows;
  p.N = N;
  p.C = C;
  p.heads = num_heads;
  p.head_dim = C / num_heads;
  p.out_rows = out_rows;
  // up to 8 heads per task: their packed rows stay in the core's L2 cache
  p.group = std::min<int64_t>(num_heads, 8);
  p.scale = static_cast<float>(scale);
  const int64_t tasks = windows * ((num_heads + p.group - 1) / p.group);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) { run(p, begin, end); });
  return out;
}

}  // namespace ops
}  // namespace oneformer
