// Out-of-place transpose of a dense row-major matrix: the W_hhᵀ (and W_hrᵀ) a call makes of its weights.
//
// A call at batch 1 makes W_hhᵀ once and then runs every step against it, so the transpose is part of the
// latency of every small call (the weights can change between calls, so it is never cached). It is done here in
// square tiles of L × L numbers, one vector register per tile row (L = 16 float32s or 8 float64s: 64 bytes):
// log2 L stages, each exchanging the off-diagonal d × d blocks of every 2d × 2d block (d = L/2, …, 1) with two-input
// shuffles of row pairs (i, i + d), then stored as the output's rows. What is left at the edges (rows or columns
// not a multiple of L) is a plain loop. Cloned per instruction set like the cells' kernels (RNNLAB_KERNEL).
// Measured on an AMD EPYC host (op calls, median): 5.7 µs for a 256 × 64 W_hh against 38 µs for MKL's omatcopy,
// which the engine called before, and 72 against 604 µs at 1024 × 256. tests/engine/test_transpose.py holds it
// to torch's transpose, edges and float64 included (rnnlab::transpose runs it).
#pragma once

#include <cstdint>
#include <cstring>

#include "pointwise.h"

namespace rnnlab {
namespace tile {

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef int32_t M __attribute__((vector_size(64)));
  static constexpr int L = 16;
};
template <>
struct Vec<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef int64_t M __attribute__((vector_size(64)));
  static constexpr int L = 8;
};

// one stage: rows i and i + D (i's bit D clear) exchange, in every group of 2D lanes, a's upper D lanes for b's
// lower D lanes
template <typename T, int D>
inline __attribute__((always_inline)) void stage(typename Vec<T>::V* r) {
  using V = typename Vec<T>::V;
  using M = typename Vec<T>::M;
  constexpr int L = Vec<T>::L;
  M lo, hi;
  for (int l = 0; l < L; ++l) {
    const int base = l / (2 * D) * (2 * D), off = l % (2 * D);
    lo[l] = off < D ? base + off : L + base + off - D;  // a's lower half, then b's lower half
    hi[l] = off < D ? base + D + off : L + base + off;  // a's upper half, then b's upper half
  }
  for (int i = 0; i < L; ++i) {
    if (i & D) continue;
    const V a = r[i], b = r[i + D];
    r[i] = __builtin_shuffle(a, b, lo);
    r[i + D] = __builtin_shuffle(a, b, hi);
  }
}

// the L × L tile at (r0, c0) of in (rows, cols) into out (cols, rows)
template <typename T>
inline __attribute__((always_inline)) void square(int64_t rows, int64_t cols, const T* in, T* out, int64_t r0,
                                                  int64_t c0) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  V r[L];
  for (int i = 0; i < L; ++i) std::memcpy(&r[i], in + (r0 + i) * cols + c0, sizeof(V));
  if constexpr (L == 16) stage<T, 8>(r);
  stage<T, 4>(r);
  stage<T, 2>(r);
  stage<T, 1>(r);
  for (int j = 0; j < L; ++j) std::memcpy(out + (c0 + j) * rows + r0, &r[j], sizeof(V));
}

template <typename T>
inline __attribute__((always_inline)) void all(int64_t rows, int64_t cols, const T* in, T* out) {
  constexpr int L = Vec<T>::L;
  const int64_t R = rows / L * L, C = cols / L * L;
  for (int64_t r0 = 0; r0 < R; r0 += L)
    for (int64_t c0 = 0; c0 < C; c0 += L) square<T>(rows, cols, in, out, r0, c0);
  for (int64_t r = 0; r < rows; ++r)  // the edges: columns past C of every row, then rows past R
    for (int64_t c = r < R ? C : 0; c < cols; ++c) out[c * rows + r] = in[r * cols + c];
}

}  // namespace tile

RNNLAB_KERNEL inline void transpose_f32(int64_t rows, int64_t cols, const float* in, float* out) {
  tile::all<float>(rows, cols, in, out);
}
RNNLAB_KERNEL inline void transpose_f64(int64_t rows, int64_t cols, const double* in, double* out) {
  tile::all<double>(rows, cols, in, out);
}

// out (cols, rows) = in (rows, cols)ᵀ, both dense row-major
inline void transpose(int64_t rows, int64_t cols, const float* in, float* out) { transpose_f32(rows, cols, in, out); }
inline void transpose(int64_t rows, int64_t cols, const double* in, double* out) {
  transpose_f64(rows, cols, in, out);
}

}  // namespace rnnlab
