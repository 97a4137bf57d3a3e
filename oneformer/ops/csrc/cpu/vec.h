// Small SIMD helpers for the CPU kernels, written with GCC/Clang vector extensions: a kernel body is a template on
// the vector width W (floats per vector), instantiated in functions compiled for AVX-512 (W = 16), AVX2 (W = 8) and
// the baseline target (W = 4), of which the widest that the CPU supports runs (best_isa).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace oneformer {
namespace ops {
namespace vec {

// The vector types below are only passed between always-inlined functions, so the ABI note GCC emits for them
// does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

template <int W>
struct VecTypes {
  typedef float vec __attribute__((vector_size(4 * W)));
  typedef int32_t ivec __attribute__((vector_size(4 * W)));
};

#define ONEFORMER_INLINE inline __attribute__((always_inline))

template <class V>
ONEFORMER_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <class V>
ONEFORMER_INLINE void store(float* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

template <class V>
ONEFORMER_INLINE V splat(float x) {
  return V{} + x;
}

// exp(x) for x <= 88.5 (Cephes' expf: n = round(x / ln 2), a degree-5 polynomial in x - n ln 2, 2^n from the
// exponent bits; about 1 ulp). Inputs below -87.3 give ~1e-38 instead of denormals; from 88.38 on, n = 128 makes
// the result inf, a little before expf overflows (88.72).
template <class V, class VI>
ONEFORMER_INLINE V exp_below_88(V x) {
  const V lo = splat<V>(-87.3f);
  x = x < lo ? lo : x;
  const V magic = splat<V>(12582912.0f);  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const V n = (x * 1.44269504088896341f + magic) - magic;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
  V two_n;
  std::memcpy(&two_n, &bits, sizeof(V));
  return p * two_n;
}

// exp(x) for any x (see exp_below_88): inf from 88.38 on; NaN stays NaN.
template <class V, class VI>
ONEFORMER_INLINE V exp_any(V x) {
  const V hi = splat<V>(88.5f);
  return exp_below_88<V, VI>(x > hi ? hi : x);
}

enum class Isa { kBaseline, kAvx2, kAvx512 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ONEFORMER_X86_DISPATCH 1
#define ONEFORMER_TARGET_AVX2 __attribute__((target("avx2,fma")))
// with DQ (masks to vectors, vpmovm2d): without it GCC scalarizes comparisons whose result is combined bitwise
#define ONEFORMER_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#endif

// The widest instruction set of those above that this CPU runs, at most the one the environment variable
// ONEFORMER_CPU_ISA names ("avx512", "avx2" or "baseline"; read once), so that tests can run every code path.
inline Isa best_isa() {
  static const Isa isa = [] {
    Isa best = Isa::kBaseline;
#ifdef ONEFORMER_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
      best = Isa::kAvx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      best = Isa::kAvx2;
#endif
    const char* cap = std::getenv("ONEFORMER_CPU_ISA");
    if (cap != nullptr && std::strcmp(cap, "baseline") == 0) return Isa::kBaseline;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best == Isa::kAvx512) return Isa::kAvx2;
    return best;
  }();
  return isa;
}

// The variant of a kernel for the widest instruction set that this CPU runs (best_isa), given the ones built.
template <class Fn>
inline Fn pick_isa(Fn avx512, Fn avx2, Fn baseline) {
  switch (best_isa()) {
    case Isa::kAvx512:
      return avx512;
    case Isa::kAvx2:
      return avx2;
    default:
      return baseline;
  }
}

}  // namespace vec
}  // namespace ops
}  // namespace oneformer
