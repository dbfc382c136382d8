// The one time-stepping driver: what every cell shares, written once.
//
// Per direction of one level, over steps s = 0 … T-1 (time t = s, or T-1-s in reverse):
//
//   forward   h_in = h_{t-1} (· mask under recurrent dropout)
//             hh = h_in · W_hhᵀ[:, :first]       one GEMM (the cell may run a second, GRU reset="before")
//             hh ← LN(hh)                         layer norm's row pass, when on
//             Cell::forward                      the cell's pointwise maths (cells/*.h)
//             projection (LSTM proj_size): h_t = m_t · W_hrᵀ, m_t = o_t tanh(C_t) the cell's own h   one GEMM
//             zoneout: kept units take their previous value (h, and C for the LSTM)
//             rows past their sequence's end keep their state; their gates are zero
//   backward  zoneout's kept units pass their gradient straight back
//             rows past their end: no gate gradient, the state's gradient passes through
//             projection: ∂m_t = ∂h_t · W_hr                                                       one GEMM
//             Cell::backward                     ∂ of the cell's equations → da, ∂h_{t-1}'s direct part
//             layer norm's backward row pass, then ∂h_{t-1} += ∂hh · W_hh[:first]   one GEMM
//
// With a projection the carried h is P wide (states, h_0, ∂h) while C_t, the gates and m_t are H wide.
// State layout: states[0] = h_0 and states[t+1] = h after step t for the forward direction; the
// reverse direction runs t = T-1 … 0 and keeps states[T] = h_0, states[t] = h after step t, so its
// output over time is the slice states[0:T] — no reversal copy. ``mask`` (T, B) is 1 where step t
// is inside sequence b. Every buffer is allocated before the loop; nothing is allocated inside it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <ATen/Parallel.h>

#include "step.h"
#include "workspace.h"

namespace rnnlab {

// one direction's buffers (row-major, sizes in the comments; null where absent)
template <typename T>
struct Direction {
  int64_t steps = 0;          // T
  bool reverse = false;
  bool keep = true;           // false (inference, nothing kept for backward): gates, extra and m hold one step
  const T* mask = nullptr;    // (T, B)
  const T* xp = nullptr;      // (T, B, gx) the input projection of every step, or null: the driver computes it
  const T* x = nullptr;       // (T, B, X) with xp null: the inputs, projected a chunk of steps at a time (Loop::input)
  const bf16_t* x16 = nullptr;  // the same in bf16 (bf16 mode)
  T* states = nullptr;        // (T+1, B, P)
  T* cells = nullptr;         // (T+1, B, H) the LSTM's C
  T* gates = nullptr;         // (T, B, G·H) activated gates
  T* extra = nullptr;         // (T, B, H) the GRU's r·h or W_hn h + b_hn
  T* c_pre = nullptr;         // (T, B, H) the LSTM's C_t before zoneout (zoneout only)
  T* m = nullptr;             // (T, B, H) projection only: m_t = o_t tanh(C_t), before W_hr
  const T* h_mask = nullptr;  // (B, P) recurrent dropout's mask
  const T* zone = nullptr;    // (T, S, B, H) zoneout's keep masks, S = the cell's state count
  // backward
  const T* g_states = nullptr;  // (T+1, B, P), or with out_rows (T, B, P)
  // out_rows: g_states holds the output rows' gradient alone — the state after each step, slot t+1 forward and t
  // reverse — so that the caller need not widen it to every slot; h_0's slot, which no output shows, has none.
  // g_final (B, P) or null: the last state's own gradient (h_n's), added to that slot's
  bool out_rows = false;
  const T* g_final = nullptr;
  const T* g_final_c = nullptr;  // (B, H) or null: the LSTM's last C's own gradient (c_n's), added to its slot's
  const T* g_cells = nullptr;   // (T+1, B, H) or null: zero
  const T* g_gates = nullptr;   // (T, B, G·H) or null: zero
  const T* g_cpre = nullptr;    // (T, B, H) or null
  T* da = nullptr;              // (T, B, gx)
  bf16_t* da16 = nullptr;       // (T, B, gx) or null: the bf16 mode's ∂a, as each step's product rounds it (whole rows:
                                // the operator gives it where the first GEMM's width is gx, no layer norm), kept for ∂W
  // da_step: da holds one step (B, gx), reused (with da16, nothing after the loop reads ∂a in float32 but the gate bias's
  // gradient, which the loop then sums into db (gx) a step at a time, while the step's rows are in cache)
  bool da_step = false;
  T* db = nullptr;
  T* dhn = nullptr;             // (T, B, H) GRU reset="after"
  T* dhr = nullptr;             // (T, B, P) projection only: ∂h_t entering W_hr, for ∂W_hr
  T* dh0 = nullptr;             // (B, P)
  T* dc0 = nullptr;             // (B, H) LSTM
  // the rows of each time slot of the (T, ·, ·) arrays above when the loop runs a part of them (split.h's
  // run_rows: its pointers start at the part's first row), else 0: the loop's own B
  int64_t rows = 0;
  int64_t row_slot(int64_t B) const { return rows ? rows : B; }
  // 2 where ``cells`` holds only the first and the last C (inference: slots (C_0, C_T), reversed for the reverse
  // direction, as the (T+1)-slot layout at T = 1), else 0: every slot
  int64_t cell_slots = 0;
  T* dg_hh = nullptr;           // layer norm's gains' and biases' gradients
  T* db_hh = nullptr;
  T* dg_c = nullptr;
  T* db_c = nullptr;
};

// the outputs' own gradient at state slot p (slots ``slot`` values apart), or ``zeros`` where it has none
template <typename T>
inline const T* grad_slot(const Direction<T>& d, int64_t p, int64_t slot, const T* zeros) {
  if (!d.out_rows) return d.g_states + p * slot;
  const int64_t row = d.reverse ? p : p - 1;
  return row < 0 || row >= d.steps ? zeros : d.g_states + row * slot;
}

// a state's gradient where the backward loop starts, at its last slot: that slot's gradient ``g`` (null: zero) plus
// the final state's own ``fin`` (h_n's or c_n's; null: none); B rows of ``width`` columns from ``j0``, ``row`` apart in
// g and fin, ``ld`` apart in ``out``
template <typename T>
inline void grad_start(const T* g, const T* fin, int64_t B, int64_t row, int64_t j0, int64_t width, T* out,
                       int64_t ld) {
  for (int64_t b = 0; b < B; ++b) {
    T* o = out + b * ld + j0;
    if (g)
      std::memcpy(o, g + b * row + j0, width * sizeof(T));
    else
      std::memset(o, 0, width * sizeof(T));
    if (fin)
      for (int64_t j = 0; j < width; ++j) o[j] += fin[b * row + j0 + j];
  }
}

// sums[j] += Σ_b rows[b, j] over B dense rows of width n
template <typename T>
RNNLAB_KERNEL void column_sums_into(int64_t B, int64_t n, const T* __restrict rows, T* __restrict sums) {
  for (int64_t b = 0; b < B; ++b) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) sums[j] += rows[b * n + j];
  }
}

// step s -> time t and the state slots it reads (p) and writes (n)
inline void slots(int64_t steps, int64_t s, bool reverse, int64_t* t, int64_t* p, int64_t* n) {
  *t = reverse ? steps - 1 - s : s;
  *p = reverse ? *t + 1 : *t;
  *n = reverse ? *t : *t + 1;
}

// zoneout, forward: each unit of the new state keeps its previous value where ``keep`` is 1
template <typename T>
void zoneout_rows(int64_t B, int64_t H, const T* live, const T* keep, const T* prev, const T* fresh, T* out) {
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    for (int64_t j = b * H; j < (b + 1) * H; ++j) out[j] = keep[j] != T(0) ? prev[j] : fresh[j];
  }
}

// zoneout, backward: a unit that kept its previous value passes its gradient straight back (into carry);
// the cell's own update sees the rest
template <typename T>
void zoneout_rows_back(int64_t B, int64_t H, const T* live, const T* keep, T* d, T* carry) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = b * H; j < (b + 1) * H; ++j) {
      const bool kept = !skip(live, b) && keep[j] != T(0);
      carry[j] = kept ? d[j] : T(0);
      d[j] = kept ? T(0) : d[j];
    }
  }
}

// The input projection xp_t = x_t W_ihᵀ (the cell adds b: bias()), handed to the driver whole (Direction::xp, with
// layer norm: LN(x W_ihᵀ) + b, so bias() is zeros) or computed by it a chunk of steps at a time into a buffer that
// stays in cache: one GEMM over the chunk's rows, never a (T, B, gx) array written to memory and read back. Its
// buffers are taken from ``ws``, the caller's workspace scope (workspace.h: kept by the thread between calls), which
// must outlive it.
template <typename T>
class InputChunks {
 public:
  InputChunks(const Loop<T>& k, const Direction<T>& d, int64_t gx, Workspace& ws) : k_(k), d_(d), gx_(gx) {
    if (d.xp || !k.b_ih) {  // xp holds the bias already (layer norm's shift), or there is none: the cell adds zeros
      T* zeros = ws.take<T>(gx);
      std::fill(zeros, zeros + gx, T(0));
      bias_ = zeros;
    } else {
      bias_ = k.b_ih;
    }
    if (d.xp) return;
    // about 128 K numbers (512 KB in float32): well inside L2, and GEMMs of many rows. Where the loop's W_ih and W_hh
    // blocks together are larger than a core's L2, each chunk's GEMM reads W_ih through the L2 and evicts W_hh, which
    // the next steps then read from L3 again: there chunks of 4 M numbers (16 MB in float32), so that this happens a
    // few times a call rather than every few steps. LSTM inference split by unit, 2 threads, min and median of
    // interleaved calls, large / small chunks: 0.87 and 0.81 at (50, 128, 256, 512), 0.92 and 0.94 at (50, 8, 512,
    // 768), 0.84-0.91 at (50, 64, 512, 512) and (50, 32, 512, 768); 1.03 and 1.04 at (100, 16, 256, 512) (noise)
    const bool past_l2 = (k.X + k.P) * gx * int64_t(sizeof(T)) > l2_bytes();
    steps_ = std::clamp<int64_t>((int64_t(1) << (past_l2 ? 22 : 17)) / std::max<int64_t>(1, k.B * gx), 1, std::max<int64_t>(1, d.steps));
    buf_ = ws.take<T>(steps_ * k.B * gx);  // (not zeroed: every chunk is written before it is read)
    if (d.row_slot(k.B) != k.B) {  // a part of each time slot's rows (Direction::rows): gathered here first
      rows_ = ws.take<T>(steps_ * k.B * k.X);
      if (d.x16) rows16_ = ws.take<bf16_t>(steps_ * k.B * k.X);
    }
  }
  // step s's xp rows (B, gx): at the first step of each chunk, the chunk's GEMM
  const T* at(int64_t s, int64_t t) {
    const int64_t B = k_.B, R = d_.row_slot(B);
    if (d_.xp) return d_.xp + t * R * gx_;
    if (s % steps_ == 0) {
      const int64_t n = std::min(steps_, d_.steps - s);
      lo_ = d_.reverse ? t - n + 1 : t;  // the chunk's earliest time: its rows are contiguous in x
      if (R == B) {
        const int64_t row = lo_ * B;
        k_.input(n * B, gx_, d_.x + row * k_.X, d_.x16 ? d_.x16 + row * k_.X : nullptr, buf_);
      } else {  // a part of each time slot's rows: gathered, then one GEMM (a GEMM per step of few rows is slower)
        const int64_t X = k_.X;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t row = (lo_ + i) * R;
          std::memcpy(rows_ + i * B * X, d_.x + row * X, B * X * sizeof(T));
          if (d_.x16) std::memcpy(rows16_ + i * B * X, d_.x16 + row * X, B * X * sizeof(bf16_t));
        }
        k_.input(n * B, gx_, rows_, rows16_, buf_);
      }
    }
    return buf_ + (t - lo_) * k_.B * gx_;
  }
  // the bias the cell adds to every row of xp (Fw::xb): gx wide
  const T* bias() const { return bias_; }

 private:
  const Loop<T>& k_;
  const Direction<T>& d_;
  int64_t gx_, steps_ = 1, lo_ = 0;
  T* buf_ = nullptr;
  const T* bias_ = nullptr;
  T* rows_ = nullptr;  // a part's rows of the chunk's inputs (Direction::rows)
  bf16_t* rows16_ = nullptr;
};

// Where step s reads C_{t-1} and writes C_t: the layer's slots p and n of ``cells``; or, where it keeps only the first
// and the last C (Direction::cell_slots == 2), the first step reads the first, the last step writes the last, and the
// steps between pass C through a pair of scratch rows (B, H) — no (T+1, B, H) array written in inference
template <typename T>
class CellSlots {
 public:
  CellSlots(const Direction<T>& d, int64_t rows_per_slot, int64_t B, int64_t H, Workspace& ws)
      : d_(d), stride_(rows_per_slot * H), BH_(B * H) {
    if (d.cells && d.cell_slots == 2) pair_ = ws.take<T>(2 * B * H);
  }
  T* prev(int64_t s, int64_t p) const {
    if (!d_.cells) return nullptr;
    if (!pair_) return d_.cells + p * stride_;
    return s == 0 ? d_.cells + (d_.reverse ? 1 : 0) * stride_ : pair_ + ((s - 1) & 1) * BH_;
  }
  T* next(int64_t s, int64_t n) const {
    if (!d_.cells) return nullptr;
    if (!pair_) return d_.cells + n * stride_;
    return s == d_.steps - 1 ? d_.cells + (d_.reverse ? 0 : 1) * stride_ : pair_ + (s & 1) * BH_;
  }

 private:
  const Direction<T>& d_;
  int64_t stride_, BH_;
  T* pair_ = nullptr;
};

// whether a loop packs its per-step product's weight (rows × cols of it, blas.h's PackedB::wanted): by the bytes one
// thread reads every step, the block over the threads that step's GEMM runs on (one inside a parallel region: a part,
// a half of the batch or a direction of its own; else torch's threads); ``training``: a loop that keeps its steps for a
// backward, or the backward itself
template <typename T>
bool pack_pays(int64_t rows, int64_t cols, bool training = false) {
  const int64_t threads = at::in_parallel_region() ? 1 : std::max<int64_t>(1, at::get_num_threads());
  return PackedB<T>::wanted(rows * cols * int64_t(sizeof(T)) / threads, training);
}

// The weights a loop's products read through brgemm.h, laid out once per call where it runs them (not again where a
// caller laid them out first: the halves of a batch split by row share the whole loop's). Forward: W_hhᵀ (float32; the
// bf16 mode packs its own copy when it makes it) and, where the loop computes the input projection's chunks
// (``input``), W_ihᵀ (gx, the projection's width, by X): float32 blocked, or the bf16 mode's copy packed.
template <typename T>
void lay_out_forward(Loop<T>& k, int64_t gx, bool input) {
  if constexpr (std::is_same_v<T, float>) {
    if (!k.w_hhT16 && !k.dot && !k.small && !k.w_hhTb) k.w_hhTb = BlockedF32::make(k.P, k.ldw, k.w_hhT, k.ldw);
    if (!input || k.wblock || k.X == 0) return;
    if (k.w_ih16 && !k.w_ihT16p) k.w_ihT16p = PackedBf16::make(k.X, gx, k.w_ih16, k.X, true);
    if (!k.w_ih16 && !k.small && !k.w_ihTb) k.w_ihTb = BlockedF32::make(k.X, gx, k.w_ih, k.X, true);
  }
}
// backward: W_hh (rec, P), float32 blocked
template <typename T>
void lay_out_backward(Loop<T>& k) {
  if constexpr (std::is_same_v<T, float>) {
    if (!k.w_hh16 && !k.small && !k.w_hhb) k.w_hhb = BlockedF32::make(k.ldw, k.P, k.w_hh, k.P);
  }
}

template <typename T, class Cell>
void run_forward(Loop<T>& k, const Direction<T>& d) {
  const int64_t steps = d.steps, B = k.B, H = k.H, P = k.P, GX = Cell::gx(H), W1 = Cell::first(H);
  const int64_t GH = Cell::G * H;  // stored gates: the LSTM keeps (f, i, g, o) even when coupled
  const int64_t RS = d.row_slot(B);  // rows per time slot of the (T, ·, ·) arrays
  constexpr int64_t S = Cell::states;
  k.scratch.assign(Cell::scratch(B, H), T(0));
  lay_out_forward(k, GX, !d.xp);
  if (!k.w_hhT16 && !k.dot && !k.small && !k.w_hhTb && pack_pays<T>(W1, P, d.keep))  // a training loop keeps its steps
    k.packed.pack(B, W1, P, k.w_hhT, k.ldw);                                          // W_hhᵀ[:, :first]
  Workspace ws;
  T* hh = ws.take<T>(B * W1);
  T* hin = ws.take<T>(d.h_mask ? B * P : 0);
  InputChunks<T> xp(k, d, GX, ws);
  const CellSlots<T> cs(d, RS, B, H, ws);
  for (int64_t s = 0; s < steps; ++s) {
    int64_t t, p, n;
    slots(steps, s, d.reverse, &t, &p, &n);
    const T* live = d.mask ? d.mask + t * RS : nullptr;
    const T* h_prev = d.states + p * RS * P;
    T* h_next = d.states + n * RS * P;
    const int64_t kt = d.keep ? t : 0;  // the slot of this step's gates, extra and m
    T* m = d.m ? d.m + kt * RS * H : nullptr;  // projection: the cell's h is m_t, h_t = m_t W_hrᵀ
    const T* h_in = h_prev;
    if (d.h_mask) {  // recurrent dropout: W_hh sees h_{t-1} · mask
      for (int64_t j = 0; j < B * P; ++j) hin[j] = h_prev[j] * d.h_mask[j];
      h_in = hin;
    }
    k.product(h_in, 0, W1, hh, W1);
    if (k.norm.on())
      ln_rows<T>(B, W1, live, hh, W1, k.norm.g_hh, k.norm.b_hh, k.norm.uhat + t * RS * W1, k.norm.urstd + t * RS);
    const T* c_prev = cs.prev(s, p);
    T* c_next = cs.next(s, n);
    T* c_new = d.cells && d.zone ? d.c_pre + t * RS * H : c_next;  // C_t, before zoneout
    T* gate = d.gates + kt * RS * GH;
    T* extra = d.extra ? d.extra + kt * RS * H : nullptr;
    Cell::forward(
        Fw<T>{t, live, xp.at(s, t), xp.bias(), hh, h_prev, h_in, gate, m ? m : h_next, c_prev, c_new, extra}, k);
    if (m) k.project(m, h_next);  // (a row past its end is put back below; GEMM rows do not mix)
    if (d.zone) {
      zoneout_rows<T>(B, P, live, d.zone + (S * t) * RS * H, h_prev, h_next, h_next);
      if (S == 2) zoneout_rows<T>(B, H, live, d.zone + (S * t + 1) * RS * H, c_prev, c_new, c_next);
    }
    if (live) {  // rows past their sequence: state unchanged, gates zero
      for (int64_t b = 0; b < B; ++b) {
        if (live[b] != T(0)) continue;
        std::memcpy(h_next + b * P, h_prev + b * P, P * sizeof(T));
        if (c_next) std::memcpy(c_next + b * H, c_prev + b * H, H * sizeof(T));
        std::memset(gate + b * GH, 0, GH * sizeof(T));
        if (extra) std::memset(extra + b * H, 0, H * sizeof(T));
        if (m) std::memset(m + b * H, 0, H * sizeof(T));  // so that ∂W_hr = Σ ∂h_tᵀ m_t skips the row
        if (c_new != c_next) std::memset(c_new + b * H, 0, H * sizeof(T));
      }
    }
  }
}

template <typename T, class Cell>
void run_backward(Loop<T>& k, const Direction<T>& d) {
  const int64_t steps = d.steps, B = k.B, H = k.H, P = k.P, GX = Cell::gx(H), W1 = Cell::first(H), R = Cell::rec(H);
  const int64_t GH = Cell::G * H, RS = d.row_slot(B);
  constexpr int64_t S = Cell::states;
  const bool lstm = d.cells != nullptr;
  k.scratch.assign(Cell::scratch(B, H), T(0));
  k.ln_step.assign(k.norm.on() ? 2 * R : 0, T(0));
  lay_out_backward(k);
  if (!k.w_hh16 && !k.small && !k.w_hhb && pack_pays<T>(W1, P, true))
    k.packed_back.pack(B, P, W1, k.w_hh, P);  // W_hh[:first]
  NormGrads grads(R, H, k.norm.on(), lstm);
  k.ngrads = &grads;
  // an absent gradient is read from one step's worth of zeros: the kernels stay branch-free,
  // which is what lets g++ vectorise them (a null check inside costs 2× on large layers)
  const std::vector<T> zeros((d.g_gates ? 0 : B * GH) + (d.g_cells ? 0 : B * H) + (d.out_rows ? B * P : 0), T(0));
  const T* zero_gates = zeros.data();
  const T* zero_cells = zeros.data() + (d.g_gates ? 0 : B * GH);
  const T* zero_states = zero_cells + (d.g_cells ? 0 : B * H);
  std::vector<T> buf(2 * B * P + B * H), drop(d.h_mask ? 2 * B * P : 0), carry(d.zone ? S * B * H : 0);
  T* dh = buf.data();       // ∂h_t (the state after this step)
  T* dh_prev = dh + B * P;  // ∂h_{t-1}
  T* dc = dh_prev + B * P;  // ∂C_t, updated in place to ∂C_{t-1}
  T* hin = d.h_mask ? drop.data() : nullptr;        // recurrent dropout: h_{t-1} · mask
  T* dhin = d.h_mask ? drop.data() + B * P : nullptr;  // and its gradient
  // projection: the cell sees ∂m_t as its ∂h and writes its direct ∂h_{t-1} (the outputs' own gradient, read
  // H wide) into a spare buffer; the driver passes the P-wide one on itself
  std::vector<T> proj(d.dhr ? 3 * B * H : 0, T(0));
  T* dm = d.dhr ? proj.data() : nullptr;
  const int64_t last = d.reverse ? 0 : steps;
  grad_start(grad_slot(d, last, RS * P, zero_states), d.g_final, B, P, 0, P, dh, P);
  grad_start(d.g_cells ? d.g_cells + last * RS * H : nullptr, d.g_final_c, B, H, 0, H, dc, H);
  for (int64_t s = steps - 1; s >= 0; --s) {
    int64_t t, p, n;
    slots(steps, s, d.reverse, &t, &p, &n);
    const T* live = d.mask ? d.mask + t * RS : nullptr;
    const T* h_prev = d.states + p * RS * P;
    const T* gh_prev = grad_slot(d, p, RS * P, zero_states);
    const T* gc_prev = d.g_cells ? d.g_cells + p * RS * H : zero_cells;
    T* da = d.da + (d.da_step ? 0 : t * RS * GX);
    if (d.zone) {
      zoneout_rows_back<T>(B, P, live, d.zone + (S * t) * RS * H, dh, carry.data());
      if (S == 2) {
        zoneout_rows_back<T>(B, H, live, d.zone + (S * t + 1) * RS * H, dc, carry.data() + B * H);
        if (d.g_cpre)  // the traces' C_t (before zoneout)
          for (int64_t b = 0; b < B; ++b)
            if (!skip(live, b))
              for (int64_t j = b * H; j < (b + 1) * H; ++j) dc[j] += d.g_cpre[t * RS * H + j];
      }
    }
    if (live) {  // rows outside their sequence: no gate gradient, the state's gradient passes through
      for (int64_t b = 0; b < B; ++b) {
        if (live[b] != T(0)) continue;
        std::memset(da + b * GX, 0, GX * sizeof(T));
        for (int64_t j = b * P; j < (b + 1) * P; ++j) dh_prev[j] = dh[j] + gh_prev[j];
        if (lstm)
          for (int64_t j = b * H; j < (b + 1) * H; ++j) dc[j] += gc_prev[j];
      }
    }
    const T* h_in = h_prev;
    T* acc = dh_prev;  // where the recurrent share of ∂h_{t-1} gathers
    if (d.h_mask) {
      for (int64_t j = 0; j < B * P; ++j) hin[j] = h_prev[j] * d.h_mask[j];
      h_in = hin;
      std::memset(dhin, 0, B * P * sizeof(T));
      acc = dhin;
    }
    const T* c_t = lstm ? (d.zone ? d.c_pre + t * RS * H : d.cells + n * RS * H) : nullptr;  // C_t before zoneout
    if (dm) {  // h_t = m_t W_hrᵀ: keep ∂h_t for ∂W_hr, and ∂m_t = ∂h_t W_hr
      std::memcpy(d.dhr + t * RS * P, dh, B * P * sizeof(T));
      k.project_back(dh, dm);
    }
    const Bw<T> step{t,       live,    d.gates + t * RS * GH, d.g_gates ? d.g_gates + t * RS * GH : zero_gates,
                     h_prev,  h_in,    dm ? dm : dh,         dm ? dm + 2 * B * H : gh_prev,
                     dm ? dm + B * H : dh_prev, acc, c_t,     lstm ? d.cells + p * RS * H : nullptr,
                     dc,      gc_prev, d.extra ? d.extra + t * RS * H : nullptr,
                     da,      d.dhn ? d.dhn + t * RS * H : nullptr};
    Grad<T> g = Cell::backward(step, k);
    if (dm)  // the direct part of ∂h_{t-1}: the outputs' own gradient, for the rows inside their sequence
      for (int64_t b = 0; b < B; ++b)
        if (!skip(live, b)) std::memcpy(dh_prev + b * P, gh_prev + b * P, P * sizeof(T));
    if (k.norm.on()) {  // through LN(W_h ·) to the raw GEMM outputs, kept for ∂W_hh
      T* dhh = k.norm.dhh + t * RS * R;
      ln_rows_back<T>(B, W1, live, g.d, g.ld, k.norm.g_hh, k.norm.uhat + t * RS * W1, k.norm.urstd + t * RS, dhh, R,
                      grads.g_hh.data(), grads.b_hh.data(), k.ln_step.data());
      g = {dhh, R};
    }
    k.keep16 = d.da16 && g.d == da ? d.da16 + t * RS * GX : nullptr;
    if (d.db) column_sums_into(B, GX, da, d.db);
    k.product_back(g.d, g.ld, 0, W1, T(1), acc);
    if (d.h_mask)
      for (int64_t j = 0; j < B * P; ++j) dh_prev[j] += dhin[j] * d.h_mask[j];
    if (d.zone) {
      for (int64_t j = 0; j < B * P; ++j) dh_prev[j] += carry[j];
      if (S == 2)
        for (int64_t j = 0; j < B * H; ++j) dc[j] += carry[B * H + j];
    }
    std::swap(dh, dh_prev);
  }
  std::memcpy(d.dh0, dh, B * P * sizeof(T));
  if (lstm) std::memcpy(d.dc0, dc, B * H * sizeof(T));
  for (size_t j = 0; j < grads.g_hh.size(); ++j) d.dg_hh[j] = T(grads.g_hh[j]), d.db_hh[j] = T(grads.b_hh[j]);
  for (size_t j = 0; j < grads.g_c.size(); ++j) d.dg_c[j] = T(grads.g_c[j]), d.db_c[j] = T(grads.b_c[j]);
  k.ngrads = nullptr;
}

// the linear recurrences' loop (minGRU, minLSTM: cells/linear.h): no GEMM, the same slots and masks
template <typename T, class Cell>
void run_linear_forward(int64_t steps, int64_t B, int64_t H, bool reverse, const T* mask, const T* a, const T* b,
                        T* hs) {
  for (int64_t s = 0; s < steps; ++s) {
    int64_t t, p, n;
    slots(steps, s, reverse, &t, &p, &n);
    const int64_t q = t * B * H;
    if (!mask) {
      Cell::forward(B * H, a + q, b + q, hs + p * B * H, hs + n * B * H);
      continue;
    }
    for (int64_t r = 0; r < B; ++r) {  // a row outside its sequence keeps its state
      const int64_t o = r * H;
      if (mask[t * B + r] != T(0))
        Cell::forward(H, a + q + o, b + q + o, hs + p * B * H + o, hs + n * B * H + o);
      else
        std::memcpy(hs + n * B * H + o, hs + p * B * H + o, H * sizeof(T));
    }
  }
}

template <typename T, class Cell>
void run_linear_backward(int64_t steps, int64_t B, int64_t H, bool reverse, const T* mask, const T* a, const T* hs,
                         const T* g_hs, T* da, T* db, T* dh0) {
  std::vector<T> buf(2 * B * H);
  T* dh = buf.data();
  T* dh_prev = dh + B * H;
  std::memcpy(dh, g_hs + (reverse ? 0 : steps) * B * H, B * H * sizeof(T));
  for (int64_t s = steps - 1; s >= 0; --s) {
    int64_t t, p, n;
    slots(steps, s, reverse, &t, &p, &n);
    const int64_t q = t * B * H;
    if (!mask) {
      Cell::backward(B * H, a + q, hs + p * B * H, dh, g_hs + p * B * H, da + q, db + q, dh_prev);
    } else {
      for (int64_t r = 0; r < B; ++r) {
        const int64_t o = r * H;
        if (mask[t * B + r] != T(0)) {
          Cell::backward(H, a + q + o, hs + p * B * H + o, dh + o, g_hs + p * B * H + o, da + q + o, db + q + o,
                         dh_prev + o);
        } else {  // the state passed through: so does its gradient
          std::memset(da + q + o, 0, H * sizeof(T));
          std::memset(db + q + o, 0, H * sizeof(T));
          for (int64_t j = 0; j < H; ++j) dh_prev[o + j] = dh[o + j] + g_hs[p * B * H + o + j];
        }
      }
    }
    std::swap(dh, dh_prev);
  }
  std::memcpy(dh0, dh, B * H * sizeof(T));
}

}  // namespace rnnlab
