// CUDA kernels of multi-scale deformable attention for float32, float64, float16 and bfloat16 values.
//
// A "team" of consecutive lanes (a power of two <= 32, inside one warp) handles one (batch, query, head) row. Each
// lane owns groups of V consecutive channels (V * sizeof(value) = 16 bytes when the channel count allows it, else
// V = 1), so value reads and output writes are 16-byte vector accesses, coalesced across the team (backward uses
// V > 1 only where vector atomics exist, see ms_deform_attn_cuda_backward).
// Reduced-precision values are sampled at float32 locations and accumulated in float32 (at::opmath_type).
// Backward reduces the location / weight gradients over the team with warp shuffles (control flow is uniform
// within a warp, so every lane reaches every shuffle) and scatters value gradients with atomicAdd into an opmath
// buffer.
#include <ATen/OpMathType.h>
// c10's CUDA headers only: ATen/cuda/CUDAContext.h would also need the cuBLAS/cuSPARSE headers, which a minimal
// toolkit may lack.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../ms_deform_attn.h"

namespace oneformer {
namespace ops {
namespace {

constexpr int kThreads = 256;

// Bilinear footprint of one point (align_corners=False, zero padding); inside == false means no corner is on the map.
template <typename acc_t>
struct Footprint {
  bool inside;
  bool in[4];
  int64_t off[4];  // element offsets of corners (y0,x0), (y0,x1), (y1,x0), (y1,x1) relative to the level base
  acc_t lx, ly;
};

template <typename acc_t>
__device__ __forceinline__ Footprint<acc_t> footprint(acc_t loc_x, acc_t loc_y, int64_t H, int64_t W,
                                                      int64_t col_stride) {
  Footprint<acc_t> f;
  const acc_t x = loc_x * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(H) - acc_t(0.5);
  f.inside = x > acc_t(-1) && y > acc_t(-1) && x < static_cast<acc_t>(W) && y < static_cast<acc_t>(H);
  const acc_t fx = f.inside ? floor(x) : acc_t(0);
  const acc_t fy = f.inside ? floor(y) : acc_t(0);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  f.lx = f.inside ? x - fx : acc_t(0);
  f.ly = f.inside ? y - fy : acc_t(0);
  const bool y0_in = f.inside && y0 >= 0, y1_in = f.inside && y0 + 1 < H;
  const bool x0_in = x0 >= 0, x1_in = x0 + 1 < W;
  f.in[0] = y0_in && x0_in;
  f.in[1] = y0_in && x1_in;
  f.in[2] = y1_in && x0_in;
  f.in[3] = y1_in && x1_in;
  const int64_t row_stride = W * col_stride;
  const int64_t base = y0 * row_stride + x0 * col_stride;
  f.off[0] = base;
  f.off[1] = base + col_stride;
  f.off[2] = base + row_stride;
  f.off[3] = base + row_stride + col_stride;
  return f;
}

// V consecutive values at p (16-byte aligned when V > 1) converted to the accumulation type.
template <typename scalar_t, int V>
__device__ __forceinline__ void load_vec(const scalar_t* p, at::opmath_type<scalar_t>* out) {
  if constexpr (V > 1) {
    static_assert(V * sizeof(scalar_t) == 16, "vector accesses are 16 bytes");
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const scalar_t* e = reinterpret_cast<const scalar_t*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = static_cast<at::opmath_type<scalar_t>>(e[i]);
  } else {
    out[0] = static_cast<at::opmath_type<scalar_t>>(p[0]);
  }
}

template <typename scalar_t, int V>
__device__ __forceinline__ void store_vec(scalar_t* p, const at::opmath_type<scalar_t>* in) {
  if constexpr (V > 1) {
    uint4 raw;
    scalar_t* e = reinterpret_cast<scalar_t*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) e[i] = static_cast<scalar_t>(in[i]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
    p[0] = static_cast<scalar_t>(in[0]);
  }
}

template <typename scalar_t, int V>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts,
                               const at::opmath_type<scalar_t>* __restrict__ loc,
                               const at::opmath_type<scalar_t>* __restrict__ attn, scalar_t* __restrict__ out,
                               int64_t rows, int64_t Lq, int64_t S, int64_t M, int64_t D, int64_t L, int64_t P,
                               int team) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = tid / team;  // (n * Lq + q) * M + m
  const int lane = static_cast<int>(tid % team);
  if (row >= rows) return;  // forward has no shuffles, so early exit is safe
  const int64_t m = row % M;
  const int64_t n = row / (Lq * M);
  const int64_t col_stride = M * D;
  const scalar_t* value_nm = value + n * S * col_stride + m * D;
  const acc_t* loc_r = loc + row * L * P * 2;
  const acc_t* attn_r = attn + row * L * P;
  for (int64_t c = static_cast<int64_t>(lane) * V; c < D; c += static_cast<int64_t>(team) * V) {
    acc_t acc[V];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = 0;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const scalar_t* v = value_nm + starts[l] * col_stride + c;
#pragma unroll 2
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = l * P + p;
        const Footprint<acc_t> f = footprint<acc_t>(loc_r[2 * i], loc_r[2 * i + 1], H, W, col_stride);
        if (!f.inside) continue;
        const acc_t a = attn_r[i];
        const acc_t hx = acc_t(1) - f.lx, hy = acc_t(1) - f.ly;
        const acc_t w[4] = {hy * hx * a, hy * f.lx * a, f.ly * hx * a, f.ly * f.lx * a};
        acc_t corner[4][V];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (f.in[k]) {
            load_vec<scalar_t, V>(v + f.off[k], corner[k]);
          } else {
#pragma unroll
            for (int e = 0; e < V; ++e) corner[k][e] = 0;
          }
        }
#pragma unroll
        for (int e = 0; e < V; ++e)
          acc[e] += w[0] * corner[0][e] + w[1] * corner[1][e] + w[2] * corner[2][e] + w[3] * corner[3][e];
      }
    }
    store_vec<scalar_t, V>(out + row * D + c, acc);
  }
}

template <typename T>
__device__ __forceinline__ T team_sum(T v, int team) {
  for (int offset = team / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset, team);
  return v;
}

template <typename acc_t, int V>
__device__ __forceinline__ void atomic_add_vec(acc_t* p, const acc_t* x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kVectorAtomic = std::is_same<acc_t, float>::value && V == 4;
#else
  constexpr bool kVectorAtomic = false;
#endif
  if constexpr (kVectorAtomic) {
    // one vector atomic instead of four (Hopper and newer)
    atomicAdd(reinterpret_cast<float4*>(p), make_float4(x[0], x[1], x[2], x[3]));
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) atomicAdd(p + e, x[e]);
  }
}

template <typename scalar_t, int V>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts,
                                const at::opmath_type<scalar_t>* __restrict__ loc,
                                const at::opmath_type<scalar_t>* __restrict__ attn,
                                const scalar_t* __restrict__ grad_out,
                                at::opmath_type<scalar_t>* __restrict__ grad_value_acc,
                                at::opmath_type<scalar_t>* __restrict__ grad_loc,
                                at::opmath_type<scalar_t>* __restrict__ grad_attn, int64_t rows, int64_t Lq,
                                int64_t S, int64_t M, int64_t D, int64_t L, int64_t P, int team) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row_raw = tid / team;
  const int lane = static_cast<int>(tid % team);
  // Lanes past the last row still run the loops (as row 0, writing nothing) so every shuffle has all its lanes.
  const bool valid = row_raw < rows;
  const int64_t row = valid ? row_raw : 0;
  const int64_t m = row % M;
  const int64_t n = row / (Lq * M);
  const int64_t col_stride = M * D;
  const int64_t nm_off = n * S * col_stride + m * D;
  const acc_t* loc_r = loc + row * L * P * 2;
  const acc_t* attn_r = attn + row * L * P;
  // every lane runs the same number of chunks (uniform control flow for the shuffles)
  const int64_t chunk = static_cast<int64_t>(team) * V;
  for (int64_t c0 = 0; c0 < D; c0 += chunk) {
    const int64_t c = c0 + static_cast<int64_t>(lane) * V;
    const bool active = valid && c < D;
    acc_t g[V];
    if (active) {
      load_vec<scalar_t, V>(grad_out + row * D + c, g);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) g[e] = 0;
    }
    for (int64_t l = 0; l < L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const int64_t level_off = nm_off + starts[l] * col_stride + c;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = l * P + p;
        const Footprint<acc_t> f = footprint<acc_t>(loc_r[2 * i], loc_r[2 * i + 1], H, W, col_stride);
        const acc_t a = attn_r[i];
        const acc_t hx = acc_t(1) - f.lx, hy = acc_t(1) - f.ly;
        const acc_t w[4] = {hy * hx, hy * f.lx, f.ly * hx, f.ly * f.lx};
        acc_t d[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          d[k] = 0;
          if (active && f.in[k]) {
            acc_t val[V];
            load_vec<scalar_t, V>(value + level_off + f.off[k], val);
            acc_t contrib[V];
#pragma unroll
            for (int e = 0; e < V; ++e) {
              d[k] += g[e] * val[e];
              contrib[e] = a * w[k] * g[e];
            }
            atomic_add_vec<acc_t, V>(grad_value_acc + level_off + f.off[k], contrib);
          }
        }
        acc_t g_attn = w[0] * d[0] + w[1] * d[1] + w[2] * d[2] + w[3] * d[3];
        acc_t g_x = a * (hy * (d[1] - d[0]) + f.ly * (d[3] - d[2]));
        acc_t g_y = a * (hx * (d[2] - d[0]) + f.lx * (d[3] - d[1]));
        g_attn = team_sum(g_attn, team);
        g_x = team_sum(g_x, team);
        g_y = team_sum(g_y, team);
        if (valid && lane == 0) {
          // only this team writes these entries; several channel chunks add up sequentially
          grad_attn[row * L * P + i] += g_attn;
          grad_loc[2 * (row * L * P + i)] += g_x * static_cast<acc_t>(W);
          grad_loc[2 * (row * L * P + i) + 1] += g_y * static_cast<acc_t>(H);
        }
      }
    }
  }
}

// Channels per lane: 16 bytes of values when D allows it (and the buffers are 16-byte aligned), else 1.
template <typename scalar_t>
int vector_width(int64_t D, const void* a, const void* b) {
  const int v = 16 / static_cast<int>(sizeof(scalar_t));
  const bool aligned = reinterpret_cast<uintptr_t>(a) % 16 == 0 && reinterpret_cast<uintptr_t>(b) % 16 == 0;
  return (D % v == 0 && aligned) ? v : 1;
}

int team_size(int64_t groups) {
  int team = 1;
  while (team < groups && team < 32) team *= 2;
  return team;
}

int64_t num_blocks(int64_t rows, int team) {
  return (rows * team + kThreads - 1) / kThreads;
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight) {
  const c10::cuda::CUDAGuard guard(value.device());
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  auto output = at::empty({N, Lq, M * D}, value.options());
  const int64_t rows = N * Lq * M;
  if (output.numel() == 0) return output;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kV = 16 / sizeof(scalar_t);
    const int v = vector_width<scalar_t>(D, value.data_ptr(), output.data_ptr());
    const int team = team_size((D + v - 1) / v);
    if (v == kV) {
      forward_kernel<scalar_t, kV><<<num_blocks(rows, team), kThreads, 0, stream>>>(
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
          sampling_loc.data_ptr<acc_t>(), attn_weight.data_ptr<acc_t>(), output.data_ptr<scalar_t>(), rows, Lq, S,
          M, D, L, P, team);
    } else {
      forward_kernel<scalar_t, 1><<<num_blocks(rows, team), kThreads, 0, stream>>>(
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
          sampling_loc.data_ptr<acc_t>(), attn_weight.data_ptr<acc_t>(), output.data_ptr<scalar_t>(), rows, Lq, S,
          M, D, L, P, team);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_loc, const at::Tensor& attn_weight,
                                                     const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard guard(value.device());
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  const auto acc_type = at::toOpMathType(value.scalar_type());
  // value gradients are accumulated with atomics in opmath precision, then cast to value's dtype
  auto grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_type));
  auto grad_loc = at::zeros_like(sampling_loc);
  auto grad_attn = at::zeros_like(attn_weight);
  const int64_t rows = N * Lq * M;
  if (rows > 0 && D > 0 && L * P > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward",
                                    [&] {
      using acc_t = at::opmath_type<scalar_t>;
      constexpr int kV = 16 / sizeof(scalar_t);
      // Vector lanes pay off here only with one vector atomic per corner: float32 on Hopper or newer (measured on
      // an H200: 1.9x faster float32 backward; scalar atomics of 4-8 channels per lane made float16 / bfloat16 /
      // float64 slower than one channel per lane). The gradient buffer must then be 16-byte aligned too.
      int major = 0;
      C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, value.get_device()));
      const bool vector_atomics = std::is_same<scalar_t, float>::value && major >= 9;
      const int v = (vector_atomics && vector_width<scalar_t>(D, value.data_ptr(), grad_output.data_ptr()) == kV &&
                     reinterpret_cast<uintptr_t>(grad_value_acc.data_ptr()) % 16 == 0)
                        ? kV
                        : 1;
      const int team = team_size((D + v - 1) / v);
      if (v == kV) {
        backward_kernel<scalar_t, kV><<<num_blocks(rows, team), kThreads, 0, stream>>>(
            value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
            sampling_loc.data_ptr<acc_t>(), attn_weight.data_ptr<acc_t>(), grad_output.data_ptr<scalar_t>(),
            grad_value_acc.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(), grad_attn.data_ptr<acc_t>(), rows, Lq,
            S, M, D, L, P, team);
      } else {
        backward_kernel<scalar_t, 1><<<num_blocks(rows, team), kThreads, 0, stream>>>(
            value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
            sampling_loc.data_ptr<acc_t>(), attn_weight.data_ptr<acc_t>(), grad_output.data_ptr<scalar_t>(),
            grad_value_acc.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(), grad_attn.data_ptr<acc_t>(), rows, Lq,
            S, M, D, L, P, team);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  auto grad_value = grad_value_acc.scalar_type() == value.scalar_type() ? grad_value_acc
                                                                          : grad_value_acc.to(value.scalar_type());
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace ops
}  // namespace oneformer
