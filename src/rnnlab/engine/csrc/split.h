// One direction's loops on two threads, split by hidden unit or by row: both cores for one level.
//
// By row (run_rows, at the end): each half of the batch runs the whole loop (driver.h's run_forward, run_backward) on
// a thread of its own over its rows of the layer's arrays; rows never meet inside a step, so the halves never wait
// for each other, but each reads all of W_hh every step (ops.cpp's rows_pay: while it fits in half a core's L2).
// By unit, the rest of this file:
//
// Part i owns the units [j0, j0 + n) and runs, on its own thread and one BLAS thread:
//
//   once      its rows of W_ih, b and W_hh (each gate block's rows j0 … j0+n-1), gathered into dense copies by the
//             part's own thread (so its core's cache and memory node hold them); W_hh's as W_hhᵀ (P, G·n)
//   per step  xp: its columns of x_t W_ihᵀ, a chunk of steps at a time (InputChunks, as run_forward; the cell adds b)
//             hh = h_{t-1} (B, P) · its W_hhᵀ columns       the whole h_{t-1}: every unit feeds every gate
//             the cell's pointwise maths on its units: h_t, C_t for columns j0 … j0+n-1 (Loop::ldh: the rows are
//             the layer's whole width), its gates (and the GRU's W_hn h + b_hn) into its own buffers, copied
//             into the layer's (T, B, G·H) layout when they are kept for backward
//             rows past their sequence keep their state, their gates are zero (as run_forward)
//             then it waits for the other part (StepBarrier): step t+1 reads every unit of h_t
//
// Against one loop whose GEMMs run on two BLAS threads: the pointwise pass runs on both cores, no BLAS thread team
// is woken and joined per step, and each part reads only its share of W_hh (which stays in its core's cache). A
// unit's arithmetic is run_forward's: the same cell code, and GEMM dot products over the same P numbers.
//
// Backward, likewise by unit, over the arrays in the layer's layout (the parts' cells read and write their columns:
// Loop::state_ld() is the layer's width, Loop::H the part's):
//
//   per step  the cell's derivatives for its units: ∂a (into the layer's (T, B, G·H) ∂a at its columns), ∂C_{t-1}
//             and ∂h_{t-1}'s direct part at its columns
//             its share of ∂h_{t-1}'s recurrent part, the whole row: ∂a's own columns (B, G·n) · its rows of W_hh
//             (G·n, P), one GEMM into its slot of a double-buffered pair
//             it waits for the other part; then ∂h_{t-1} at its columns += both shares' columns
//
// A share is read by the other part after the barrier and written again two steps later, after the next barrier,
// which the reader reaches only when done: two slots suffice. ∂W_ih, ∂W_hh and the biases' gradients are the
// operator's GEMMs over all T·B rows of ∂a afterwards, as for one loop.
//
// It runs the cells whose step has one GEMM before the pointwise pass and no row-wide pass: the RNN, the GRU with
// reset after, the LSTM without variants (no projection, peepholes, coupling, layer norm, recurrent dropout or
// zoneout); and, forward only, the GRU with reset before, whose second GEMM W_hn (r h) reads the whole row of r h:
// each part writes its units of r h into one shared row (B, H) and waits for the other (Loop::mid_step, a second
// barrier in the step) before multiplying the row by its rows of W_hn. ops.cpp's split_units says where. In the bf16
// mode each part also rounds its gathered rows to bf16 and packs them for brgemm.h (own_bf16_forward, _backward).
#pragma once

#include <cstring>
#include <exception>
#include <vector>

#include "driver.h"
#include "threads.h"
#include "transpose.h"
#include "workspace.h"

namespace rnnlab {

// part [j0, j0 + n) of a gate-blocked matrix (blocks of H rows, each ``cols`` wide), its blocks' rows stacked densely
template <typename T>
void gather_units(int64_t blocks, int64_t H, int64_t j0, int64_t n, int64_t cols, const T* w, T* out) {
  for (int64_t g = 0; g < blocks; ++g) std::memcpy(out + g * n * cols, w + (g * H + j0) * cols, n * cols * sizeof(T));
}

// The bf16 mode's copies for a loop that multiplies by weights of its own (a split part's dense rows, or a whole loop
// the operator made without them), rounded to bf16 into the buffers given and packed for brgemm.h where it runs (the
// operator's make_loop does the same for a whole loop). Forward: W_hhᵀ (P, ldw), and W_ih (ldw, X) where given (else
// the loop keeps the operator's); backward: W_hh (rows, P), which a part's product reads at its own row count.
template <typename T>
void own_bf16_forward(Loop<T>& k, const T* w_hhT, bf16_t* w_hhT16, const T* w_ih, bf16_t* w_ih16) {
  if constexpr (std::is_same_v<T, float>) {
    to_bf16_rows(k.P, k.ldw, w_hhT, k.ldw, w_hhT16);
    k.w_hhT16 = w_hhT16, k.w_hhT16p = PackedBf16::make(k.P, k.ldw, w_hhT16, k.ldw);
    if (w_ih) to_bf16_rows(k.ldw, k.X, w_ih, k.X, w_ih16), k.w_ih16 = w_ih16;
    k.in16.assign(k.B * std::max(k.P, k.ldw), bf16_t(0));
  }
}
template <typename T>
void own_bf16_backward(Loop<T>& k, int64_t rows, const T* w_hh, bf16_t* w_hh16) {
  if constexpr (std::is_same_v<T, float>) {
    to_bf16_rows(rows, k.P, w_hh, k.P, w_hh16);
    k.w_hh16 = w_hh16, k.w_hh16p = PackedBf16::make(rows, k.P, w_hh16, k.P);
    k.in16.assign(k.B * std::max(k.P, rows), bf16_t(0));
  }
}

// part [j0, j0 + n) of the loop ``whole`` (the layer's loop as make_loop sets it up; P == H) over direction d
template <typename T, class Cell>
void run_forward_part(const Loop<T>& whole, const Direction<T>& d, int64_t j0, int64_t n, StepBarrier& barrier,
                      T* shared) {
  const int64_t steps = d.steps, B = whole.B, H = whole.H, P = whole.P, X = whole.X;
  const int64_t blocks = Cell::gx(H) / H;  // gate blocks of W_ih, b and W_hh (these cells: G of each)
  const int64_t GX = Cell::gx(n), W1 = Cell::first(n), G = Cell::G, GH = G * H;
  // the product the whole loop runs (make_loop's rules): W_hh's rows, one dot product per output (Loop::dot), or
  // W_hhᵀ (P, GX) through the small-rows kernel or BLAS
  // (at batch 1, the dot products and the input projection read the part's rows of the whole W_hh and W_ih in place,
  // one gate block at a time: no copies, which there cost as much as several steps)
  const bool half = whole.bf16;  // the bf16 mode: the part's own bf16 copies (its rows gathered, never read in place)
  const bool dot = whole.dot && !half;
  Workspace ws;  // this thread's, kept between calls (workspace.h)
  T* w_ih = ws.take<T>(dot ? 0 : GX * X);
  T* bias = ws.take<T>(whole.b_ih ? GX : 0);
  T* w_hh = ws.take<T>(dot ? 0 : GX * P);
  T* w_hhT = ws.take<T>(dot ? 0 : GX * P);
  if (!dot) gather_units(blocks, H, j0, n, X, whole.w_ih, w_ih);
  if (whole.b_ih) gather_units(blocks, H, j0, n, int64_t(1), whole.b_ih, bias);
  if (!dot) {
    gather_units(blocks, H, j0, n, P, whole.w_hh, w_hh);
    transpose(GX, P, w_hh, w_hhT);
  }

  Loop<T> k;
  k.B = B, k.H = n, k.P = P, k.ldw = GX, k.ldh = H;
  k.w_hhT = dot ? nullptr : w_hhT, k.w_hh = dot ? whole.w_hh + j0 * P : w_hh, k.w_hrT = k.w_hr = nullptr;
  k.dot = dot;
  k.b_hn = whole.b_hn + j0;
  k.pf = whole.pf, k.pi = whole.pi, k.po = whole.po;  // zeros (no peepholes here), at least H long
  k.ngrads = nullptr;
  k.scratch.assign(Cell::scratch(B, n), T(0));
  k.X = X, k.w_ih = dot ? whole.w_ih + j0 * X : w_ih, k.b_ih = whole.b_ih ? bias : nullptr;
  k.wblock = dot ? H : 0;  // at batch 1 its rows of each gate block, read in place
  k.small = whole.small;  // a few rows: small_gemm.h's kernel, as the whole loop would run it
  k.j0 = j0;
  // a cell with a mid-step GEMM over a whole row of its outputs (Cell::mid_product) writes them into ``shared`` (B, H),
  // the layer's row, and waits for the other part's units before its GEMM reads the row
  if (Cell::mid_product) k.mid_step = [&barrier] { barrier.wait(); };

  if (half) own_bf16_forward(k, w_hhT, ws.take<bf16_t>(GX * P), w_ih, ws.take<bf16_t>(GX * X));
  lay_out_forward(k, GX, !d.xp);
  if (!k.small && !dot && !half && !k.w_hhTb && pack_pays<T>(W1, P)) k.packed.pack(B, W1, P, k.w_hhT, k.ldw);
  T* hh = ws.take<T>(B * W1);
  T* gate = ws.take<T>(B * G * n);
  T* ext = Cell::mid_product ? shared + j0 : ws.take<T>(B * n);  // the GRU's extra rows (row stride lde)
  const int64_t lde = Cell::mid_product ? H : n;
  InputChunks<T> xp(k, d, GX, ws);
  const CellSlots<T> cs(d, B, B, H, ws);  // (its own scratch rows, the layer's width: it touches its columns)
  for (int64_t s = 0; s < steps; ++s) {
    int64_t t, p, q;
    slots(steps, s, d.reverse, &t, &p, &q);
    const T* live = d.mask ? d.mask + t * B : nullptr;
    const T* h_prev = d.states + p * B * H;
    T* h_next = d.states + q * B * H;
    const T* c_prev = d.cells ? cs.prev(s, p) + j0 : nullptr;
    T* c_next = d.cells ? cs.next(s, q) + j0 : nullptr;
    k.product(h_prev, 0, W1, hh, W1);
    Cell::forward(Fw<T>{t, live, xp.at(s, t), xp.bias(), hh, h_prev + j0, h_prev + j0, gate, h_next + j0, c_prev,
                        c_next, ext},
                  k);
    if (d.keep) {  // the gates (and the GRU's extra) in the layer's layout, for backward
      T* kept = d.gates + t * B * GH;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t g = 0; g < G; ++g)
          std::memcpy(kept + b * GH + g * H + j0, gate + b * G * n + g * n, n * sizeof(T));
      if (d.extra)
        for (int64_t b = 0; b < B; ++b)
          std::memcpy(d.extra + (t * B + b) * H + j0, ext + b * lde, n * sizeof(T));
    }
    if (live) {  // rows past their sequence: state unchanged, gates zero
      for (int64_t b = 0; b < B; ++b) {
        if (live[b] != T(0)) continue;
        std::memcpy(h_next + b * H + j0, h_prev + b * H + j0, n * sizeof(T));
        if (c_next) std::memcpy(c_next + b * H, c_prev + b * H, n * sizeof(T));
        if (d.keep) {
          for (int64_t g = 0; g < G; ++g) std::memset(d.gates + (t * B + b) * GH + g * H + j0, 0, n * sizeof(T));
          if (d.extra) std::memset(d.extra + (t * B + b) * H + j0, 0, n * sizeof(T));
        }
      }
    }
    if (!barrier.wait()) return;  // the other part failed: its error is the one reported
  }
}

// run_forward on one loop, where no pair of threads came (run_jobs: inside another parallel region, or OpenMP's thread
// limit): the caller made no W_hhᵀ for a split level, so it is made here (not needed where the loop reads W_hh itself)
template <typename T, class Cell>
void run_forward_whole(const Loop<T>& whole, const Direction<T>& d) {
  Loop<T> k = whole;
  std::vector<T> w_hhT;
  std::vector<bf16_t> w_hhT16;
  if (!k.dot || k.bf16) {
    w_hhT.resize(k.P * k.ldw);
    transpose(k.ldw, k.P, k.w_hh, w_hhT.data());
    k.w_hhT = w_hhT.data();
  }
  if (k.bf16) {  // (its W_ih's bf16 copy is the whole call's, made by the operator)
    w_hhT16.resize(k.P * k.ldw);
    own_bf16_forward(k, k.w_hhT, w_hhT16.data(), static_cast<const T*>(nullptr), nullptr);
  }
  run_forward<T, Cell>(k, d);
}

// run_forward's results, on two threads of OpenMP's team (run_jobs): units [0, cut) and [cut, H)
// (true; false where it ran run_forward_whole instead)
template <typename T, class Cell>
bool run_forward_split(const Loop<T>& whole, const Direction<T>& d, int64_t cut) {
  StepBarrier barrier(2);
  std::vector<T> shared(Cell::mid_product ? whole.B * whole.H : 0);  // the row both parts' mid-step GEMM reads
  auto part = [&](int64_t i) {
    if (i == 0)
      run_forward_part<T, Cell>(whole, d, 0, cut, barrier, shared.data());
    else
      run_forward_part<T, Cell>(whole, d, cut, whole.H - cut, barrier, shared.data());
  };
  if (run_jobs(2, part, [&] { barrier.fail(); })) return true;
  run_forward_whole<T, Cell>(whole, d);
  return false;
}

// part [j0, j0 + n) of run_backward over direction d (the layer's loop ``whole``: B, H, P == H, W_hh). ``dh``,
// ``dh_prev``, ``dc`` (B, H) and ``shares`` (2 slots × 2 parts × (B, P)) are the parts' common buffers; part i
// touches only its own columns of the first three and its own slot pair of the last
template <typename T, class Cell>
void run_backward_part(const Loop<T>& whole, const Direction<T>& d, int64_t part, int64_t j0, int64_t n, T* dh,
                       T* dh_prev, T* dc, T* shares, StepBarrier& barrier) {
  const int64_t steps = d.steps, B = whole.B, H = whole.H, P = whole.P;
  const int64_t GX = Cell::gx(H), GH = Cell::G * H, blocks = GX / H, W = blocks * n;
  const bool lstm = d.cells != nullptr;
  Workspace ws;
  T* w_hh = ws.take<T>(W * P);
  T* grad = ws.take<T>(B * W);
  gather_units(blocks, H, j0, n, P, whole.w_hh, w_hh);  // its rows of W_hh (W, P)
  const bool half = whole.bf16;  // the bf16 mode: its share of ∂h_{t-1} on bf16 operands (own_bf16_backward)

  Loop<T> k;
  k.B = B, k.H = n, k.P = P, k.ldw = GX, k.ldh = H;
  k.w_hhT = nullptr, k.w_hh = w_hh, k.w_hrT = k.w_hr = nullptr;
  k.b_hn = whole.b_hn + j0;
  k.pf = whole.pf, k.pi = whole.pi, k.po = whole.po;
  k.ngrads = nullptr;
  k.scratch.assign(Cell::scratch(B, H), T(0));  // the layer's width: the GRU's dhh rows
  if (half) own_bf16_backward(k, W, w_hh, ws.take<bf16_t>(W * P));
  lay_out_backward(k);
  const int64_t nz = (d.g_gates ? 0 : B * GH) + (d.g_cells ? 0 : B * H) + (d.out_rows ? B * H : 0);
  T* zeros = ws.take<T>(nz);
  std::fill(zeros, zeros + nz, T(0));
  const T* zero_gates = zeros;
  const T* zero_cells = zeros + (d.g_gates ? 0 : B * GH);
  const T* zero_states = zero_cells + (d.g_cells ? 0 : B * H);

  const int64_t last = d.reverse ? 0 : steps;
  grad_start(grad_slot(d, last, B * H, zero_states), d.g_final, B, H, j0, n, dh, H);
  if (lstm) grad_start(d.g_cells ? d.g_cells + last * B * H : nullptr, d.g_final_c, B, H, j0, n, dc, H);
  for (int64_t s = steps - 1; s >= 0; --s) {
    int64_t t, p, q;
    slots(steps, s, d.reverse, &t, &p, &q);
    const T* live = d.mask ? d.mask + t * B : nullptr;
    const T* h_prev = d.states + p * B * H;
    const T* gh_prev = grad_slot(d, p, B * H, zero_states);
    const T* gc_prev = d.g_cells ? d.g_cells + p * B * H : zero_cells;
    T* da = d.da + t * B * GX;
    if (live) {  // rows outside their sequence: no gate gradient, the state's gradient passes through
      for (int64_t b = 0; b < B; ++b) {
        if (live[b] != T(0)) continue;
        for (int64_t g = 0; g < blocks; ++g) std::memset(da + b * GX + g * H + j0, 0, n * sizeof(T));
        for (int64_t j = b * H + j0; j < b * H + j0 + n; ++j) dh_prev[j] = dh[j] + gh_prev[j];
        if (lstm)
          for (int64_t j = b * H + j0; j < b * H + j0 + n; ++j) dc[j] += gc_prev[j];
      }
    }
    const Bw<T> step{t,
                     live,
                     d.gates + t * B * GH + j0,
                     (d.g_gates ? d.g_gates + t * B * GH : zero_gates) + j0,
                     h_prev + j0,
                     h_prev + j0,
                     dh + j0,
                     gh_prev + j0,
                     dh_prev + j0,
                     dh_prev + j0,
                     lstm ? d.cells + q * B * H + j0 : nullptr,
                     lstm ? d.cells + p * B * H + j0 : nullptr,
                     dc + j0,
                     gc_prev + j0,
                     d.extra ? d.extra + t * B * H + j0 : nullptr,
                     da + j0,
                     d.dhn ? d.dhn + t * B * H + j0 : nullptr};
    const Grad<T> g = Cell::backward(step, k);  // its columns of each block, from g.d (already at column j0)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t blk = 0; blk < blocks; ++blk)
        std::memcpy(grad + b * W + blk * n, g.d + b * g.ld + blk * H, n * sizeof(T));
    T* slot = shares + (s % 2) * 2 * B * P;
    if (half)  // its share of ∂h_{t-1}
      k.product_back(grad, W, 0, W, T(0), slot + part * B * P);
    else
      gemm<T>(B, P, W, grad, W, w_hh, P, T(0), slot + part * B * P, P);
    if (!barrier.wait()) return;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = b * P + j0; j < b * P + j0 + n; ++j) dh_prev[j] += slot[j] + slot[B * P + j];
    std::swap(dh, dh_prev);
  }
  for (int64_t b = 0; b < B; ++b) {
    std::memcpy(d.dh0 + b * H + j0, dh + b * H + j0, n * sizeof(T));
    if (lstm) std::memcpy(d.dc0 + b * H + j0, dc + b * H + j0, n * sizeof(T));
  }
}

// run_backward's results, on two threads of OpenMP's team: units [0, cut) and [cut, H)
// (true; false where no pair of threads came and it ran run_backward)
template <typename T, class Cell>
bool run_backward_split(const Loop<T>& whole, const Direction<T>& d, int64_t cut) {
  const int64_t B = whole.B, H = whole.H, P = whole.P;
  std::vector<T> common(3 * B * H + 4 * B * P, T(0));
  T* dh = common.data();
  T* dh_prev = dh + B * H;
  T* dc = dh_prev + B * H;
  T* shares = dc + B * H;
  StepBarrier barrier(2);
  auto part = [&](int64_t i) {
    const int64_t j0 = i == 0 ? 0 : cut, n = i == 0 ? cut : H - cut;
    run_backward_part<T, Cell>(whole, d, i, j0, n, dh, dh_prev, dc, shares, barrier);
  };
  if (run_jobs(2, part, [&] { barrier.fail(); })) return true;
  Loop<T> k = whole;  // no pair of threads: one loop
  std::vector<bf16_t> w_hh16;
  if (k.bf16) {
    w_hh16.resize(k.ldw * k.P);
    own_bf16_backward(k, k.ldw, k.w_hh, w_hh16.data());
  }
  run_backward<T, Cell>(k, d);
  return false;
}

// Split by row: part(b0, n) for the rows [0, B/2) and [B/2, B) at once, on two threads of OpenMP's team (run_jobs), each
// a whole loop (run_forward, run_backward) over its rows of the layer's arrays (ops.cpp's rows_of). A row's numbers
// never meet another row's inside a step, so the parts need no hand-off: each reads all of W_hh every step. False, with
// nothing run, where no pair of threads came.
template <class Part>
bool run_rows(int64_t B, Part part) {
  const int64_t cut = B / 2;
  return run_jobs(2, [&](int64_t i) { i == 0 ? part(int64_t(0), cut) : part(cut, B - cut); }, [] {});
}

}  // namespace rnnlab
