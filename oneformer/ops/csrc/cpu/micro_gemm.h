// A register-blocked float matrix product for the CPU kernels' small, cache-resident tiles (see vec.h for the
// vector types): C (M x cols) = A (M x K) B (K x cols).
#pragma once

#include <cstdint>

#include "vec.h"

namespace oneformer {
namespace ops {
namespace vec {

// C[r][c] = sum_k A[r][k] * B[k][c] for RB rows and J vectors of W columns, accumulated in registers.
template <class V, int W, int RB, int J>
ONEFORMER_INLINE void micro_gemm(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* C,
                                 int64_t ldc) {
  V acc[RB][J];
  for (int r = 0; r < RB; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = V{};
  for (int64_t k = 0; k < K; ++k) {
    V b[J];
    for (int j = 0; j < J; ++j) b[j] = load<V>(B + k * ldb + j * W);
    for (int r = 0; r < RB; ++r) {
      const V a = splat<V>(A[r * lda + k]);
      for (int j = 0; j < J; ++j) acc[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int j = 0; j < J; ++j) store<V>(C + r * ldc + j * W, acc[r][j]);
}

// C (M x cols) = A (M x K) B (K x cols), cols a multiple of W.
template <class V, int W, int RB, int J>
ONEFORMER_INLINE void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M, int64_t K,
                           int64_t cols, float* C, int64_t ldc) {
  int64_t c = 0;
  for (; c + J * W <= cols; c += J * W) {
    int64_t r = 0;
    for (; r + RB <= M; r += RB) micro_gemm<V, W, RB, J>(A + r * lda, lda, B + c, ldb, K, C + r * ldc + c, ldc);
    for (; r < M; ++r) micro_gemm<V, W, 1, J>(A + r * lda, lda, B + c, ldb, K, C + r * ldc + c, ldc);
  }
  for (; c < cols; c += W) {
    int64_t r = 0;
    for (; r + RB <= M; r += RB) micro_gemm<V, W, RB, 1>(A + r * lda, lda, B + c, ldb, K, C + r * ldc + c, ldc);
    for (; r < M; ++r) micro_gemm<V, W, 1, 1>(A + r * lda, lda, B + c, ldb, K, C + r * ldc + c, ldc);
  }
}

}  // namespace vec
}  // namespace ops
}  // namespace oneformer
