// The per-step recurrent GEMM for a few rows, written here instead of calling BLAS.
//
// At a small batch the step's product h_{t-1} · W_hhᵀ (B rows against a W_hh of a few tens of KB) is a few
// thousand multiply-adds: BLAS's own cost per call (argument checks, kernel choice, its thread hand-off)
// is then most of the step. This kernel has none of it. It keeps a tile of R ≤ 4 output rows by 32 or 64 columns
// in registers and walks K once, adding a_rk · B[k, tile] per k (the product's rows of B are contiguous);
// leftover columns (N not a multiple of 16) are plain dot products. Written with g++'s vector types and
// cloned per instruction set like the cells' kernels (RNNLAB_KERNEL), so it runs 16 lanes wide on AVX-512,
// as two 8-lane halves on AVX2 and four 4-lane quarters on the baseline.
//
// The driver decides where it runs (ops.cpp's small_rows): float32 steps with few rows against a W_hh that
// stays in cache; larger ones are BLAS's, whose blocking and threads win there.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "pointwise.h"

namespace rnnlab {
namespace small {

typedef float v16 __attribute__((vector_size(64)));

inline __attribute__((always_inline)) v16 load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline __attribute__((always_inline)) void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

// rows [0, R) of C, columns [n, n + 16·V): C = A · B (+ beta · C). An FMA waits about 4 cycles for the one before
// it on the same accumulator, so a tile keeps about 8 of them: R·V, and for a single row KS sets over alternate k
// (summed at the end), else one row's product would run at a quarter of the rate
template <int R, int V, int KS>
inline __attribute__((always_inline)) void tile(int64_t K, const float* A, int64_t lda, const float* Bm, int64_t ldb,
                                                float beta, float* C, int64_t ldc, int64_t n) {
  v16 acc[KS][R][V];
  for (int q = 0; q < KS; ++q)
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) acc[q][r][v] = v16{};
  int64_t k = 0;
  for (; k + KS <= K; k += KS)
    for (int q = 0; q < KS; ++q)
      for (int v = 0; v < V; ++v) {
        const v16 b = load(Bm + (k + q) * ldb + n + 16 * v);
        for (int r = 0; r < R; ++r) acc[q][r][v] += A[r * lda + k + q] * b;
      }
  for (; k < K; ++k)
    for (int v = 0; v < V; ++v) {
      const v16 b = load(Bm + k * ldb + n + 16 * v);
      for (int r = 0; r < R; ++r) acc[0][r][v] += A[r * lda + k] * b;
    }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      v16 sum = acc[0][r][v];
      for (int q = 1; q < KS; ++q) sum += acc[q][r][v];
      float* c = C + r * ldc + n + 16 * v;
      store(c, beta == 0.0f ? sum : sum + beta * load(c));  // beta = 0 never reads C (BLAS's rule)
    }
}

template <int R>
inline __attribute__((always_inline)) void rows(int64_t N, int64_t K, const float* A, int64_t lda, const float* Bm,
                                                int64_t ldb, float beta, float* C, int64_t ldc) {
  constexpr int V = R <= 2 ? 4 : 2, KS = R == 1 ? 2 : 1;
  int64_t n = 0;
  for (; n + 16 * V <= N; n += 16 * V) tile<R, V, KS>(K, A, lda, Bm, ldb, beta, C, ldc, n);
  if (V == 4 && n + 32 <= N) tile<R, 2, 2>(K, A, lda, Bm, ldb, beta, C, ldc, n), n += 32;
  for (; n + 16 <= N; n += 16) tile<R, 1, 2>(K, A, lda, Bm, ldb, beta, C, ldc, n);
  for (; n < N; ++n)
    for (int r = 0; r < R; ++r) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += A[r * lda + k] * Bm[k * ldb + n];
      C[r * ldc + n] = beta == 0.0f ? s : s + beta * C[r * ldc + n];
    }
}

// rows [n, n + R) of out = W (N, K) · a (K): R dot products, each on two accumulator vectors (alternate 16s of k),
// summed across lanes at the end
template <int R>
inline __attribute__((always_inline)) void dots(int64_t K, const float* a, const float* W, int64_t ldw, float* out,
                                                int64_t n) {
  v16 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = v16{};
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const v16 x0 = load(a + k), x1 = load(a + k + 16);
    for (int r = 0; r < R; ++r) {
      acc[r][0] += load(W + (n + r) * ldw + k) * x0;
      acc[r][1] += load(W + (n + r) * ldw + k + 16) * x1;
    }
  }
  if (k + 16 <= K) {
    const v16 x = load(a + k);
    for (int r = 0; r < R; ++r) acc[r][0] += load(W + (n + r) * ldw + k) * x;
    k += 16;
  }
  for (int r = 0; r < R; ++r) {
    const v16 both = acc[r][0] + acc[r][1];
    float s = 0.0f;
    for (int l = 0; l < 16; ++l) s += both[l];
    for (int64_t j = k; j < K; ++j) s += W[(n + r) * ldw + j] * a[j];
    out[n + r] = s;
  }
}

}  // namespace small

// out (N) = W (N, K) · a (K) for a row-major W with row stride ldw: the step's product at batch 1 read from W_hh itself
// (Loop::dot), four rows at a time (a W_hh of megabytes comes from L3 or memory every step, so reading it at full
// bandwidth is the whole cost; for a 2048 × 512 W_hh halved over two threads, four rows of two accumulators each took
// 29.8 µs a step against 32-36 for eight rows of one, 30.5 for two of four and 34.8 for one of eight). Written here
// instead of calling BLAS's GEMV, which on an AMD EPYC host ran at about half this rate (MKL's generic path there):
// LSTM inference at (50, 1, 256, 512) on one loop took 5.0 ms against 8.8.
//
// ``backwards``: the same dot products, the rows taken last to first. A caller that reads a W larger than its core's
// L2 every step alternates the direction (Loop::product): the rows read last in one step, still in the cache, are
// then the first read in the next, where a pass in one direction finds none of them (the cache, least recently used
// out first, has dropped each row before the pass comes back to it). Each row's sum is formed the same way in either
// order (dots<4> and dots<1> do the same per-row arithmetic), so the results do not change.
RNNLAB_KERNEL inline void small_gemv(int64_t N, int64_t K, const float* a, const float* W, int64_t ldw, float* out,
                                     bool backwards = false) {
  if (backwards) {
    int64_t n = N;
    for (; n >= 4; n -= 4) small::dots<4>(K, a, W, ldw, out, n - 4);
    for (; n > 0; --n) small::dots<1>(K, a, W, ldw, out, n - 1);
    return;
  }
  int64_t n = 0;
  for (; n + 4 <= N; n += 4) small::dots<4>(K, a, W, ldw, out, n);
  for (; n < N; ++n) small::dots<1>(K, a, W, ldw, out, n);
}

// W (K, N) in column blocks for block_gemv: block b holds columns [64 b, 64 b + 64) as a dense (K, 64) matrix at
// b · K · 64, the last block padded with zero columns (ops.cpp's rnnlab::column_blocks makes it from W as torch
// stores it). One row times W then reads W once, front to back, with no sum across lanes.
constexpr int64_t GEMV_BLOCK = 64;

// out[0, width) = a (K) · W[:, col : col + width) for W in column blocks (above): each block's 64 columns summed
// in registers (two sets of four vectors over alternate k, so that an FMA does not wait for the one before it),
// then only [col, col + width)'s part stored. ``backwards`` takes the blocks last to first (as small_gemv's rows; each
// sum is formed the same way). A level's W of megabytes comes from L3 every step, so the read is the whole cost:
// on the AMD EPYC host, one thread, (K, N) = (768, 2048) (an LSTM's [W_ih W_hh] at X = 256, H = 512), 67.6 µs
// against 88-91 for small_gemv on W's rows (each row's sum across lanes costs), which is about 93 GB/s, the rate a
// plain sum of the same 6.3 MB reaches.
RNNLAB_KERNEL inline void block_gemv(int64_t K, const float* a, const float* Wb, int64_t col, int64_t width,
                                     float* out, bool backwards = false) {
  using small::v16, small::load, small::store;
  if (width <= 0) return;
  const int64_t first = col / GEMV_BLOCK, last = (col + width - 1) / GEMV_BLOCK;
  for (int64_t i = first; i <= last; ++i) {
    const int64_t b = backwards ? first + last - i : i;
    const float* w = Wb + b * K * GEMV_BLOCK;
    v16 acc[2][4];
    for (int u = 0; u < 2; ++u)
      for (int j = 0; j < 4; ++j) acc[u][j] = v16{};
    int64_t k = 0;
    for (; k + 2 <= K; k += 2) {
      for (int u = 0; u < 2; ++u) {
        const v16 s = v16{} + a[k + u];
        for (int j = 0; j < 4; ++j) acc[u][j] += load(w + (k + u) * GEMV_BLOCK + 16 * j) * s;
      }
    }
    if (k < K) {
      const v16 s = v16{} + a[k];
      for (int j = 0; j < 4; ++j) acc[0][j] += load(w + k * GEMV_BLOCK + 16 * j) * s;
    }
    alignas(64) float sum[GEMV_BLOCK];
    for (int j = 0; j < 4; ++j) store(sum + 16 * j, acc[0][j] + acc[1][j]);
    const int64_t lo = std::max(col, b * GEMV_BLOCK), hi = std::min(col + width, (b + 1) * GEMV_BLOCK);
    std::memcpy(out + (lo - col), sum + (lo - b * GEMV_BLOCK), (hi - lo) * sizeof(float));
  }
}

// row-major C (M, N) = A (M, K) · B (K, N) + beta · C, row strides lda, ldb, ldc (BLAS's gemm, for small M)
RNNLAB_KERNEL inline void small_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bm,
                                     int64_t ldb, float beta, float* C, int64_t ldc) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) small::rows<4>(N, K, A + m * lda, lda, Bm, ldb, beta, C + m * ldc, ldc);
  switch (M - m) {
    case 3: return small::rows<3>(N, K, A + m * lda, lda, Bm, ldb, beta, C + m * ldc, ldc);
    case 2: return small::rows<2>(N, K, A + m * lda, lda, Bm, ldb, beta, C + m * ldc, ldc);
    case 1: return small::rows<1>(N, K, A + m * lda, lda, Bm, ldb, beta, C + m * ldc, ldc);
    default: return;
  }
}

}  // namespace rnnlab
