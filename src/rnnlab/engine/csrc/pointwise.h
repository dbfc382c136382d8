// What every cell's pointwise pass shares: the activations, the mask test, and the kernel attribute.
//
// Derivatives are written in terms of the activations' outputs (σ' = y(1 - y), tanh' = 1 - y²).
// The units are compiled with -ffast-math so g++ vectorises tanh through glibc's vector maths
// (libmvec); they are written so that never overflows (σ(a) = ½ + ½ tanh(a/2)), and the AVX2
// clones are picked at run time (target_clones), so the build does not depend on the machine.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define RNNLAB_KERNEL __attribute__((target_clones("avx2", "default")))

namespace rnnlab {

template <typename T>
inline T sigmoid(T a) {
  return T(0.5) + T(0.5) * std::tanh(T(0.5) * a);
}

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
