// CPU kernels of multi-scale deformable attention (float32 / float64).
//
// Forward is parallel over (batch, query) rows: each task writes only its own output row (float32 rows are compiled
// for the CPU's widest vector instructions, vec.h).
// Backward is parallel over (batch, head, level) triples: value positions of one level and one head belong to exactly
// one triple, and so do the location / weight gradients of its points, so no two threads write the same memory
// and the result does not depend on the thread count.
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "../ms_deform_attn.h"
#include "vec.h"

namespace oneformer {
namespace ops {
namespace {

// Bilinear footprint of one sampling point on an H x W map (align_corners=False, zero padding).
template <typename T>
struct Footprint {
  int64_t x0, y0;
  T lx, ly;        // fractional offsets of the point from (x0, y0)
  bool in[4];      // which corners (y0,x0), (y0,x1), (y1,x0), (y1,x1) lie inside the map
  int64_t off[4];  // their offsets in the value array (valid where in[c])
};

// Returns false when the point has no corner inside the map (then it contributes nothing and gets no gradient).
template <typename T>
inline bool footprint(T loc_x, T loc_y, int64_t H, int64_t W, int64_t row_stride, int64_t col_stride,
                      Footprint<T>& f) {
  const T x = loc_x * static_cast<T>(W) - T(0.5);
  const T y = loc_y * static_cast<T>(H) - T(0.5);
  // Written so that NaN locations fail the test.
  if (!(x > T(-1) && y > T(-1) && x < static_cast<T>(W) && y < static_cast<T>(H))) return false;
  const T fx = std::floor(x), fy = std::floor(y);
  f.x0 = static_cast<int64_t>(fx);
  f.y0 = static_cast<int64_t>(fy);
  f.lx = x - fx;
  f.ly = y - fy;
  const bool y0_in = f.y0 >= 0, y1_in = f.y0 + 1 < H, x0_in = f.x0 >= 0, x1_in = f.x0 + 1 < W;
  f.in[0] = y0_in && x0_in;
  f.in[1] = y0_in && x1_in;
  f.in[2] = y1_in && x0_in;
  f.in[3] = y1_in && x1_in;
  const int64_t base = f.y0 * row_stride + f.x0 * col_stride;
  f.off[0] = base;
  f.off[1] = base + col_stride;
  f.off[2] = base + row_stride;
  f.off[3] = base + row_stride + col_stride;
  return true;
}

// Output rows [begin, end) of (batch, query) pairs.
template <typename T>
ONEFORMER_INLINE void forward_rows(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc,
                                   const T* attn, T* out, int64_t S, int64_t M, int64_t D, int64_t Lq, int64_t L,
                                   int64_t P, int64_t begin, int64_t end) {
  const int64_t col_stride = M * D;
  std::vector<T> zeros(D, T(0));  // stands in for corners outside the map
  Footprint<T> f;
  for (int64_t nq = begin; nq < end; ++nq) {
    const T* value_n = value + (nq / Lq) * S * M * D;
    for (int64_t m = 0; m < M; ++m) {
      const int64_t row = nq * M + m;
      T* o = out + row * D;
      for (int64_t d = 0; d < D; ++d) o[d] = T(0);
      const T* loc_r = loc + row * L * P * 2;
      const T* attn_r = attn + row * L * P;
      for (int64_t l = 0; l < L; ++l) {
        const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
        const T* v = value_n + starts[l] * M * D + m * D;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t i = l * P + p;
          if (!footprint(loc_r[2 * i], loc_r[2 * i + 1], H, W, W * col_stride, col_stride, f)) continue;
          const T a = attn_r[i];
          const T hx = T(1) - f.lx, hy = T(1) - f.ly;
          const T w0 = hy * hx * a, w1 = hy * f.lx * a, w2 = f.ly * hx * a, w3 = f.ly * f.lx * a;
          const T* v0 = f.in[0] ? v + f.off[0] : zeros.data();
          const T* v1 = f.in[1] ? v + f.off[1] : zeros.data();
          const T* v2 = f.in[2] ? v + f.off[2] : zeros.data();
          const T* v3 = f.in[3] ? v + f.off[3] : zeros.data();
          for (int64_t d = 0; d < D; ++d) o[d] += w0 * v0[d] + w1 * v1[d] + w2 * v2[d] + w3 * v3[d];
        }
      }
    }
  }
}

#define ONEFORMER_FORWARD_ROWS_ARGS                                                                                \
  const float *value, const int64_t *shapes, const int64_t *starts, const float *loc, const float *attn, float *out, \
      int64_t S, int64_t M, int64_t D, int64_t Lq, int64_t L, int64_t P, int64_t begin, int64_t end
#define ONEFORMER_FORWARD_ROWS_CALL value, shapes, starts, loc, attn, out, S, M, D, Lq, L, P, begin, end

// float32 rows compiled for the widest vector instructions of the CPU (vec.h): the channel loop vectorizes.
#ifdef ONEFORMER_X86_DISPATCH
ONEFORMER_TARGET_AVX2 void forward_rows_avx2(ONEFORMER_FORWARD_ROWS_ARGS) {
  forward_rows<float>(ONEFORMER_FORWARD_ROWS_CALL);
}
ONEFORMER_TARGET_AVX512 void forward_rows_avx512(ONEFORMER_FORWARD_ROWS_ARGS) {
  forward_rows<float>(ONEFORMER_FORWARD_ROWS_CALL);
}
#endif

template <typename T>
void forward_range(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc, const T* attn, T* out,
                   int64_t S, int64_t M, int64_t D, int64_t Lq, int64_t L, int64_t P, int64_t begin, int64_t end) {
  forward_rows<T>(ONEFORMER_FORWARD_ROWS_CALL);
}

template <>
void forward_range<float>(ONEFORMER_FORWARD_ROWS_ARGS) {
#ifdef ONEFORMER_X86_DISPATCH
  vec::pick_isa(forward_rows_avx512, forward_rows_avx2, forward_rows<float>)(ONEFORMER_FORWARD_ROWS_CALL);
#else
  forward_rows<float>(ONEFORMER_FORWARD_ROWS_CALL);
#endif
}

template <typename T>
void forward_kernel(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc, const T* attn,
                    T* out, int64_t N, int64_t S, int64_t M, int64_t D, int64_t Lq, int64_t L, int64_t P) {
  // Enough rows per task to amortize scheduling; each row is M * L * P bilinear samples of D channels.
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, M * L * P));
  at::parallel_for(0, N * Lq, grain, [&](int64_t begin, int64_t end) {
    forward_range<T>(value, shapes, starts, loc, attn, out, S, M, D, Lq, L, P, begin, end);
  });
}

template <typename T>
void backward_kernel(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc, const T* attn,
                     const T* grad_out, T* grad_value, T* grad_loc, T* grad_attn, int64_t N, int64_t S, int64_t M,
                     int64_t D, int64_t Lq, int64_t L, int64_t P) {
  const int64_t col_stride = M * D;
  at::parallel_for(0, N * M * L, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> zeros(D, T(0));
    Footprint<T> f;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t l = task % L;
      const int64_t m = (task / L) % M;
      const int64_t n = task / (L * M);
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const int64_t level_off = (n * S + starts[l]) * M * D + m * D;
      const T* v = value + level_off;
      T* gv = grad_value + level_off;
      for (int64_t q = 0; q < Lq; ++q) {
        const int64_t row = (n * Lq + q) * M + m;
        const T* g = grad_out + row * D;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t i = row * L * P + l * P + p;
          if (!footprint(loc[2 * i], loc[2 * i + 1], H, W, W * col_stride, col_stride, f)) {
            grad_attn[i] = T(0);
            grad_loc[2 * i] = T(0);
            grad_loc[2 * i + 1] = T(0);
            continue;
          }
          const T a = attn[i];
          const T hx = T(1) - f.lx, hy = T(1) - f.ly;
          const T* v0 = f.in[0] ? v + f.off[0] : zeros.data();
          const T* v1 = f.in[1] ? v + f.off[1] : zeros.data();
          const T* v2 = f.in[2] ? v + f.off[2] : zeros.data();
          const T* v3 = f.in[3] ? v + f.off[3] : zeros.data();
          // <grad_out, corner value> for the four corners
          T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
          // lets the compiler vectorize the reductions (the summation order within a dot product may change)
#pragma omp simd reduction(+ : d0, d1, d2, d3)
          for (int64_t d = 0; d < D; ++d) {
            d0 += g[d] * v0[d];
            d1 += g[d] * v1[d];
            d2 += g[d] * v2[d];
            d3 += g[d] * v3[d];
          }
          grad_attn[i] = hy * hx * d0 + hy * f.lx * d1 + f.ly * hx * d2 + f.ly * f.lx * d3;
          // x = loc_x * W - 0.5, so d/d loc_x = W * d/dx (likewise y with H).
          grad_loc[2 * i] = a * (hy * (d1 - d0) + f.ly * (d3 - d2)) * static_cast<T>(W);
          grad_loc[2 * i + 1] = a * (hx * (d2 - d0) + f.lx * (d3 - d1)) * static_cast<T>(H);
          const T w[4] = {hy * hx * a, hy * f.lx * a, f.ly * hx * a, f.ly * f.lx * a};
          for (int c = 0; c < 4; ++c) {
            if (!f.in[c]) continue;
            T* gvc = gv + f.off[c];
            const T wc = w[c];
            for (int64_t d = 0; d < D; ++d) gvc[d] += wc * g[d];
          }
        }
      }
    }
  });
}

// The kernels index value with these numbers, so a wrong level layout must fail here, not read out of bounds.
void check_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t S) {
  const int64_t* shapes = spatial_shapes.data_ptr<int64_t>();
  const int64_t* starts = level_start_index.data_ptr<int64_t>();
  for (int64_t l = 0; l < spatial_shapes.size(0); ++l) {
    const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
    TORCH_CHECK(H >= 0 && W >= 0, "spatial_shapes[", l, "] = (", H, ", ", W, ") is negative");
    TORCH_CHECK(starts[l] >= 0 && starts[l] + H * W <= S, "level ", l, " (level_start_index ", starts[l],
                ", spatial_shapes (", H, ", ", W, ")) exceeds value's ", S, " positions");
  }
}

}  // namespace

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight) {
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  check_levels(spatial_shapes, level_start_index, S);
  auto output = at::empty({N, Lq, M * D}, value.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    forward_kernel<scalar_t>(value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                             level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
                             attn_weight.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), N, S, M, D, Lq, L, P);
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_loc, const at::Tensor& attn_weight,
                                                    const at::Tensor& grad_output) {
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  check_levels(spatial_shapes, level_start_index, S);
  auto grad_value = at::zeros_like(value);
  auto grad_loc = at::zeros_like(sampling_loc);
  auto grad_attn = at::zeros_like(attn_weight);
  if (grad_attn.numel() == 0 || D == 0) return {grad_value, grad_loc, grad_attn};
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    backward_kernel<scalar_t>(value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                              level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
                              attn_weight.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
                              grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(),
                              grad_attn.data_ptr<scalar_t>(), N, S, M, D, Lq, L, P);
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace ops
}  // namespace oneformer
