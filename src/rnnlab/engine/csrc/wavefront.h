// A stack's levels as a wavefront: rnnlab::recurrent_stack and rnnlab::recurrent_stack_backward.
// (On one torch thread the same chunks run level after level on the calling thread: the same results.)
//
// Included by ops.cpp inside its anonymous namespace (it uses that file's checks, records and loops).
//
// L unidirectional levels of the same cell, without the variants that only the per-level operator computes
// (peepholes, layer norm, coupled gates, recurrent dropout, zoneout); lengths (``mask``) and inter-layer
// dropout (``drop``: (L-1, T, B, H), the scaled keep mask F.dropout would multiply by) are computed. Time is cut
// into chunks of ``chunk`` steps and each level runs on its own thread, its per-step GEMMs on one BLAS thread:
//
//   forward   level k, chunk c: (k > 0) wait for level k-1's chunk c; input rows = x, or (live ? h_{k-1} : 0) · drop;
//             the driver's loop over the chunk's steps (it projects their input rows, x W_ihᵀ, itself; the cell
//             adds b) — while level k-1 runs chunk c+1.
//   backward  in reverse chunks: level k, chunk c waits for level k+1's chunks down to c-1 (the driver's step t
//             reads the outputs' gradient of h_{t-1}, one step into the chunk before); ∂h at a chunk's start is
//             carried to the next chunk through the working copy of the states' gradient; after its chunk, level
//             k+1 adds (live ? ∂a_rows · W_ih : 0) · drop into level k's states' gradient (level 0: ∂x rows).
//             After the threads: each level's ∂W_ih, ∂W_hh, ∂b, ∂b_hn, one GEMM or reduction over T·B rows each
//             (on torch's threads), as recurrent_level_backward computes them.
//
// The outputs are the per-level operator's, levels first: states (L, T+1, B, H), cells (L, T+1, B, H) (LSTM),
// gates (L, T, B, G·H), reserve (L, ·); so each level's backward is recurrent_level_backward's, and the results
// equal the level-by-level run's (bitwise where BLAS gives a row the same sums in a chunk's GEMM as in the
// whole sequence's, which MKL does for chunks of a few hundred rows).

#include <condition_variable>
#include <mutex>

// chunks finished per level, and whether a thread failed (then every waiting thread gives up)
struct Progress {
  std::mutex m;
  std::condition_variable cv;
  std::vector<int64_t> done;
  bool failed = false;
  explicit Progress(int64_t L) : done(L, 0) {}
  void finish(int64_t k, int64_t count) {
    {
      std::lock_guard<std::mutex> lock(m);
      done[k] = count;
    }
    cv.notify_all();
  }
  bool wait(int64_t k, int64_t count) {  // false: another thread failed
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return failed || done[k] >= count; });
    return !failed;
  }
  void fail() {
    {
      std::lock_guard<std::mutex> lock(m);
      failed = true;
    }
    cv.notify_all();
  }
};

// run job(k) for every level, each on its own thread of an OpenMP team (threads.h's run_jobs), each loop's GEMMs on
// one BLAS thread; rethrows the first error after every thread has ended. On one torch thread the levels run in turn on the
// calling thread instead, in ``order`` (the forward's 0 … L-1, the backward's L-1 … 0): the same arithmetic.
template <typename Job>
void each_level(int64_t L, Progress& progress, bool upward, Job job) {
  if (at::get_num_threads() >= 2 && run_jobs(L, job, [&] { progress.fail(); })) return;
  BlasThreads guard(1);  // one torch thread, or no team of L (inside another parallel region): in turn
  for (int64_t i = 0; i < L; ++i) job(upward ? i : L - 1 - i);
}

// the steps per chunk: given, or about 256 rows (B per step) and at least 2 steps
int64_t stack_chunk(int64_t chunk, int64_t T, int64_t B) {
  if (chunk <= 0) chunk = std::max<int64_t>(2, (256 + B - 1) / B);
  return std::max<int64_t>(1, std::min(chunk, T));
}

struct StackCheck {
  std::vector<Shape> shapes;  // per level (D = 1)
  std::vector<Record> recs;
  int64_t L;
};

// every level's arguments checked by check_level (the input of level k > 0 is ``inputs[k-1]``, (T, B, H))
StackCheck check_stack(const char* fn, const Tensor& x, at::TensorList w_ih, at::TensorList w_hh, const Tensor& h0,
                       const Opt& c0, at::TensorList b, at::TensorList b_hn, const Opt& mask, const Opt& drop,
                       c10::string_view cell, const Tensor& inputs) {
  StackCheck out;
  const int64_t L = static_cast<int64_t>(w_hh.size());
  out.L = L;
  TORCH_CHECK_VALUE(L >= 1, fn, ": w_hh: expected one tensor per level, got none");
  TORCH_CHECK_VALUE(static_cast<int64_t>(w_ih.size()) == L, fn, ": w_ih: expected ", L, " tensors, got ", w_ih.size());
  TORCH_CHECK_VALUE(b.empty() || static_cast<int64_t>(b.size()) == L, fn, ": b: expected 0 or ", L, " tensors");
  TORCH_CHECK_VALUE(b_hn.empty() || static_cast<int64_t>(b_hn.size()) == L, fn, ": b_hn: expected 0 or ", L,
                    " tensors");
  TORCH_CHECK_VALUE(h0.dim() == 3 && h0.size(0) == L, fn, ": h0: expected (L, B, H) with L = ", L, ", got shape ",
                    h0.sizes());
  TORCH_CHECK_VALUE(!c0.has_value() || (c0->dim() == 3 && c0->size(0) == L), fn, ": c0: expected (L, B, H)");
  for (int64_t k = 0; k < L; ++k) {
    const Tensor xk = k == 0 ? x : inputs[k - 1];
    auto one = [](const Tensor& t) { return t.unsqueeze(0); };
    const Opt ck = c0.has_value() ? Opt(c0->narrow(0, k, 1)) : Opt();
    const Opt bk = b.empty() ? Opt() : Opt(one(b[k]));
    const Opt bnk = b_hn.empty() ? Opt() : Opt(one(b_hn[k]));
    std::vector<Record> recs;
    Shape s = check_level(fn, xk, mask, one(w_ih[k]), one(w_hh[k]), h0.narrow(0, k, 1), ck, bk, bnk, Opt(), Opt(),
                          Opt(), Opt(), Opt(), Opt(), Opt(), Opt(), Opt(), Opt(), cell, false, &recs);
    if (k > 0) {
      TORCH_CHECK_VALUE(s.X == s.H, fn, ": w_ih[", k, "]: expected (G*H, H) (level ", k, "'s input is level ", k - 1,
                        "'s output), got shape ", w_ih[k].sizes());
      TORCH_CHECK_VALUE(s.H == out.shapes[0].H, fn, ": w_hh[", k, "]: expected every level's H = ",
                        out.shapes[0].H);
    }
    out.shapes.push_back(s);
    out.recs.push_back(std::move(recs[0]));
  }
  const Shape& s = out.shapes[0];
  if (drop.has_value()) {
    TORCH_CHECK_VALUE(L >= 2, fn, ": drop: expected None for one level");
    expect(fn, "drop", *drop, {L - 1, s.T, s.B, s.H}, s.dtype);
  }
  return out;
}

// level k's input rows [t0, t0 + n): (live ? h : 0) · drop, from the level below's states (as run_stack computes
// them: torch.where, then the dropout's product)
template <typename T>
void stack_input_rows(int64_t t0, int64_t n, int64_t B, int64_t H, const T* states_below, const T* mask,
                      const T* drop, T* out) {
  for (int64_t t = t0; t < t0 + n; ++t) {
    for (int64_t r = 0; r < B; ++r) {
      const T* h = states_below + ((t + 1) * B + r) * H;
      T* o = out + (t * B + r) * H;
      const bool live = !mask || mask[t * B + r] != T(0);
      if (drop) {
        const T* q = drop + (t * B + r) * H;
        for (int64_t j = 0; j < H; ++j) o[j] = (live ? h[j] : T(0)) * q[j];
      } else {
        for (int64_t j = 0; j < H; ++j) o[j] = live ? h[j] : T(0);
      }
    }
  }
}

using StackOut = std::tuple<Tensor, Tensor, Tensor, Tensor>;

StackOut recurrent_stack(const Tensor& x, at::TensorList w_ih, at::TensorList w_hh, const Tensor& h0, const Opt& c0,
                         at::TensorList b, at::TensorList b_hn, const Opt& mask, const Opt& drop, c10::string_view cell,
                         int64_t chunk) {
  const char* fn = "rnnlab::recurrent_stack";
  const int64_t L = static_cast<int64_t>(w_hh.size());
  TORCH_CHECK_VALUE(L >= 1 && h0.dim() == 3 && x.dim() == 3, fn, ": expected x (T, B, X), h0 (L, B, H), one w_hh per level");
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(2);
  const Tensor inputs = pooled_empty({std::max<int64_t>(L - 1, 0), T, B, H}, x.options());  // level k > 0's input
  const StackCheck c = check_stack(fn, x, w_ih, w_hh, h0, c0, b, b_hn, mask, drop, cell, inputs);
  const Shape& s = c.shapes[0];
  const bool lstm = s.kind == Kind::LSTM;
  const int64_t GH = s.GH;
  const int64_t C = stack_chunk(chunk, T, B), chunks = (T + C - 1) / C;
  const Tensor m = mask.has_value() ? mask->contiguous() : Tensor();
  const Tensor q = drop.has_value() ? drop->contiguous() : Tensor();
  Tensor states = pooled_empty({L, T + 1, B, H}, x.options());
  Tensor cells = lstm ? pooled_empty({L, T + 1, B, H}, x.options()) : x.new_empty({0});
  Tensor gates = pooled_empty({L, T, B, GH}, x.options());
  Tensor reserve = pooled_empty({L, reserve_size(s)}, x.options());
  std::vector<Tensor> w_hhTs;
  for (int64_t k = 0; k < L; ++k) {
    const Record& r = c.recs[k];
    w_hhTs.push_back(transposed(r.w_hh));
    states[k][0].copy_(r.h0);
    if (lstm) cells[k][0].copy_(r.c0);
  }
  const Tensor xc = x.contiguous();
  Progress progress(L);
  AT_DISPATCH_FLOATING_TYPES(s.dtype, "rnnlab::recurrent_stack", [&] {
    using T_ = scalar_t;
    // every level's loop and pointers, made here: the threads below touch raw memory and BLAS only
    std::vector<std::vector<T_>> zeros(L);
    std::vector<Loop<T_>> loops;
    std::vector<T_*> ex(L);
    for (int64_t k = 0; k < L; ++k) {
      const Reserve res(c.shapes[k], reserve[k]);
      loops.push_back(make_loop<T_>(c.shapes[k], c.recs[k], res, w_hhTs[k], Tensor(), zeros[k], Tensor()));
      Loop<T_>& lk = loops.back();  // the driver projects each chunk's input rows itself (Loop::input)
      lk.X = c.shapes[k].X, lk.w_ih = c.recs[k].w_ih.data_ptr<T_>();
      lk.b_ih = c.shapes[k].bias ? c.recs[k].b.data_ptr<T_>() : nullptr;
      ex[k] = mut<T_>(res.get("extra"));
    }
    T_* st0 = states.data_ptr<T_>();
    T_* ce0 = lstm ? cells.data_ptr<T_>() : nullptr;
    T_* ga0 = gates.data_ptr<T_>();
    T_* in0 = L > 1 ? inputs.data_ptr<T_>() : nullptr;
    const T_* x0 = xc.data_ptr<T_>();
    const T_* q0 = ptr<T_>(q);
    const T_* mk = ptr<T_>(m);
    const int64_t slab = (T + 1) * B * H, rows = T * B;  // one level's states; one level's time rows
    each_level(L, progress, true, [&](int64_t k) {
      const Shape& sk = c.shapes[k];
      T_* st = st0 + k * slab;
      T_* ce = ce0 ? ce0 + k * slab : nullptr;
      T_* ga = ga0 + k * rows * GH;
      for (int64_t ci = 0; ci < chunks; ++ci) {
        const int64_t t0 = ci * C, n = std::min(C, T - t0);
        const T_* in = x0;  // the chunk's input rows: x, or the level below's output (masked, dropped)
        if (k > 0) {
          if (!progress.wait(k - 1, ci + 1)) return;
          T_* rows_in = in0 + (k - 1) * rows * H;
          stack_input_rows<T_>(t0, n, B, H, st0 + (k - 1) * slab, mk, q0 ? q0 + (k - 1) * rows * H : nullptr,
                               rows_in);
          in = rows_in;
        }
        Direction<T_> dir;  // the chunk's steps: every pointer moved to step t0 (its state slot t0 is h_{t0-1})
        dir.steps = n, dir.reverse = false, dir.mask = mk ? mk + t0 * B : nullptr, dir.x = in + t0 * B * sk.X;
        dir.states = st + t0 * B * H, dir.cells = ce ? ce + t0 * B * H : nullptr, dir.gates = ga + t0 * B * GH;
        dir.extra = ex[k] ? ex[k] + t0 * B * H : nullptr;
        with_cell<T_>(sk, [&](auto unit) { run_forward<T_, decltype(unit)>(loops[k], dir); });
        progress.finish(k, ci + 1);
      }
    });
  });
  return {states, cells, gates, reserve};
}

using StackGrads = std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>, Tensor, Tensor, std::vector<Tensor>,
                              std::vector<Tensor>>;

StackGrads recurrent_stack_backward(const Tensor& x, at::TensorList w_ih, at::TensorList w_hh, const Tensor& h0,
                                    const Opt& c0, at::TensorList b, at::TensorList b_hn, const Opt& mask,
                                    const Opt& drop, const Tensor& states, const Tensor& cells, const Tensor& gates,
                                    const Tensor& reserve, const Opt& g_states, const Opt& g_cells, const Opt& g_gates,
                                    c10::string_view cell, int64_t chunk, bool need_x, bool need_weights) {
  const char* fn = "rnnlab::recurrent_stack_backward";
  const int64_t L = static_cast<int64_t>(w_hh.size());
  TORCH_CHECK_VALUE(L >= 1 && h0.dim() == 3 && x.dim() == 3, fn, ": expected x (T, B, X), h0 (L, B, H), one w_hh per level");
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(2);
  expect(fn, "states", states, {L, T + 1, B, H}, x.scalar_type());
  const Tensor m = mask.has_value() ? mask->contiguous() : Tensor();
  const Tensor q = drop.has_value() ? drop->contiguous() : Tensor();
  // level k > 0's input, as the forward computed it (run_stack's torch.where, then the dropout's product)
  std::vector<Tensor> ins;
  for (int64_t k = 1; k < L; ++k) {
    Tensor in = states[k - 1].narrow(0, 1, T);
    if (m.defined()) in = at::where((m != 0).unsqueeze(2), in, at::zeros({}, in.options()));
    if (q.defined()) in = in * q[k - 1];
    ins.push_back(in.contiguous());
  }
  const Tensor inputs = L > 1 ? at::stack(ins) : x.new_empty({0, T, B, H});
  const StackCheck c = check_stack(fn, x, w_ih, w_hh, h0, c0, b, b_hn, mask, drop, cell, inputs);
  const Shape& s = c.shapes[0];
  const bool lstm = s.kind == Kind::LSTM;
  const int64_t GX = s.GX, GH = s.GH;
  expect(fn, "cells", cells, lstm ? c10::IntArrayRef{L, T + 1, B, H} : c10::IntArrayRef{0}, s.dtype);
  expect(fn, "gates", gates, {L, T, B, GH}, s.dtype);
  expect(fn, "reserve", reserve, {L, reserve_size(s)}, s.dtype);
  const int64_t C = stack_chunk(chunk, T, B), chunks = (T + C - 1) / C;
  const Tensor states_c = states.contiguous(), cells_c = cells.contiguous(), gates_c = gates.contiguous();
  const Tensor reserve_c = reserve.contiguous();
  // the working copies of the states' and cells' gradients: the levels above add into them, the chunks carry
  // ∂h and ∂C at their first step through them
  Tensor gs = g_states.has_value() ? (expect(fn, "g_states", *g_states, {L, T + 1, B, H}, s.dtype), g_states->clone(at::MemoryFormat::Contiguous))
                                   : at::zeros({L, T + 1, B, H}, x.options());
  Tensor gc;
  if (lstm)
    gc = g_cells.has_value() ? (expect(fn, "g_cells", *g_cells, {L, T + 1, B, H}, s.dtype), g_cells->clone(at::MemoryFormat::Contiguous))
                             : at::zeros({L, T + 1, B, H}, x.options());
  Tensor gg;
  if (g_gates.has_value()) expect(fn, "g_gates", *g_gates, {L, T, B, GH}, s.dtype), gg = g_gates->contiguous();
  Tensor da = pooled_empty({L, T, B, GX}, x.options());
  Tensor dhn = s.kind == Kind::GRU_AFTER ? pooled_empty({L, T, B, H}, x.options()) : Tensor();
  Tensor dh0 = x.new_empty({L, B, H});
  Tensor dc0 = lstm ? x.new_empty({L, B, H}) : x.new_empty({0});
  Tensor dx = need_x ? pooled_empty({T, B, s.X}, x.options()) : x.new_empty({0});
  Progress progress(L);
  AT_DISPATCH_FLOATING_TYPES(s.dtype, "rnnlab::recurrent_stack_backward", [&] {
    using T_ = scalar_t;
    // every level's loop and pointers, made here: the threads below touch raw memory and BLAS only
    std::vector<std::vector<T_>> zeros(L);
    std::vector<Loop<T_>> loops;
    std::vector<T_*> exs(L);
    for (int64_t k = 0; k < L; ++k) {
      const Reserve res(c.shapes[k], reserve_c[k]);
      loops.push_back(make_loop<T_>(c.shapes[k], c.recs[k], res, Tensor(), Tensor(), zeros[k], Tensor()));
      exs[k] = mut<T_>(res.get("extra"));
    }
    const int64_t slab = (T + 1) * B * H, rows = T * B;  // one level's states; one level's time rows
    T_* st0 = states_c.data_ptr<T_>();
    T_* ce0 = lstm ? cells_c.data_ptr<T_>() : nullptr;
    T_* ga0 = gates_c.data_ptr<T_>();
    T_* gs0 = gs.data_ptr<T_>();
    T_* gc0 = lstm ? gc.data_ptr<T_>() : nullptr;
    const T_* gg0 = gg.defined() ? gg.data_ptr<T_>() : nullptr;
    T_* da0 = da.data_ptr<T_>();
    T_* dhn0 = dhn.defined() ? dhn.data_ptr<T_>() : nullptr;
    T_* dh00 = dh0.data_ptr<T_>();
    T_* dc00 = lstm ? dc0.data_ptr<T_>() : nullptr;
    const T_* q0 = ptr<T_>(q);
    const T_* mk = ptr<T_>(m);
    each_level(L, progress, false, [&](int64_t k) {
      const Shape& sk = c.shapes[k];
      const Record& r = c.recs[k];
      Loop<T_>& loop = loops[k];
      T_* st = st0 + k * slab;
      T_* ce = ce0 ? ce0 + k * slab : nullptr;
      T_* ga = ga0 + k * rows * GH;
      T_* ex = exs[k];
      T_* g_st = gs0 + k * slab;
      T_* g_ce = gc0 ? gc0 + k * slab : nullptr;
      const T_* g_ga = gg0 ? gg0 + k * rows * GH : nullptr;
      T_* d_a = da0 + k * rows * GX;
      T_* d_hn = dhn0 ? dhn0 + k * rows * H : nullptr;
      T_* dh0k = dh00 + k * B * H;
      T_* dc0k = dc00 ? dc00 + k * B * H : nullptr;
      std::vector<T_> dx_rows(k > 0 ? C * B * H : 0);
      for (int64_t ci = chunks - 1; ci >= 0; --ci) {
        const int64_t t0 = ci * C, n = std::min(C, T - t0);
        // the level above has added its input gradient down to time t0 - 1 (its chunks ci and ci - 1)
        if (k < L - 1 && !progress.wait(k + 1, std::min(chunks, chunks - ci + 1))) return;
        Direction<T_> dir;
        dir.steps = n, dir.reverse = false, dir.mask = mk ? mk + t0 * B : nullptr;
        dir.states = st + t0 * B * H, dir.cells = ce ? ce + t0 * B * H : nullptr, dir.gates = ga + t0 * B * GH;
        dir.extra = ex ? ex + t0 * B * H : nullptr;
        dir.g_states = g_st + t0 * B * H, dir.g_cells = g_ce ? g_ce + t0 * B * H : nullptr;
        dir.g_gates = g_ga ? g_ga + t0 * B * GH : nullptr;
        dir.da = d_a + t0 * B * GX, dir.dhn = d_hn ? d_hn + t0 * B * H : nullptr;
        // ∂h, ∂C at the chunk's first step: the next chunk's start (slot t0, read by this chunk's first step
        // already), or the level's own ∂h_0, ∂C_0 for the first chunk
        dir.dh0 = ci > 0 ? g_st + t0 * B * H : dh0k;
        dir.dc0 = lstm ? (ci > 0 ? g_ce + t0 * B * H : dc0k) : nullptr;
        with_cell<T_>(sk, [&](auto unit) { run_backward<T_, decltype(unit)>(loop, dir); });
        if (k == 0 && need_x)  // ∂x rows = ∂a rows · W_ih
          gemm<T_>(n * B, sk.X, GX, d_a + t0 * B * GX, GX, r.w_ih.data_ptr<T_>(), sk.X, T_(0),
                   dx.data_ptr<T_>() + t0 * B * sk.X, sk.X);
        if (k > 0) {  // this chunk's input gradient, into the level below's states' gradient at slots t + 1
          gemm<T_>(n * B, H, GX, d_a + t0 * B * GX, GX, r.w_ih.data_ptr<T_>(), H, T_(0), dx_rows.data(), H);
          T_* below = gs0 + (k - 1) * slab;
          const T_* qk = q0 ? q0 + (k - 1) * rows * H : nullptr;
          for (int64_t t = t0; t < t0 + n; ++t) {
            for (int64_t row = 0; row < B; ++row) {
              const bool live = !mk || mk[t * B + row] != T_(0);
              const T_* d = dx_rows.data() + ((t - t0) * B + row) * H;
              T_* o = below + ((t + 1) * B + row) * H;
              const T_* qq = qk ? qk + (t * B + row) * H : nullptr;
              if (!live) {
                for (int64_t j = 0; j < H; ++j) o[j] += T_(0);
              } else if (qq) {
                for (int64_t j = 0; j < H; ++j) o[j] += d[j] * qq[j];
              } else {
                for (int64_t j = 0; j < H; ++j) o[j] += d[j];
              }
            }
          }
        }
        progress.finish(k, chunks - ci);
      }
    });
  });
  // after the loops: each level's weight gradients, as recurrent_level_backward computes them
  std::vector<Tensor> dw_ih, dw_hh, db, db_hn;
  for (int64_t k = 0; k < L; ++k) {
    const Shape& sk = c.shapes[k];
    const Reserve res(sk, reserve_c[k]);
    const Tensor da2 = da[k].view({T * B, GX});
    if (!need_weights) continue;
    const Tensor xk = k == 0 ? x.contiguous().view({T * B, s.X}) : inputs[k - 1].view({T * B, H});
    const Tensor h_prev = states_c[k].narrow(0, 0, T).reshape({T * B, H});
    if (s.kind == Kind::GRU_BEFORE) {
      const Tensor extra = res.get("extra").reshape({T * B, H});
      dw_hh.push_back(at::cat({at::mm(da2.narrow(1, 0, 2 * H).t(), h_prev), at::mm(da2.narrow(1, 2 * H, H).t(), extra)}));
    } else if (s.kind == Kind::GRU_AFTER) {
      dw_hh.push_back(at::cat({at::mm(da2.narrow(1, 0, 2 * H).t(), h_prev), at::mm(dhn[k].view({T * B, H}).t(), h_prev)}));
    } else {
      dw_hh.push_back(at::mm(da2.t(), h_prev));
    }
    dw_ih.push_back(at::mm(da2.t(), xk));
    if (sk.bias) db.push_back(column_sums(da2));
    if (sk.bias_hn) db_hn.push_back(column_sums(dhn[k].view({T * B, H})));
  }
  return {dx, dw_ih, dw_hh, dh0, dc0, db, db_hn};
}
