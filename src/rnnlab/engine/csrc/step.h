// What the driver hands a cell for one time step, and the services a cell may call inside it.
//
// A cell unit (cells/*.h) is a struct with
//   static int64_t gx(H)     the width of its input projection xp and of its gate gradients da
//   static int64_t first(H)  the width of the recurrent GEMM the driver runs before the cell (h_in · W_hhᵀ)
//   static int64_t rec(H)    the rows of W_hh
//   static void forward(const Fw<T>&, Loop<T>&)     the step's pointwise maths (and any mid-step GEMM)
//   static Grad<T> backward(const Bw<T>&, Loop<T>&) its derivatives; returns ∂ of the first GEMM's output
//   static constexpr bool unit_split  whether split.h may run its forward loop in two parts by hidden unit: then
//                            forward reads and writes the state rows (Fw's h_prev, h_in, h, c_prev, c) with row stride
//                            Loop::state_ld() and its gates and extra rows densely, G·H and H wide
//   static constexpr bool unit_split_back  whether split.h may run its backward by unit too
//   static constexpr bool mid_product  whether its forward runs a second GEMM over a whole row of its own outputs (the
//                            GRU with reset before: W_hn (r h)); split, those rows (extra) are the layer's, with row
//                            stride Loop::state_ld(), and the cell calls Loop::mid_step before the GEMM
// Everything else (time slots, direction, lengths, the recurrent GEMMs' threads, layer norm of the
// first GEMM, recurrent dropout, zoneout) is the driver's (driver.h).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>
#include <omp.h>

#include "blas.h"
#include "brgemm.h"
#include "norm.h"
#include "small_gemm.h"

namespace rnnlab {

// fn(lo, hi) over [0, n), shared out in whole ``grain``s between OpenMP's threads, as BLAS threads its GEMV, from
// ``from`` items up and outside another parallel region (a whole loop: a split part, a bidirectional level's direction
// and a wavefront's level run inside one, on one thread each); else fn(0, n) on the calling thread
template <class Fn>
void share_out(int64_t n, int64_t grain, int64_t from, const Fn& fn) {
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads < 2 || n < from) return fn(int64_t(0), n);
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_num_threads(), i = omp_get_thread_num();
    const int64_t share = ((n + t - 1) / t + grain - 1) / grain * grain;
    const int64_t lo = std::min(n, i * share), hi = std::min(n, lo + share);
    if (hi > lo) fn(lo, hi);
  }
}

// out (N) = W (N, K) · a (K) for a dense row-major W: small_gemv, the rows shared out in fours (Loop::by_rows)
inline void gemv_rows(int64_t N, int64_t K, const float* a, const float* W, float* out, bool backwards) {
  share_out(N, 4, 8, [&](int64_t lo, int64_t hi) { small_gemv(hi - lo, K, a, W + lo * K, K, out + lo, backwards); });
}

// out (M, width) = a (M, K) · W[:, col : col + width) for W in column blocks (small_gemm.h's block_gemv), a row at a
// time, the blocks shared out (rnnlab::cell_step's products; row strides lda, ldo)
inline void gemv_blocks(int64_t M, int64_t K, const float* a, int64_t lda, const float* Wb, int64_t col, int64_t width,
                        float* out, int64_t ldo, bool backwards) {
  const int64_t first = col / GEMV_BLOCK, blocks = width > 0 ? (col + width - 1) / GEMV_BLOCK - first + 1 : 0;
  share_out(blocks, 1, 2, [&](int64_t b0, int64_t b1) {  // this thread's columns [lo, hi) of [col, col + width)
    const int64_t lo = std::max(col, (first + b0) * GEMV_BLOCK), hi = std::min(col + width, (first + b1) * GEMV_BLOCK);
    for (int64_t r = 0; r < M; ++r) block_gemv(K, a + r * lda, Wb, lo, hi - lo, out + r * ldo + (lo - col), backwards);
  });
}

// one forward step over B rows
template <typename T>
struct Fw {
  int64_t t;        // time index
  const T* live;    // (B) mask row, or null
  const T* xp;      // (B, gx) x_t W_ihᵀ (with layer norm of it: LN(x_t W_ihᵀ) + b)
  const T* xb;      // (gx) the bias b the cell adds to xp (zeros without one, or where xp holds it already)
  T* hh;            // (B, first) h_in W_hhᵀ's first block, normalised when layer norm is on
  const T* h_prev;  // (B, H) h_{t-1}
  const T* h_in;    // what W_hh sees: h_{t-1}, or h_{t-1} · mask under recurrent dropout
  T* gate;          // (B, G·H) the activated gates, written by the cell
  T* h;             // (B, H) h_t before zoneout, written by the cell
  const T* c_prev;  // LSTM: C_{t-1}
  T* c;             // LSTM: C_t before zoneout, written by the cell
  T* extra;         // GRU: (B, H) r·h_in (reset before) or W_hn h_in + b_hn (reset after), saved for backward
};

// one backward step over B rows; rows outside their sequence are already fixed up by the driver
template <typename T>
struct Bw {
  int64_t t;
  const T* live;
  const T* gate;     // (B, G·H) saved activated gates
  const T* gg;       // (B, G·H) the gates' own gradient (traces), zeros when absent
  const T* h_prev;   // h_{t-1}
  const T* h_in;     // h_{t-1} as W_hh saw it
  const T* dh;       // ∂h_t (less what zoneout passed straight back)
  const T* gh_prev;  // the outputs' own gradient at h_{t-1}
  T* dh_prev;        // ∂h_{t-1}: the cell writes its direct part (incl. gh_prev) for live rows
  T* acc;            // where the recurrent share of ∂h_{t-1} gathers (dh_prev, or the dropout scratch)
  const T* c;        // LSTM: C_t before zoneout
  const T* c_prev;   // LSTM: C_{t-1}
  T* dc;             // LSTM: ∂C_t in, ∂C_{t-1} out (live rows)
  const T* gc_prev;  // LSTM: the outputs' own gradient at C_{t-1}
  const T* extra;    // GRU: saved r·h_in or W_hn h_in + b_hn
  T* da;             // (B, gx) ∂ of the pre-activations: the input side's gradient
  T* dhn;            // GRU reset="after": (B, H) ∂(W_hn h + b_hn), for ∂W_hn and ∂b_hn
};

// ∂ of the first recurrent GEMM's output (before the driver's layer-norm backward): rows of width
// ``first`` with row stride ``ld``
template <typename T>
struct Grad {
  const T* d;
  int64_t ld;
};

// the services of one direction's loop
// RNNLAB_ALTERNATE=0: Loop::dot's steps all read W_hh's rows first to last (see Loop::alternate)
inline bool alternate_rows() {
  const char* env = std::getenv("RNNLAB_ALTERNATE");
  return !(env && env[0] == '0' && env[1] == 0);
}

template <typename T>
struct Loop {
  int64_t B, H;
  int64_t P;         // the width of the carried h: H, or the LSTM's proj_size (h_t = W_hr (o_t tanh(C_t)))
  // the row stride of the state rows the forward pass reads and writes (Fw's h_prev, h_in, h, c_prev, c): 0 for
  // H; the layer's whole H when this loop runs a slice of the units (split.h), its H being the slice's width
  int64_t ldh = 0;
  int64_t state_ld() const { return ldh ? ldh : H; }
  // a split part: its first unit (the cell's state rows start there), and what a cell with a second GEMM over a whole
  // row of its own outputs (the GRU with reset before: W_hn (r h)) calls between its passes: wait for the other part
  int64_t j0 = 0;
  std::function<void()> mid_step;
  // a split part at batch 1 reads its units' rows of the whole W_hh and W_ih in place (its w_hh and w_ih start at its
  // first unit's row): wblock is then the layer's H, the row distance between gate blocks, and the loop's column c
  // (gate block c / H, unit c % H of the part) is row (c / H) · wblock + c % H; 0: dense (gathered) weights
  int64_t wblock = 0;
  int64_t ldw = 0;   // the row stride of W_hhᵀ (P, ldw) and the row count of W_hh (ldw, P) = rec(H)
  const T* w_hhT = nullptr;  // (P, rec) forward
  const T* w_hh = nullptr;   // (rec, P) backward
  const T* w_hrT = nullptr;  // projection: (H, P) forward, null without one
  const T* w_hr = nullptr;   // projection: (P, H) backward
  PackedB<T> packed;       // forward: W_hhᵀ's first block packed once per call (the driver decides), or off
  PackedB<T> packed_back;  // backward: W_hh's first block, likewise
  const T* b_hn = nullptr;   // GRU reset="after": (H), zeros when absent
  const T* pf;       // LSTM peepholes (H each), zeros when absent
  const T* pi;
  const T* po;
  Norm<T> norm;      // layer norm, off when norm.g_hh is null
  NormGrads* ngrads; // backward with layer norm: the gains' and biases' gradient totals
  std::vector<T> scratch;  // per-step buffers a cell asks for (sized by the driver)
  std::vector<T> ln_step;  // ln_rows_back's per-step sums (2 × the widest normalised row)

  // bf16 mode (float only): W_hh's bf16 copies, made once per call; the GEMMs' left operand (h, or the
  // gradient rows) is rounded to bf16 per step into ``in16``; products accumulate and land in float32
  const bf16_t* w_hhT16 = nullptr;  // (P, rec) forward
  const bf16_t* w_hh16 = nullptr;   // (rec, P) backward
  std::vector<bf16_t> in16;         // (B, max(H, rec)), sized by make_loop in bf16 mode (split.h: own_bf16_*)
  bf16_t* keep16 = nullptr;         // backward: where product_back rounds this step's rows instead (the driver's da16)
  // the same two, packed once per call for brgemm.h's products where it runs them (else null: MKL on the copies
  // above); shared, read only, by a level's loops over parts of the batch
  std::shared_ptr<const PackedBf16> w_hhT16p, w_hh16p;
  // float32: W_hhᵀ (forward) and W_hh (backward) blocked once per call for brgemm.h's float32 products where they run
  // (driver.h's lay_out_forward / lay_out_backward make them), else null
  std::shared_ptr<const BlockedF32> w_hhTb, w_hhb;
  bool bf16 = false;                // the bf16 mode runs (the operator sets it; split.h's parts make their own copies)
  int64_t gemm_threads = 1;         // the threads a packed product's column blocks split between
  // a single row against a large W_hh (the driver decides: make_loop) reads W_hh (rec, P) row by row, one dot
  // product per output, instead of W_hhᵀ: measured 13-21% faster for B = 1, H = 512 LSTM and GRU inference,
  // slower for small W_hh and for more rows
  bool dot = false;
  // with dot, each step reads W_hh's rows in the direction opposite to the step before (small_gemv's ``backwards``):
  // a W_hh larger than the core's L2 then finds the rows read last still in it. LSTM inference at (50, 1, 256, 512),
  // split by unit (each part's W_hh 2 MB, this host's L2), 0.72-0.74 (min) and 0.74-0.79 (median) of one direction
  // every step over two runs of 15 interleaved calls, the GRU 0.91. RNNLAB_ALTERNATE=0 reads first to last every step (the tests compare).
  bool alternate = alternate_rows();
  bool backwards = false;  // the direction the last step read them in
  // W_hhᵀ in column blocks (small_gemm.h's block_gemv), read a row at a time in the direction ``backwards`` says, at
  // batch 1 (or where w_hhT is null): float32, given by rnnlab::cell_step's caller (the Streamer)
  const float* w_hh_blocks = nullptr;
  // a few rows against a W_hh that stays in cache (the driver decides: make_loop) run small_gemm.h's kernel
  // instead of BLAS: float32 only
  bool small = false;

  // The threads a step's pointwise passes run on (the driver decides: 1 inside threads of its own). Their rows
  // never read each other, so rows(pass) splits [0, B) across torch's threads, the ones MKL has just run the
  // step's GEMM on, through ATen's parallel_for (which runs on the calling thread unless the extension is compiled
  // with OpenMP, as it is not: ops.cpp's pointwise_threads); with one thread it is a plain call.
  int64_t threads = 1;
  template <class Pass>
  void rows(const Pass& pass) const {
    if (threads > 1)
      at::parallel_for(0, B, (B + threads - 1) / threads, pass);
    else
      pass(int64_t(0), B);
  }

  // the input projection, when the driver computes it a chunk of steps at a time (Direction::x)
  int64_t X = 0;               // input width
  const T* w_ih = nullptr;     // (gx, X)
  const T* b_ih = nullptr;     // (gx), or null without a bias
  const bf16_t* w_ih16 = nullptr;  // bf16 mode: W_ih's bf16 copy
  std::shared_ptr<const BlockedF32> w_ihTb;  // float32: W_ihᵀ (X, gx) blocked for brgemm.h's products, else null
  std::shared_ptr<const PackedBf16> w_ihT16p;  // bf16 mode: W_ihᵀ (X, gx) packed for brgemm.h's products, else null

  // out (n, gx) = x (n, X) · W_ihᵀ, for n input rows (x16: the same rows in bf16, in bf16 mode). The bias b_ih is
  // the cell's to add (Fw::xb), in its pointwise pass: copying it into every row first, for a GEMM that adds onto
  // them (beta = 1), is a pass over the chunk in memory and a read of it in the GEMM. One thread, min of 30 calls,
  // bias rows and beta = 1 / beta = 0: 10.5 / 9.0 ms at (2048, 256) · (256, 1024), 20.0 / 17.3-17.6 at
  // (256, 2048), 0.32 / 0.26 at (512, 64) · (64, 512), 0.28 / 0.26-0.27 at (256, 128) · (128, 512).
  void input(int64_t n, int64_t gx, const T* x, const bf16_t* x16, T* out) const {
    if (X == 0) {  // no input features: xp is zero (BLAS refuses a zero leading dimension)
      std::memset(out, 0, n * gx * sizeof(T));
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (w_ih16 && w_ihT16p && !wblock && w_ihT16p->covers(0, X, 0, gx))
        return w_ihT16p->product(n, x16, X, 0, X, 0, gx, false, out, gx, gemm_threads);
      if (w_ih16) return gemm_bf16(false, true, n, gx, X, x16, X, w_ih16, X, 0.0f, out, gx);
      if (w_ihTb && !wblock && w_ihTb->covers(0, X, 0, gx))
        return w_ihTb->product(n, x, X, 0, X, 0, gx, false, out, gx, gemm_threads);
    }
    if (!wblock) return gemm_t<T>(n, gx, X, x, X, w_ih, X, T(0), out, gx);
    for (int64_t g = 0; g < gx / H; ++g)  // a split part's gate blocks of the whole W_ih (the bf16 mode's parts gather theirs)
      gemm_t<T>(n, H, X, x, X, w_ih + g * wblock * X, X, T(0), out + g * H, gx);
  }

  // out (B, width) = in (B, P) · W_hhᵀ[:, col : col + width]
  void product(const T* in, int64_t col, int64_t width, T* out, int64_t ldo) {
    if constexpr (std::is_same_v<T, float>) {
      if (w_hhT16) {
        to_bf16_rows(B, P, in, P, in16.data());
        if (w_hhT16p && w_hhT16p->covers(0, P, col, width))
          return w_hhT16p->product(B, in16.data(), P, 0, P, col, width, false, out, ldo, gemm_threads);
        gemm_bf16(false, false, B, width, P, in16.data(), P, w_hhT16 + col, ldw, 0.0f, out, ldo);
        return;
      }
    }
    if constexpr (std::is_same_v<T, float>) {
      if (w_hh_blocks && (B == 1 || !w_hhT)) return gemv_blocks(B, P, in, P, w_hh_blocks, col, width, out, ldo, backwards);
      if (small) return small_gemm(B, width, P, in, P, w_hhT + col, ldw, 0.0f, out, ldo);
      if (w_hhTb && w_hhTb->covers(0, P, col, width))
        return w_hhTb->product(B, in, P, 0, P, col, width, false, out, ldo, gemm_threads);
    }
    if (col == 0 && packed.on() && width == packed.width()) return packed.product(in, P, T(0), out, ldo);
    if (dot) {
      if (col == 0 && alternate) backwards = !backwards;  // each step reads W_hh's rows the other way round
      if (!wblock) return by_rows(in, w_hh + col * P, width, out, ldo);
      // a split part: block by block, each a run of rows of the whole W_hh (last block first when backwards)
      const int64_t blocks = (col + width - 1) / H - col / H + 1;
      for (int64_t i = 0; i < blocks; ++i) {
        const int64_t blk = backwards ? col / H + blocks - 1 - i : col / H + i;
        const int64_t c = std::max(col, blk * H), end = std::min(col + width, (blk + 1) * H);
        by_rows(in, w_hh + (blk * wblock + c % H) * P, end - c, out + (c - col), ldo);
      }
      return;
    }
    gemm<T>(B, width, P, in, P, w_hhT + col, ldw, T(0), out, ldo);
  }
  // out (B, width) = in (B, P) · W (width, P)ᵀ for row-major W: in float32 at batch 1 gemv_rows (small_gemv, its rows
  // halved between the threads where it is not inside a parallel region already), else BLAS. Both threads / one,
  // on the AMD EPYC host at B = 1, H = 512, for layers that do not split (min of 30 calls, three runs): LSTM with
  // peepholes 0.70-0.86, GRU with layer norm 0.61-0.71, LSTM with proj_size = 256 0.92-1.06
  void by_rows(const T* in, const T* W, int64_t width, T* out, int64_t ldo) const {
    if constexpr (std::is_same_v<T, float>) {
      if (B == 1) return gemv_rows(width, P, in, W, out, backwards);
    }
    gemm_t<T>(B, width, P, in, P, W, P, T(0), out, ldo);
  }
  // out (B, P) = d (B, rows) · W_hh[row : row + rows, :] + beta · out
  void product_back(const T* d, int64_t ldd, int64_t row, int64_t rows, T beta, T* out) {
    if constexpr (std::is_same_v<T, float>) {
      if (w_hh16) {
        bf16_t* in = keep16 ? keep16 : in16.data();
        to_bf16_rows(B, rows, d, ldd, in);
        if (w_hh16p && w_hh16p->covers(row, rows, 0, P) && (beta == 0.0f || beta == 1.0f))
          return w_hh16p->product(B, in, rows, row, rows, 0, P, beta == 1.0f, out, P, gemm_threads);
        gemm_bf16(false, false, B, P, rows, in, rows, w_hh16 + row * P, P, beta, out, P);
        return;
      }
    }
    if constexpr (std::is_same_v<T, float>) {
      if (small) return small_gemm(B, P, rows, d, ldd, w_hh + row * P, P, beta, out, P);
      if (w_hhb && w_hhb->covers(row, rows, 0, P) && (beta == 0.0f || beta == 1.0f))
        return w_hhb->product(B, d, ldd, row, rows, 0, P, beta == 1.0f, out, P, gemm_threads);
    }
    if (row == 0 && packed_back.on() && rows == packed_back.depth()) return packed_back.product(d, ldd, beta, out, P);
    gemm<T>(B, P, rows, d, ldd, w_hh + row * P, P, beta, out, P);
  }
  // the LSTM's projection: h (B, P) = m (B, H) · W_hrᵀ, and its backward ∂m (B, H) = ∂h (B, P) · W_hr
  void project(const T* m, T* h) const { gemm<T>(B, P, H, m, H, w_hrT, P, T(0), h, P); }
  void project_back(const T* dh, T* dm) const { gemm<T>(B, H, P, dh, P, w_hr, H, T(0), dm, H); }
};

}  // namespace rnnlab
