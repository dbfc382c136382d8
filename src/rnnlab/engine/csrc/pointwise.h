// What every cell's pointwise pass shares: the activations, the mask test, and the kernel attribute.
//
// Derivatives are written in terms of the activations' outputs (σ' = y(1 - y), tanh' = 1 - y²).
// The units are compiled with -ffast-math so that g++ vectorises the passes; the kernels are cloned for
// AVX-512, AVX2 and a baseline (target_clones) and the clone is picked at run time, so the build does not
// depend on the machine.
//
// The float32 activations are written here (act::), in plain arithmetic that g++ vectorises inline: one
// exponential each, no library call. Accuracy, checked over a 61-step comb of every float32 and densely where
// gates live by tests/engine/test_activations.py through rnnlab::activation: within 2.5 ulp of the correctly
// rounded value (measured: tanh 1.9, σ 2.4), with no bias in the rounding (mean signed error < 0.01 ulp: a
// systematic fraction of an ulp would add up over a long sequence's gradients), NaN in gives NaN out, ±inf gives
// the limits. float64 uses the C library's tanh.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#define RNNLAB_KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))

namespace rnnlab {
namespace act {

// a float's bits as an integer, and back (vectorised as register moves)
inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
// NaN, tested on the bits: -ffast-math lets g++ fold x != x to false
inline bool is_nan(float f) { return (bits(f) & 0x7fffffffu) > 0x7f800000u; }

// e^x as the pair (2^n, 2^n·(e^r - 1)) whose sum it is, for |x| ≤ 87 (clamped there: e^±87 is the edge
// of float's normal range). x = n ln2 + r with n = rint(x / ln2) and |r| ≤ ln2 / 2, ln2 split in two so that
// n·ln2_hi is exact; e^r - 1 = r·q(r) with q the Taylor polynomial of (e^r - 1)/r to degree 7 (truncation
// ≤ (ln2/2)⁸/9! < 1e-9, far below float's rounding); 2^n written straight into the exponent bits. The caller
// adds the parts where it needs them (σ adds 1 to the exact power of two first).
struct Exp {
  float power, rest;  // e^x = power + rest
};
inline Exp exp_parts(float x) {
  x = std::min(std::max(x, -87.0f), 87.0f);
  const float n = std::rint(x * 1.44269504089f);
  float r = std::fma(n, -0.693145751953125f, x);  // ln2_hi: 16 significant bits
  r = std::fma(n, -1.428606765330187e-6f, r);      // ln2_lo = ln2 - ln2_hi
  float q = 1.0f / 40320;
  q = std::fma(q, r, 1.0f / 5040);
  q = std::fma(q, r, 1.0f / 720);
  q = std::fma(q, r, 1.0f / 120);
  q = std::fma(q, r, 1.0f / 24);
  q = std::fma(q, r, 1.0f / 6);
  q = std::fma(q, r, 0.5f);
  q = std::fma(q, r, 1.0f);
  const float power = from_bits(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);  // 2^n
  return {power, power * (r * q)};
}

// σ(x) = 1 / (1 + e^-x)
inline float sigmoid(float x) {
  const Exp e = exp_parts(-x);
  const float y = 1.0f / ((1.0f + e.power) + e.rest);
  return is_nan(x) ? x : y;
}

// tanh x, by |x|, each form free of cancellation where it is used:
//   |x| < 0.55   the odd Taylor series to x¹⁹ (the first term left out, 2^22(2^22 - 1) B_22 x²¹ / 22!,
//                is < 1e-9 of the value; the coefficients are 2^2k (2^2k - 1) B_2k / (2k)!, B the Bernoulli numbers)
//   ≥ 0.55       1 - 2e / (1 + e) with e = e^{-2|x|} < 1/3: the correction is at most half the value, so its
//                rounding costs under an ulp; |x| ≥ 9 rounds to 1 (e < 2e-8 is below half an ulp of 1)
inline float tanh(float x) {
  const float a = std::fabs(x), s = a * a;
  float q = -443861162.0f / 1856156927625.0f;
  q = std::fma(q, s, 6404582.0f / 10854718875.0f);
  q = std::fma(q, s, -929569.0f / 638512875.0f);
  q = std::fma(q, s, 21844.0f / 6081075.0f);
  q = std::fma(q, s, -1382.0f / 155925.0f);
  q = std::fma(q, s, 62.0f / 2835.0f);
  q = std::fma(q, s, -17.0f / 315.0f);
  q = std::fma(q, s, 2.0f / 15.0f);
  q = std::fma(q, s, -1.0f / 3.0f);
  const float near0 = std::fma(a * s, q, a);
  const Exp e = exp_parts(-2.0f * std::min(a, 9.0f));
  const float en = e.power + e.rest;
  const float far = 1.0f - 2.0f * en / (1.0f + en);
  const float y = std::copysign(a < 0.55f ? near0 : far, x);
  return is_nan(x) ? x : y;
}

inline double sigmoid(double x) { return 0.5 + 0.5 * std::tanh(0.5 * x); }
inline double tanh(double x) { return std::tanh(x); }

}  // namespace act

// ``live`` (B) is the step's mask row, or null when every row is inside its sequence; rows outside
// are skipped by the pointwise passes and fixed up by the driver
template <typename T>
inline bool skip(const T* live, int64_t b) {
  return live && live[b] == T(0);
}

// ReLU and its derivative on the bits: -ffast-math lets g++ assume no NaN, so `a > 0 ? a : 0`
// may become a max that drops a NaN; torch.relu keeps it (NaN in, NaN out), and so must we.
template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using U = uint32_t;
  static constexpr U inf = 0x7f800000u;
};
template <>
struct Bits<double> {
  using U = uint64_t;
  static constexpr U inf = 0x7ff0000000000000ull;
};

// max(a, 0), NaN kept: a negative (sign bit set) non-NaN a gives 0
template <typename T>
inline T relu_kept(T a) {
  using U = typename Bits<T>::U;
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  U u;
  std::memcpy(&u, &a, sizeof(T));
  const bool zero = (u & sign) && (u & ~sign) <= Bits<T>::inf;
  u = zero ? U(0) : u;
  std::memcpy(&a, &u, sizeof(T));
  return a;
}

// the gradient through y = relu(a), from y: d where y != 0 (NaN included, as torch's threshold_backward), else 0
template <typename T>
inline T relu_kept_grad(T y, T d) {
  using U = typename Bits<T>::U;
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  U u;
  std::memcpy(&u, &y, sizeof(T));
  return (u & ~sign) == 0 ? T(0) : d;
}

}  // namespace rnnlab
