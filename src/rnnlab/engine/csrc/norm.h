// Layer normalisation over rows, the row passes the driver runs inside a step (the layer_norm variant).
//
//   y = g · â + b,  â = (a − μ) / σ,  σ = √(var + ε)  (μ, var over the row; var biased)
//   ∂a = (1/σ) (∂y g − mean(∂y g) − â · mean(∂y g · â))
//
// Rows outside their sequence are skipped: their saved â and 1/σ stay zero and their ∂a is zero.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "pointwise.h"

namespace rnnlab {

constexpr double LN_EPS = 1e-5;  // cells/variants.EPS

// in place over B rows of width W (row stride lda): a ← LN(a); â (B, W) and 1/σ (B) saved
template <typename T>
RNNLAB_KERNEL void ln_rows(int64_t B, int64_t W, const T* live, T* __restrict a, int64_t lda, const T* __restrict gain,
                           const T* __restrict bias, T* __restrict hat, T* __restrict rstd) {
  for (int64_t b = 0; b < B; ++b) {
    T* h_ = hat + b * W;
    if (skip(live, b)) {  // nothing computed: zeros saved
      std::memset(h_, 0, W * sizeof(T));
      rstd[b] = T(0);
      continue;
    }
    T* a_ = a + b * lda;
    T mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
    for (int64_t j = 0; j < W; ++j) mean += a_[j];
    mean /= T(W);
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < W; ++j) var += (a_[j] - mean) * (a_[j] - mean);
    const T rs = T(1) / std::sqrt(var / T(W) + T(LN_EPS));
    rstd[b] = rs;
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) {
      const T x = (a_[j] - mean) * rs;
      h_[j] = x;
      a_[j] = x * gain[j] + bias[j];
    }
  }
}

// ∂a (row stride ldo) from ∂y (row stride ldy) over B rows of width W; rows outside their sequence get
// zero. The gain's and bias's gradients Σ ∂y â and Σ ∂y gather into dgain, dbias (W, in double)
template <typename T>
RNNLAB_KERNEL void ln_rows_back(int64_t B, int64_t W, const T* live, const T* __restrict dy, int64_t ldy,
                                const T* __restrict gain, const T* __restrict hat, const T* __restrict rstd,
                                T* __restrict out, int64_t ldo, double* __restrict dgain, double* __restrict dbias,
                                T* __restrict step) {
  // step (2W scratch): this step's sums in T, vectorised, folded into the double totals once per step
  T* sg = step;
  T* sb = step + W;
  std::memset(step, 0, 2 * W * sizeof(T));
  for (int64_t b = 0; b < B; ++b) {
    T* o_ = out + b * ldo;
    if (skip(live, b)) {
      std::memset(o_, 0, W * sizeof(T));
      continue;
    }
    const T* d_ = dy + b * ldy;
    const T* h_ = hat + b * W;
    T s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < W; ++j) {
      const T g = d_[j] * gain[j];
      s1 += g;
      s2 += g * h_[j];
    }
    s1 /= T(W);
    s2 /= T(W);
    const T rs = rstd[b];
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) {
      o_[j] = rs * (d_[j] * gain[j] - s1 - h_[j] * s2);
      sg[j] += d_[j] * h_[j];
      sb[j] += d_[j];
    }
  }
  for (int64_t j = 0; j < W; ++j) {
    dgain[j] += double(sg[j]);
    dbias[j] += double(sb[j]);
  }
}

// the layer norms of one direction: gains and biases, the saved normalised values and 1/σ, and (backward)
// ∂ of the raw recurrent GEMM outputs; all null when layer norm is off
template <typename T>
struct Norm {
  const T* g_hh = nullptr;  // LN(W_h ·): gain, bias (the recurrent width; GRU reset="before": rows 2H: the candidate's own LN)
  const T* b_hh = nullptr;
  const T* g_c = nullptr;  // LSTM: LN(C_t): gain, bias (H)
  const T* b_c = nullptr;
  T* uhat = nullptr;  // (T, B, W1): the first recurrent GEMM's output normalised; urstd (T, B): its 1/σ
  T* urstd = nullptr;
  T* nhat = nullptr;  // GRU reset="before": W_hn (r h) normalised (T, B, H); nrstd (T, B)
  T* nrstd = nullptr;
  T* chat = nullptr;  // LSTM: C_t normalised (T, B, H); crstd (T, B)
  T* crstd = nullptr;
  T* dhh = nullptr;  // backward: ∂ of the raw recurrent GEMM outputs (T, B, G_rec), for ∂W_hh
  bool on() const { return g_hh != nullptr; }
};

// the gains' and biases' gradients, gathered in double over the loop and written out at its end
struct NormGrads {
  std::vector<double> g_hh, b_hh, g_c, b_c;
  NormGrads(int64_t W, int64_t H, bool on, bool cell)
      : g_hh(on ? W : 0), b_hh(on ? W : 0), g_c(on && cell ? H : 0), b_c(on && cell ? H : 0) {}
};

}  // namespace rnnlab
