// Linear recurrences (minGRU, minLSTM; cells/minimal.py): h_t = a_t * h_{t-1} + b_t, forward and backward.
//
// a_t, b_t depend on x_t alone and are computed for all steps before the loop, so the loop has no GEMM:
// one multiply-add per unit and step. Backward: ∂a_t = ∂h_t h_{t-1}, ∂b_t = ∂h_t,
// ∂h_{t-1} = a_t ∂h_t (+ the outputs' own gradient at h_{t-1}).
#pragma once

#include "../pointwise.h"

namespace rnnlab {

template <typename T>
struct LinearCell {
  static RNNLAB_KERNEL void forward(int64_t n, const T* __restrict a, const T* __restrict b, const T* __restrict h_prev,
                                    T* __restrict h) {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) h[k] = a[k] * h_prev[k] + b[k];  // h_t = a_t h_{t-1} + b_t
  }

  static RNNLAB_KERNEL void backward(int64_t n, const T* __restrict a, const T* __restrict h_prev,
                                     const T* __restrict dh, const T* __restrict gh_prev, T* __restrict da,
                                     T* __restrict db, T* __restrict dh_prev) {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) {
      da[k] = dh[k] * h_prev[k];
      db[k] = dh[k];
      dh_prev[k] = a[k] * dh[k] + gh_prev[k];
    }
  }
};

}  // namespace rnnlab
