// The vanilla RNN, forward and backward side by side (cells/rnn.py: the same equation).
//
//   h_t = φ(W_ih x_t + b + W_hh h_{t-1}),  φ = tanh or relu          (one gate: the fused row is h itself)
//
// Template flag RELU: φ = relu (NaN kept, as torch.relu), else tanh.
#pragma once

#include "../step.h"

namespace rnnlab {

template <typename T, bool RELU>
struct RNNCell {
  static int64_t gx(int64_t H) { return H; }
  static int64_t first(int64_t H) { return H; }
  static int64_t rec(int64_t H) { return H; }
  static int64_t scratch(int64_t, int64_t) { return 0; }
  static constexpr int64_t G = 1;  // stored gates
  static constexpr int64_t states = 1;
  static constexpr bool unit_split = true;  // split.h may run its forward loop on two threads by unit
  static constexpr bool unit_split_back = true;
  static constexpr bool mid_product = false;

  // h_t = φ(a),  a = x_t W_ihᵀ + b + h_{t-1} W_hhᵀ
  static void forward(const Fw<T>& s, Loop<T>& k) {
    k.rows([&](int64_t b0, int64_t b1) { activate(s, k, b0, b1); });
  }
  static RNNLAB_KERNEL void activate(const Fw<T>& s, const Loop<T>& k, int64_t b0, int64_t b1) {
    const int64_t H = k.H, ld = k.state_ld();
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const T* __restrict x_ = s.xp + b * H;
      const T* __restrict xb = s.xb;
      const T* __restrict hh_ = s.hh + b * H;
      T* __restrict g_ = s.gate + b * H;
      T* __restrict h_ = s.h + b * ld;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T a = x_[j] + xb[j] + hh_[j];  // x_t W_ihᵀ + b + h_{t-1} W_hhᵀ
        const T y = RELU ? relu_kept(a) : act::tanh(a);
        g_[j] = y;
        h_[j] = y;
      }
    }
  }

  // ∂a = ∂h_t φ'(a): (1 - h_t²) for tanh, [h_t > 0] for relu; ∂h_{t-1}'s direct part is the outputs' own
  static Grad<T> backward(const Bw<T>& s, Loop<T>& k) {
    k.rows([&](int64_t b0, int64_t b1) { derivative(s, k, b0, b1); });
    return {s.da, k.state_ld()};
  }
  // (rows of the layer's width H, units [0, n): split.h runs a part of the units)
  static RNNLAB_KERNEL void derivative(const Bw<T>& s, const Loop<T>& k, int64_t b0, int64_t b1) {
    const int64_t H = k.state_ld(), n = k.H;
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const int64_t r = b * H;
      const T* __restrict y_ = s.gate + r;
      const T* __restrict dh = s.dh + r;
      const T* __restrict gg = s.gg + r;
      const T* __restrict ghp = s.gh_prev + r;
      T* __restrict da = s.da + r;
      T* __restrict dhp = s.dh_prev + r;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T y = y_[j];
        const T d = dh[j] + gg[j];
        da[j] = RELU ? relu_kept_grad(y, d) : d * (T(1) - y * y);
        dhp[j] = ghp[j];
      }
    }
  }
};

}  // namespace rnnlab
