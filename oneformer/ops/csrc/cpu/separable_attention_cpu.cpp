// CPU kernel of oneformer::separable_value_attention: attention softmax(q k^T) v over an H x W map whose values are
// a row term plus a column term, v[y * W + x] = vy[y] + vx[x]. OneFormer's class transformer attends to the sine
// positional encoding of the mask features, whose first half of channels depends on the row only and the second
// half on the column only, so its projected values split that way. Then
//   out_i = sum_y R_i(y) vy[y] + sum_x C_i(x) vx[x],
// R_i and C_i being the row and column sums of query i's attention weights: the (H*W x d) value product becomes
// two small ones and only q k^T remains at full size. Keys are read one map row at a time (a softmax online over
// rows, as flash attention does over key blocks), for a block of queries per task. Float32 inference.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "micro_gemm.h"
#include "separable_attention.h"
#include "vec.h"

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
  const float* q;   // (B, heads, Lq, d)
  const float* kt;  // (B, heads, d, H * W)
  const float* vy;  // (heads, H, d)
  const float* vx;  // (heads, W, d)
  float* out;       // (B, heads, Lq, d)
  int64_t heads, Lq, d, H, W;
};

constexpr int64_t kQueryBlock = 32;  // queries per task: the keys of a head are read once per block

// Tasks [begin, end) of (batch * head, query block). RB x J: register blocking of q k^T.
template <int VW, int RB, int J>
ONEFORMER_INLINE void run_tasks(const Problem& p, int64_t begin, int64_t end) {
  typedef typename VecTypes<VW>::vec V;
  typedef typename VecTypes<VW>::ivec VI;
  const int64_t d = p.d, H = p.H, W = p.W, HW = H * W;
  const int64_t Wp = (W + VW - 1) / VW * VW, Wv = W / VW * VW;
  const int64_t blocks = (p.Lq + kQueryBlock - 1) / kQueryBlock;
  // one map row of keys (d x Wp, zero padded), its scores, and per query: the running column sums (Wp), the row sums
  // with the maximum they were taken under (H each), the running maximum and total
  std::vector<float> kbuf(d * Wp, 0.f), s(kQueryBlock * Wp), col(kQueryBlock * Wp), row(kQueryBlock * H),
      row_max(kQueryBlock * H), m(kQueryBlock), total(kQueryBlock);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t bh = t / blocks, i0 = t % blocks * kQueryBlock, M = std::min(kQueryBlock, p.Lq - i0);
    const int64_t h = bh % p.heads;
    const float* q = p.q + (bh * p.Lq + i0) * d;
    const float* kt = p.kt + bh * d * HW;
    std::fill(col.begin(), col.end(), 0.f);
    std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
    std::fill(total.begin(), total.end(), 0.f);
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t c = 0; c < d; ++c) std::memcpy(kbuf.data() + c * Wp, kt + c * HW + y * W, W * sizeof(float));
      gemm<V, VW, RB, J>(q, d, kbuf.data(), Wp, M, d, Wp, s.data(), Wp);
      for (int64_t i = 0; i < M; ++i) {
        const float* si = s.data() + i * Wp;
        float* ci = col.data() + i * Wp;
        V vmax = splat<V>(-std::numeric_limits<float>::infinity());
        int64_t x = 0;
        for (; x < Wv; x += VW) {
          const V v = load<V>(si + x);
          vmax = v > vmax ? v : vmax;
        }
        float mx = -std::numeric_limits<float>::infinity();
        for (int k = 0; k < VW; ++k) mx = std::max(mx, vmax[k]);
        for (; x < W; ++x) mx = std::max(mx, si[x]);
        if (mx > m[i]) {  // a new maximum: rescale what was summed under the old one (nothing before the first row)
          if (y > 0) {
            const float scale = std::exp(m[i] - mx);
            total[i] *= scale;
            for (int64_t z = 0; z < Wp; z += VW) store<V>(ci + z, load<V>(ci + z) * scale);
          }
          m[i] = mx;
        }
        const V vm = splat<V>(m[i]);
        V vsum = V{};
        for (x = 0; x < Wv; x += VW) {
          const V e = exp_below_88<V, VI>(load<V>(si + x) - vm);
          store<V>(ci + x, load<V>(ci + x) + e);
          vsum += e;
        }
        float sum = 0.f;
        for (int k = 0; k < VW; ++k) sum += vsum[k];
        for (; x < W; ++x) {
          const float e = std::exp(si[x] - m[i]);
          ci[x] += e;
          sum += e;
        }
        row[i * H + y] = sum;
        row_max[i * H + y] = m[i];
        total[i] += sum;
      }
    }
    // out_i = sum_y R_i(y) vy[y] + sum_x C_i(x) vx[x], with the sums brought to the final maximum and normalized
    const float* vy = p.vy + h * H * d;
    const float* vx = p.vx + h * W * d;
    for (int64_t i = 0; i < M; ++i) {
      const float inv = 1.f / total[i];
      float* o = p.out + (bh * p.Lq + i0 + i) * d;
      std::fill(o, o + d, 0.f);
      for (int64_t y = 0; y < H; ++y) {
        const float r = row[i * H + y] * std::exp(row_max[i * H + y] - m[i]) * inv;
        for (int64_t c = 0; c < d; ++c) o[c] += r * vy[y * d + c];
      }
      const float* ci = col.data() + i * Wp;
      for (int64_t x = 0; x < W; ++x) {
        const float r = ci[x] * inv;
        for (int64_t c = 0; c < d; ++c) o[c] += r * vx[x * d + c];
      }
    }
  }
}

void run_baseline(const Problem& p, int64_t begin, int64_t end) { run_tasks<4, 3, 3>(p, begin, end); }

#ifdef ONEFORMER_X86_DISPATCH
ONEFORMER_TARGET_AVX2 void run_avx2(const Problem& p, int64_t begin, int64_t end) { run_tasks<8, 3, 3>(p, begin, end); }
ONEFORMER_TARGET_AVX512 void run_avx512(const Problem& p, int64_t begin, int64_t end) {
  run_tasks<16, 4, 4>(p, begin, end);
}
#endif

void run(const Problem& p, int64_t begin, int64_t end) {
#ifdef ONEFORMER_X86_DISPATCH
  vec::pick_isa(run_avx512, run_avx2, run_baseline)(p, begin, end);
#else
  run_baseline(p, begin, end);
#endif
}

}  // namespace

at::Tensor separable_value_attention_cpu(const at::Tensor& q, const at::Tensor& kt, const at::Tensor& vy,
                                         const at::Tensor& vx) {
  TORCH_CHECK(q.dim() == 4, "separable_value_attention: q must be (B, heads, Lq, d), got ", q.sizes());
  const int64_t B = q.size(0), heads = q.size(1), Lq = q.size(2), d = q.size(3);
  TORCH_CHECK(vy.dim() == 3 && vy.size(0) == heads && vy.size(2) == d,
              "separable_value_attention: vy must be (heads, H, d) = (", heads, ", H, ", d, "), got ", vy.sizes());
  TORCH_CHECK(vx.dim() == 3 && vx.size(0) == heads && vx.size(2) == d,
              "separable_value_attention: vx must be (heads, W, d) = (", heads, ", W, ", d, "), got ", vx.sizes());
  const int64_t H = vy.size(1), W = vx.size(1);
  TORCH_CHECK(H > 0 && W > 0, "separable_value_attention: the map is empty (H = ", H, ", W = ", W, ")");
  TORCH_CHECK(kt.dim() == 4 && kt.size(0) == B && kt.size(1) == heads && kt.size(2) == d && kt.size(3) == H * W,
              "separable_value_attention: kt must be (B, heads, d, H * W) = (", B, ", ", heads, ", ", d, ", ", H * W,
              "), got ", kt.sizes());
  for (const at::Tensor* t : {&q, &kt, &vy, &vx}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, "separable_value_attention: float32 only, got ", t->scalar_type());
    TORCH_CHECK(t->device().is_cpu(), "separable_value_attention: CPU tensors only, got one on ", t->device());
  }
  auto out = at::empty({B, heads, Lq, d}, q.options());
  if (out.numel() == 0) return out;
  const auto q_c = q.contiguous(), kt_c = kt.contiguous(), vy_c = vy.contiguous(), vx_c = vx.contiguous();
  const Problem p{q_c.data_ptr<float>(), kt_c.data_ptr<float>(), vy_c.data_ptr<float>(), vx_c.data_ptr<float>(),
                  out.data_ptr<float>(), heads, Lq, d, H, W};
  const int64_t tasks = B * heads * ((Lq + kQueryBlock - 1) / kQueryBlock);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) { run(p, begin, end); });
  return out;
}

}  // namespace ops
}  // namespace oneformer
