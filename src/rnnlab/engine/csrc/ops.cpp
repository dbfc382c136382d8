// The engine's operators, registered with torch.library (schemas at the bottom):
//
//   rnnlab::recurrent_level            one level of a stack, D = 1 or 2 directions over the same x
//   rnnlab::recurrent_level_backward   its hand-written BPTT
//   rnnlab::linear_recurrence          h_t = a_t h_{t-1} + b_t (minGRU, minLSTM)
//   rnnlab::linear_recurrence_backward
//
// Each argument is a named field whose leading dimension is the direction (D = 1 or 2; direction 1 is the
// reverse one), or None where the field is absent (a variant off, no bias). Per direction, the structure of
// cuDNN, oneDNN and haste:
//
//   forward   xp = x · W_ihᵀ                       GEMMs over all T·B rows (a chunk of steps at a time; LN(x W_ihᵀ) + b
//                                                 at once with layer norm)
//             the driver's loop (driver.h) over the cell's unit (cells/*.h), which adds b in its pointwise pass
//   backward  the driver's backward loop: ∂a (T, B, gx), ∂h_0, ∂C_0
//             ∂W_ih = ∂aᵀ · x,  ∂x = ∂a · W_ih,  ∂b = Σ ∂a,  ∂W_hh = ∂hhᵀ · h_{t-1}   each one GEMM over T·B rows
//
// An LSTM with a projection (proj_size P, ``w_hr`` (D, P, H)) carries h_t = W_hr (o_t tanh(C_t)): states, h0,
// W_hh's columns and ∂h are P wide; ∂W_hr = Σ_t ∂h_tᵀ m_t is one more GEMM over T·B rows.
//
// The outputs hold the directions first: states (D, T+1, B, P = H without a projection), cells (D, T+1, B, H) (LSTM), gates
// (D, T, B, G·H), c_pre (D, T, B, H) (LSTM with zoneout: C_t before zoneout) and reserve (D, ·): what backward
// needs beyond the outputs, one flat buffer per direction whose blocks ``reserve_layout`` lists (engine/ops.py's
// fake implementation sizes it the same way).
// The two directions of a bidirectional level are independent chains: on two or more threads their
// loops run at once, each loop's GEMMs on one BLAS thread.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cells/gru.h"
#include "cells/linear.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "driver.h"
#include "pool.h"
#include "split.h"
#include "transpose.h"

namespace rnnlab {
namespace {

using at::Tensor;

enum class Kind { RNN_TANH, RNN_RELU, LSTM, GRU_BEFORE, GRU_AFTER };

Kind kind_of(c10::string_view cell) {
  if (cell == "rnn_tanh") return Kind::RNN_TANH;
  if (cell == "rnn_relu") return Kind::RNN_RELU;
  if (cell == "lstm") return Kind::LSTM;
  if (cell == "gru_before") return Kind::GRU_BEFORE;
  if (cell == "gru_after") return Kind::GRU_AFTER;
  TORCH_CHECK_VALUE(false, "rnnlab::recurrent_level: cell: expected one of 'rnn_tanh', 'rnn_relu', 'lstm', ",
                    "'gru_before', 'gru_after', got '", std::string(cell), "'");
}

bool is_gru(Kind k) { return k == Kind::GRU_BEFORE || k == Kind::GRU_AFTER; }
int64_t stored_gates(Kind k) { return k == Kind::LSTM ? 4 : is_gru(k) ? 3 : 1; }
int64_t input_gates(Kind k, bool coupled) { return k == Kind::LSTM ? (coupled ? 3 : 4) : stored_gates(k); }

// one direction's named tensors (undefined where the field is absent)
struct Record {
  Tensor w_ih, w_hh, h0, c0, b, b_hn, peep, h_mask, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, zone, w_hr;
};

// the whole call's shape and variants
struct Shape {
  Kind kind;
  bool coupled;
  int64_t D, T, B, X, H, GX, GH;
  int64_t P;  // the carried h's width: H, or the projection's P
  bool peep, drop, zone, ln_hh, ln_ih, bias, bias_hn, proj;
  at::ScalarType dtype;
  int64_t first() const { return kind == Kind::GRU_BEFORE ? 2 * H : GX; }
  int64_t rec() const { return kind == Kind::LSTM ? GX : GH; }  // W_hh's rows (the coupled LSTM's 3H)
};

// the reserve's blocks per direction, each (T, B, width), in order
std::vector<std::pair<const char*, int64_t>> reserve_layout(const Shape& s) {
  std::vector<std::pair<const char*, int64_t>> out;
  if (is_gru(s.kind)) out.push_back({"extra", s.H});  // r·h (before) or W_hn h + b_hn (after)
  if (s.proj) out.push_back({"m", s.H});              // m_t = o_t tanh(C_t), before the projection
  if (s.ln_hh) {
    out.push_back({"uhat", s.first()});
    out.push_back({"urstd", 1});
    if (s.kind == Kind::GRU_BEFORE) out.push_back({"nhat", s.H}), out.push_back({"nrstd", 1});
    if (s.kind == Kind::LSTM) out.push_back({"chat", s.H}), out.push_back({"crstd", 1});
  }
  if (s.ln_ih) out.push_back({"raw", s.GX}), out.push_back({"ih_mean", 1}), out.push_back({"ih_rstd", 1});
  return out;
}

// the named blocks of one direction's reserve, as (T, B, width) views
struct Reserve {
  std::vector<std::pair<const char*, Tensor>> blocks;
  Reserve(const Shape& s, const Tensor& flat) {
    int64_t at = 0;
    for (const auto& [name, width] : reserve_layout(s)) {
      blocks.push_back({name, flat.narrow(0, at, s.T * s.B * width).view({s.T, s.B, width})});
      at += s.T * s.B * width;
    }
  }
  Tensor get(const char* name) const {
    for (const auto& [n, t] : blocks)
      if (std::string(n) == name) return t;
    return Tensor();
  }
};

int64_t reserve_size(const Shape& s) {
  int64_t k = 0;
  for (const auto& entry : reserve_layout(s)) k += entry.second;
  return s.T * s.B * k;
}

// ---------------------------------------------------------------------------------------------
// argument checks: every tensor's shape, dtype, device before the loops touch memory, so a direct
// call with bad tensors raises ValueError/TypeError instead of reading or writing out of bounds
// ---------------------------------------------------------------------------------------------

void expect(const char* fn, const std::string& name, const Tensor& t, c10::IntArrayRef shape, at::ScalarType dtype) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, fn, ": ", name, ": expected dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), fn, ": ", name, ": expected a CPU tensor, got one on ", t.device());
  TORCH_CHECK_VALUE(t.sizes().equals(shape), fn, ": ", name, ": expected shape ", shape, ", got ", t.sizes());
}

using Opt = c10::optional<Tensor>;

// an optional field: absent, or present where ``want`` says it must be (else refused by name)
bool present(const char* fn, const char* name, const Opt& t, bool allowed, const char* why) {
  if (!t.has_value()) return false;
  TORCH_CHECK_VALUE(allowed, fn, ": ", name, ": expected None ", why, ", got a tensor of shape ", t->sizes());
  return true;
}

// check the level's inputs and gather them into per-direction records (each field's direction d: its row d)
Shape check_level(const char* fn, const Tensor& x, const Opt& mask, const Tensor& w_ih, const Tensor& w_hh,
                  const Tensor& h0, const Opt& c0, const Opt& b, const Opt& b_hn, const Opt& peep, const Opt& h_mask,
                  const Opt& ln_ih_w, const Opt& ln_ih_b, const Opt& ln_hh_w, const Opt& ln_hh_b, const Opt& ln_c_w,
                  const Opt& ln_c_b, const Opt& zone, const Opt& w_hr, c10::string_view cell, bool coupled,
                  std::vector<Record>* recs) {
  Shape s{};
  s.kind = kind_of(cell);
  s.coupled = coupled;
  TORCH_CHECK_VALUE(!coupled || s.kind == Kind::LSTM, fn, ": coupled: expected False for cell '", std::string(cell),
                    "' (only the LSTM couples its gates)");
  TORCH_CHECK_VALUE(x.dim() == 3, fn, ": x: expected a 3-D tensor (T, B, X), got shape ", x.sizes());
  s.dtype = x.scalar_type();
  TORCH_CHECK_TYPE(s.dtype == at::kFloat || s.dtype == at::kDouble, fn, ": x: expected float32 or float64, got ",
                   s.dtype,
                   s.dtype == at::kBFloat16 ? " (for bf16 GEMMs pass float32 tensors with bf16=True, or call under "
                                              "torch.autocast(\"cpu\", dtype=torch.bfloat16))"
                                            : "");
  TORCH_CHECK_VALUE(x.device().is_cpu(), fn, ": x: expected a CPU tensor, got one on ", x.device());
  TORCH_CHECK_VALUE(w_hh.dim() == 3 && (w_hh.size(0) == 1 || w_hh.size(0) == 2), fn,
                    ": w_hh: expected a 3-D tensor (D, G*H, H) with D = 1 or 2 directions, got shape ", w_hh.sizes());
  s.D = w_hh.size(0);
  s.T = x.size(0), s.B = x.size(1), s.X = x.size(2), s.P = w_hh.size(2);
  s.proj = present(fn, "w_hr", w_hr, s.kind == Kind::LSTM, "(only the LSTM has a projection)");
  if (s.proj) {
    TORCH_CHECK_VALUE(w_hr->dim() == 3 && w_hr->size(0) == s.D && w_hr->size(1) == s.P && w_hr->size(2) >= 1, fn,
                      ": w_hr: expected a 3-D tensor (D, P, H) with D = ", s.D, " and P = ", s.P,
                      " (w_hh's columns), got shape ", w_hr->sizes());
    TORCH_CHECK_VALUE(!coupled && !peep.has_value() && !h_mask.has_value() && !zone.has_value() && !ln_hh_w.has_value(),
                      fn, ": w_hr: expected None with coupled, peep, h_mask, zone or layer norm (the projection ",
                      "runs on the plain LSTM), got both");
  }
  s.H = s.proj ? w_hr->size(2) : s.P;
  TORCH_CHECK_VALUE(s.P >= 1, fn, ": w_hh: expected H >= 1 columns, got shape ", w_hh.sizes());
  s.GX = input_gates(s.kind, coupled) * s.H;
  s.GH = stored_gates(s.kind) * s.H;
  const bool lstm = s.kind == Kind::LSTM, gated = lstm || is_gru(s.kind);
  const int64_t D = s.D, S = lstm ? 2 : 1, R = s.rec();
  expect(fn, "w_ih", w_ih, {D, s.GX, s.X}, s.dtype);
  expect(fn, "w_hh", w_hh, {D, R, s.P}, s.dtype);
  expect(fn, "h0", h0, {D, s.B, s.P}, s.dtype);
  if (s.proj) expect(fn, "w_hr", *w_hr, {D, s.P, s.H}, s.dtype);
  TORCH_CHECK_VALUE(c0.has_value() == lstm, fn, ": c0: expected ", lstm ? "a tensor (D, B, H)" : "None",
                    " for cell '", std::string(cell), "', got ", c0.has_value() ? "a tensor" : "None");
  if (lstm) expect(fn, "c0", *c0, {D, s.B, s.H}, s.dtype);
  s.bias = present(fn, "b", b, true, "");
  s.bias_hn = present(fn, "b_hn", b_hn, s.kind == Kind::GRU_AFTER, "(only the GRU with reset after has b_hn)");
  s.peep = present(fn, "peep", peep, lstm, "(only the LSTM has peepholes)");
  s.drop = present(fn, "h_mask", h_mask, true, "");
  s.zone = present(fn, "zone", zone, true, "");
  s.ln_hh = present(fn, "ln_hh_w", ln_hh_w, gated, "(layer norm: the LSTM and the GRU)");
  TORCH_CHECK_VALUE(ln_hh_b.has_value() == s.ln_hh, fn, ": ln_hh_b: expected it given exactly when ln_hh_w is");
  s.ln_ih = present(fn, "ln_ih_w", ln_ih_w, s.ln_hh, "without ln_hh_w");
  TORCH_CHECK_VALUE(ln_ih_b.has_value() == s.ln_ih, fn, ": ln_ih_b: expected it given exactly when ln_ih_w is");
  TORCH_CHECK_VALUE(ln_c_w.has_value() == (s.ln_hh && lstm) && ln_c_b.has_value() == (s.ln_hh && lstm), fn,
                    ": ln_c_w, ln_c_b: expected them given exactly for an LSTM with layer norm");
  if (mask.has_value()) expect(fn, "mask", *mask, {s.T, s.B}, s.dtype);
  if (s.bias) expect(fn, "b", *b, {D, s.GX}, s.dtype);
  if (s.bias_hn) expect(fn, "b_hn", *b_hn, {D, s.H}, s.dtype);
  if (s.peep) expect(fn, "peep", *peep, {D, (coupled ? 2 : 3) * s.H}, s.dtype);
  if (s.drop) expect(fn, "h_mask", *h_mask, {D, s.B, s.H}, s.dtype);
  if (s.zone) expect(fn, "zone", *zone, {D, s.T, S, s.B, s.H}, s.dtype);
  if (s.ln_hh) expect(fn, "ln_hh_w", *ln_hh_w, {D, R}, s.dtype), expect(fn, "ln_hh_b", *ln_hh_b, {D, R}, s.dtype);
  if (s.ln_ih) expect(fn, "ln_ih_w", *ln_ih_w, {D, s.GX}, s.dtype), expect(fn, "ln_ih_b", *ln_ih_b, {D, s.GX}, s.dtype);
  if (s.ln_hh && lstm) expect(fn, "ln_c_w", *ln_c_w, {D, s.H}, s.dtype), expect(fn, "ln_c_b", *ln_c_b, {D, s.H}, s.dtype);
  auto row = [](const Opt& t, int64_t d) { return t.has_value() ? (*t)[d].contiguous() : Tensor(); };
  for (int64_t d = 0; d < D; ++d) {
    Record r;
    r.w_ih = w_ih[d].contiguous(), r.w_hh = w_hh[d].contiguous(), r.h0 = h0[d].contiguous(), r.c0 = row(c0, d);
    r.b = row(b, d), r.b_hn = row(b_hn, d), r.peep = row(peep, d), r.h_mask = row(h_mask, d), r.zone = row(zone, d);
    r.ln_ih_w = row(ln_ih_w, d), r.ln_ih_b = row(ln_ih_b, d), r.ln_hh_w = row(ln_hh_w, d);
    r.ln_hh_b = row(ln_hh_b, d), r.ln_c_w = row(ln_c_w, d), r.ln_c_b = row(ln_c_b, d), r.w_hr = row(w_hr, d);
    recs->push_back(std::move(r));
  }
  return s;
}

template <typename T>
const T* ptr(const Tensor& t) {
  return t.defined() && t.numel() ? t.data_ptr<T>() : nullptr;
}
template <typename T>
T* mut(const Tensor& t) {
  return t.defined() && t.numel() ? const_cast<Tensor&>(t).data_ptr<T>() : nullptr;
}

// The BLAS threads of a loop's per-step GEMMs (B rows against W_hh, rec × P): all of them when the GEMM has at
// least 2^20 multiply-adds, or when W_hh has at least 2^18 numbers (1 MB in float32) — then a small batch's
// GEMM is bound by reading W_hh, and two threads each keep their half in their own core's cache (measured,
// GRU inference at B = 1, H = 512: 10.3 → 6.0 ms). Else one: waking a second thread for a few-µs GEMM costs
// more than it saves, and far more on a busy machine.
int64_t step_threads(int64_t B, int64_t rec, int64_t P) {
  const bool large = B * rec * P >= (int64_t(1) << 20) || rec * P >= (int64_t(1) << 18);
  return large ? at::get_num_threads() : 1;
}

// ---------------------------------------------------------------------------------------------
// bf16 mode (under torch.autocast("cpu", dtype=torch.bfloat16); the schemas' ``bf16`` flag asks for it)
//
// Every GEMM takes bf16 operands and accumulates in float32: the input projection x·W_ihᵀ, the per-step
// h_in·W_hhᵀ (W_hh rounded once per call, h_in per step), the backward per-step ∂·W_hh, and the gradient
// GEMMs ∂x, ∂W_ih, ∂W_hh. Everything else stays float32: the pointwise maths, the carried state h and the
// LSTM's C, the saved gates, layer norm, the outputs. The per-step products run through brgemm.h on W_hh packed once
// per call where the CPU has it (else MKL's bf16 GEMM); a loop split by unit in inference (split_units) has each part
// round and pack its own rows (split.h's own_bf16_forward and _backward).
//
// Accuracy. Rounding a float32 to bf16 (8 significant bits, round to nearest) has relative error at most
// u = 2^-9. A product of two rounded operands summed in float32 over K terms is
//   Σ a_k(1+α_k) b_k(1+β_k) = Σ a_k b_k + E,  |E| ≤ (2u + u²) Σ|a_k b_k|  (+ float32's K·2^-24 Σ|a_k b_k|),
// so each GEMM's output error is elementwise ≤ ~2u Σ_k|a_k b_k| = 2^-8 |A||B|, and in Frobenius norm
// ‖E‖ ≤ 2u ‖ |A| ‖ ‖ |B| ‖. For the inputs seen here (weights ~U(-1/√H, 1/√H), states |h| ≤ 1, no strong
// cancellation) Σ|ab| is within a small factor of |Σab|, so every GEMM output carries ~2^-8 relative
// error. The pointwise maths is 1-Lipschitz per gate (σ' ≤ 1/4, tanh' ≤ 1), and a contractive recurrence
// (‖∂h_t/∂h_{t-1}‖ ≤ ρ < 1; the tests halve W_hh to make sure of it) sums per-step errors to at most
// 1/(1-ρ) times one step's; so outputs, h_n and parameter gradients stay within a
// relative Frobenius error of a few 2^-8 ≈ 0.4% of the float32 reference (measured: 0.3–1%):
// tests/engine/test_bf16.py asserts ≤ 2^-5 (3%) for every cell and variant, which is this bound with room
// for the conditioning factor. Two exceptions, both properties of the function rather than of bf16: an
// expansive recurrence (say layer norm's default gains of 1 over 50 steps) amplifies any rounding, float32's
// included, and no bound holds there; and the ReLU RNN's gradients are not Lipschitz in the pre-activations
// (a unit within rounding of 0 flips its whole gradient), so they move by as much as the float32 function's
// own do when only its weights and x are rounded to bf16 (~6%), which is what the test bounds them by.
// ---------------------------------------------------------------------------------------------

// which kernel the bf16 mode runs on this machine, or why it runs in float32 (bf16_kernel() in Python)
const std::string& bf16_hardware() {
  static const std::string kernel = [] {
    if (!have_gemm_bf16()) return std::string("float32 (no bf16 GEMM in this BLAS)");
    const auto caps = at::cpu::get_cpu_capabilities();
    auto has = [&](const char* name) {
      const auto it = caps.find(name);
      return it != caps.end() && it->second.isBool() && it->second.toBool();
    };
    // the per-step conversions use AVX-512-BF16; without it MKL's bf16 GEMM is emulated and slower than float32
    if (!has("avx512_bf16")) return std::string("float32 (no bf16 GEMM on this CPU)");
    if (has("amx_bf16") && has("amx_tile") && at::cpu::init_amx()) return std::string("mkl-bf16 (amx)");
    return std::string("mkl-bf16 (avx512-bf16)");
  }();
  return kernel;
}

bool bf16_hardware_ok() { return bf16_hardware().rfind("mkl-bf16", 0) == 0; }

// RNNLAB_BF16=0 forces the float32 path (tests use it to check the fallback); RNNLAB_BF16=1 runs the bf16 mode on a CPU
// with AVX-512-BF16 but no AMX, where it is off by default (tests use it there to check the mode itself)
bool bf16_env(const char* value) {
  const char* v = std::getenv("RNNLAB_BF16");
  return v != nullptr && std::string(v) == value;
}
bool bf16_disabled() { return bf16_env("0"); }

// Without AMX the bf16 mode runs where brgemm.h's packed products do (AVX-512-BF16: the per-step products and the input
// projection on W packed once a call), else only when asked for. On the AMD EPYC host (AVX-512-BF16, no AMX) with MKL's
// bf16 GEMM for those products the mode cost about what it saved: the per-step GEMMs ran 0.90-1.27x float32's time
// (B = 32-128, H = 128-512) and the nine training steps under autocast that ran the mode took 0.93-1.57x rnnlab's
// float32 step (BENCHMARKS.md, the AMD run of 2026-12-02). On brgemm's products (one thread 218-233 GFLOP/s, MKL's bf16
// GEMM 69-90) the autocast training step took 0.78-0.95x the float32 step at (100, 64, 256, 256) and (50, 128, 256,
// 512), 0.93-1.04x at (100, 32, 64, 128), and with the GEMMs over T·B rows on them too (mm16_packed) 0.58-0.71x at
// (50, 128, 256, 512) (BENCHMARKS.md, 2026-12-04). RNNLAB_BRGEMM=0 (MKL's bf16 GEMM) turns it back off there.
std::string bf16_kernel() {
  const std::string& hw = bf16_hardware();
  if (!bf16_hardware_ok()) return hw;
  if (bf16_disabled()) return "float32 (RNNLAB_BF16=0)";
  if (hw == "mkl-bf16 (avx512-bf16)" && !bf16_env("1") && !PackedBf16::available())
    return "float32 (no AMX; RNNLAB_BF16=1 runs the bf16 mode)";
  return hw;
}
bool bf16_on() { return bf16_kernel().rfind("mkl-bf16", 0) == 0; }

// The threshold rule, in one place: a call runs its bf16 mode when asked, on float32 tensors, where the
// hardware has it, and where its per-step recurrent GEMM has at least BF16_MIN_STEP_MACS multiply-adds
// (B · rec · P, rec and P = H the rows and columns of W_hh); else it runs float32 throughout. Measured (T = 100, one thread,
// forward and backward operator calls, min of 10, on a shared 2-core AMX machine): at B·rec·H ≤ 2^16
// (LSTM B = 8, H = 32; RNN B = 16, H = 64) the bf16 mode is 0–60% slower — the per-step GEMM is a few µs,
// and rounding h to bf16 plus MKL's bf16 call overhead cost more than AMX saves; around 2^17 (LSTM B = 32,
// H = 32; RNN B = 32, H = 64) it breaks even to 1.2× faster; from 2^19 (LSTM B = 32, H = 64) it is 1.3–3×
// faster, the backward most.
constexpr int64_t BF16_MIN_STEP_MACS = int64_t(1) << 17;

bool use_bf16(const Shape& s, bool requested) {
  if (!requested || s.dtype != at::kFloat || !bf16_on()) return false;
  return s.B * s.rec() * s.P >= BF16_MIN_STEP_MACS;  // W_hh is (rec, P): P = H but for the LSTM's projection
}

Tensor to16(const Tensor& t) { return t.to(at::kBFloat16).contiguous(); }

// The GEMMs over T·B rows (the weights' gradients, ∂x, a whole input projection) on brgemm.h's packed bf16 products
// where this CPU has them without AMX (AVX-512-BF16: rnnlab packs the pairs itself; RNNLAB_BRGEMM=0 turns it off), from
// 2^22 multiply-adds: there MKL's bf16 GEMM runs its generic path, no faster than its SGEMM (the AMD EPYC host). The
// right operand is packed once (the weights' gradients, ∂aᵀ · v, run as (vᵀ · ∂a)ᵀ: ∂a packed, vᵀ a copy), its depth
// even. With AMX MKL's bf16 GEMM runs AMX and stays. Returns whether it ran.
bool mm16_packed(const Tensor& a, bool ta, const Tensor& b, bool tb, float beta, Tensor& out) {
  const int64_t M = ta ? a.size(1) : a.size(0), K = ta ? a.size(0) : a.size(1), N = tb ? b.size(0) : b.size(1);
  if (!PackedBf16::available() || PackedBf16::aten_packs() || M * N * K < (int64_t(1) << 22) || K % 2 != 0 ||
      (beta != 0.0f && beta != 1.0f) || at::in_parallel_region())
    return false;
  const int64_t threads = at::get_num_threads();
  auto bf = [](const Tensor& t) { return reinterpret_cast<const bf16_t*>(t.data_ptr()); };
  if (ta && !tb) {  // out (M, N) = aᵀ b, a (K, M), b (K, N): outᵀ = bᵀ a, a packed (K rows in pairs)
    const Tensor bt = b.t().contiguous();  // (N, K)
    const PackedBf16 packed(K, M, bf(a), a.stride(0));
    Tensor outT = at::empty({N, M}, out.options());
    packed.product(N, bf(bt), K, 0, K, 0, M, false, outT.data_ptr<float>(), M, threads, false);
    if (beta == 0.0f)
      out.copy_(outT.t());
    else
      out.add_(outT.t());
    return true;
  }
  if (!ta) {  // out (M, N) = a op(b), a (M, K): op(b) (K, N) packed
    const Tensor bk = tb ? b.t().contiguous() : b;  // (K, N) with unit column stride
    const PackedBf16 packed(K, N, bf(bk), bk.stride(0));
    packed.product(M, bf(a), a.stride(0), 0, K, 0, N, beta == 1.0f, out.data_ptr<float>(), N, threads, false);
    return true;
  }
  return false;
}

// row-major out (M, N) = op(a) · op(b) + beta · out, for 2-D bf16 a, b with unit column stride (a narrow of
// a wider matrix is fine) and a contiguous float32 out: op(a) is a (M, K) or aᵀ when ta, op(b) likewise
void mm16(const Tensor& a, bool ta, const Tensor& b, bool tb, float beta, Tensor& out) {
  const int64_t M = ta ? a.size(1) : a.size(0), K = ta ? a.size(0) : a.size(1), N = tb ? b.size(0) : b.size(1);
  TORCH_CHECK(a.stride(1) == 1 && b.stride(1) == 1 && out.is_contiguous() && out.size(0) == M &&
                  out.size(1) == N && (tb ? b.size(1) : b.size(0)) == K,
              "rnnlab: mm16: internal shape error");
  if (M == 0 || N == 0) return;
  if (K == 0) {
    out.mul_(beta);
    return;
  }
  if (mm16_packed(a, ta, b, tb, beta, out)) return;
  gemm_bf16(ta, tb, M, N, K, reinterpret_cast<const bf16_t*>(a.data_ptr()), a.stride(0),
            reinterpret_cast<const bf16_t*>(b.data_ptr()), b.stride(0), beta, out.data_ptr<float>(), N);
}

// a new float32 (M, N) = op(a) · op(b)
Tensor mm16(const Tensor& a, bool ta, const Tensor& b, bool tb) {
  Tensor out = at::empty({ta ? a.size(1) : a.size(0), tb ? b.size(0) : b.size(1)}, a.options().dtype(at::kFloat));
  mm16(a, ta, b, tb, 0.0f, out);
  return out;
}

// run job(d) for each direction: at once on two threads of OpenMP's team (threads.h's run_jobs; each loop's GEMMs on
// one BLAS thread) when there are two directions and two or more threads, else one after the other; ``in_turn``: one
// after the other even then (each direction's loop split by unit over the threads, split_units)
template <typename Job>
void each_direction(const Shape& s, Job job, bool in_turn = false) {
  if (s.D == 2 && !in_turn && at::get_num_threads() >= 2 && run_jobs(2, job, [] {})) return;
  BlasThreads guard(step_threads(s.B, s.rec(), s.P));  // one direction, one torch thread, or no pair of threads
  for (int64_t d = 0; d < s.D; ++d) job(d);
}

// The threads of a one-direction loop's pointwise passes (Loop::rows, through ATen's parallel_for on OpenMP's team):
// torch's threads when a step has at least 1024 units (B·H) over 2+ rows (the RNN, whose pass is lightest: 16384),
// else one. Measured on 2 threads, one loop (RNNLAB_SPLIT=0), these threads / one, the mean of two runs each (the
// LSTM's two builds alternated, the others A/B in one process): training, the LSTM 0.84 at (50, 128, 256, 512) and
// 0.90 at (100, 64, 256, 256); the GRU (both forms) 0.86-0.97 from (100, 32, 64, 128) to (50, 128, 256, 512); the
// RNN 0.78-0.90 at (100, 64, 256, 256) and (50, 128, 256, 512); inference, the RNN 0.90 at (50, 128, 256, 512)
// but 1.15-1.18 at B·H = 2048-4096.
// Two directions already run on a thread each.
int64_t pointwise_threads(const Shape& s) {
  const int64_t threads = at::get_num_threads();
  if (s.D == 2 || threads < 2 || s.B < 2) return 1;
  return s.B * s.H >= (s.kind == Kind::RNN_TANH || s.kind == Kind::RNN_RELU ? 16384 : 1024) ? threads : 1;
}

// the cell's unit, its variants as template flags, for a run-time call
template <typename T, class F>
void with_cell(const Shape& s, F f) {
  switch (s.kind) {
    case Kind::RNN_TANH: return f(RNNCell<T, false>());
    case Kind::RNN_RELU: return f(RNNCell<T, true>());
    case Kind::GRU_BEFORE: return f(GRUCell<T, false>());
    case Kind::GRU_AFTER: return f(GRUCell<T, true>());
    case Kind::LSTM: {
      const int flags = (s.coupled ? 4 : 0) + (s.peep ? 2 : 0) + (s.ln_hh ? 1 : 0);
      switch (flags) {
        case 0: return f(LSTMCell<T, false, false, false>());
        case 1: return f(LSTMCell<T, false, false, true>());
        case 2: return f(LSTMCell<T, false, true, false>());
        case 3: return f(LSTMCell<T, false, true, true>());
        case 4: return f(LSTMCell<T, true, false, false>());
        case 5: return f(LSTMCell<T, true, false, true>());
        case 6: return f(LSTMCell<T, true, true, false>());
        default: return f(LSTMCell<T, true, true, true>());
      }
    }
  }
}

// Loop::dot: one row against a W_hh of 2^18 numbers (1 MB in float32) or more reads W_hh itself, row by row (and
// the forward then makes no W_hhᵀ copy)
bool dot_rows(int64_t B, int64_t w_hh_numbers) { return B == 1 && w_hh_numbers >= (int64_t(1) << 18); }
bool dot_rows(const Shape& s) { return dot_rows(s.B, s.rec() * s.P); }

// Loop::small: the per-step GEMMs of a float32 loop with few rows against a W_hh that stays in cache run
// small_gemm.h's kernel instead of BLAS: one row against W_hh < 2^18 numbers, up to 4 against W_hh <= 2^14.
// Measured on 2 threads, T = 100 inference operator calls, kernel / BLAS in one process (X = H), two runs:
// B = 1 0.77-0.94 for every cell at H = 32, 64, 128; B = 2 and 4 where W_hh <= 2^14 0.79-1.05 (3 of 28 above 1.0,
// and the RNN at H = 128, B = 2, 1.22 in one run and 0.95 in the other); larger W_hh 0.97-1.16; B >= 8
// 0.87-1.28. Training (T = 200, X = 32, H = 32 or 64, B = 1, 2, 4): 0.91-0.96 for every cell.
// RNNLAB_SMALL=0 turns it off (the tests compare the two).
bool small_rows(int64_t B, int64_t w_hh_numbers, at::ScalarType dtype) {
  const char* env = std::getenv("RNNLAB_SMALL");
  if (env && std::string(env) == "0") return false;
  const int64_t w = w_hh_numbers;
  return dtype == at::kFloat && ((B == 1 && w < (int64_t(1) << 18)) || (B <= 4 && w <= (int64_t(1) << 14)));
}
bool small_rows(const Shape& s) { return small_rows(s.B, s.rec() * s.P, s.dtype); }

// split.h: a one-direction loop of a plain RNN, reset-after GRU or LSTM, or in inference the reset-before GRU (no
// variants, no projection, not in bf16 mode)
// on two threads of OpenMP's team, each with half the hidden units, where torch has two or more threads and a step's
// GEMM has enough multiply-adds (B·rec·H). Measured on 2 threads, A/B in one process (split / one loop, the one
// loop's pointwise pass on both threads), T = 50-1000, the ratio of two runs' means:
// - inference: the LSTM 0.74-0.87 from 2^15 ((200, 2, 32, 64), (1000, 8, 16, 32)) to (100, 64, 256, 256); at H = 512
//   (W_hh 2^20 numbers, a part's W_hhᵀ filling a 2 MB L2) 1.04 at (50, 128, 256, 512) in an earlier build, and on the
//   Intel host with the workspace and the two-slot C (min of 12 interleaved calls) 0.84 at B = 4, 0.90 at 8, 0.80 at
//   32 and 0.93 at 128 (T = 50-100, X = 256), so no bound on W_hh; the GRU 0.66-0.93 from 2^14 to
//   (50, 128, 256, 512); the RNN, whose pointwise pass is lightest, 0.78-0.88 from 2^19 (0.93 at 2^18), 1.16-1.27
//   below.
//   At batch 1 (each part running the whole loop's product, Loop::dot or the small-rows kernel): the LSTM and GRU
//   0.88-0.89 at (100, 1, 128, 256), the RNN 0.99 there and 0.95 at H = 512 (W_hh 2^16-2^18 numbers); 0.93-1.47 at
//   H = 64 (the step is too short for a hand-off per step). At H = 512 (W_hh 2^19-2^20 numbers) the LSTM measured 1.08
//   and the GRU 0.99 on an Intel host with BLAS's GEMV in the parts; with small_gemv reading each part's rows in place,
//   on an AMD EPYC host, 0.60-0.65 (LSTM 5.7 → 3.5-3.7 ms, GRU 4.0-4.2 → 2.5-2.6 ms at (50, 1, 256, 512)) against one loop with
//   a one-thread product, 0.75 (LSTM) and 0.80 (seed GRU) against one loop with its product on both threads (min of
//   40 calls), so no upper bound now.
// - training (forward and backward split; each adds a hand-off per step): the GRU 0.88-0.97 from 2^20
//   ((100, 32, 64, 128)) to (50, 128, 256, 512), 1.07-1.5 below; the LSTM 0.85-0.94 at H = 256 (2^23-2^24), but
//   1.06 at (100, 64, 128, 128) and 1.09-1.12 at (50, 128, 256, 512); the RNN 0.94-1.68, so never.
// - inference of the seed's GRU (reset before; its parts meet twice a step, before and after W_hn (r h)), on the AMD
//   EPYC host, min of 40 interleaved calls: 0.89-0.93 from (100, 32, 64, 128) to (50, 128, 256, 512), at batch 1 0.55
//   at (50, 1, 256, 512) and 0.73 at (100, 1, 128, 256); but 1.78 at (200, 4, 32, 64), 0.84-1.21 over three runs at
//   (1000, 8, 16, 32) and 0.90 (within noise) at (200, 1, 32, 64), whose steps are too short for two hand-offs.
// RNNLAB_SPLIT=0 turns it off, RNNLAB_SPLIT=1 runs it wherever it can run (the tests compare the two).
// In the bf16 mode (split / one loop, min and median of interleaved calls, 2 threads, products on packed W_hh):
// inference of the LSTM 0.77 at (100, 16, 128, 256), 0.79-0.85 at (100, 64, 256, 256), 0.86-1.01 at (50, 128, 256,
// 512), the RNN 0.87-0.91 there, the reset-after GRU 0.91-1.03; training 1.02-1.06 at (50, 128, 256, 512). So in
// inference for the LSTM and the RNN from 2^22 multiply-adds a step (each part its own packed bf16 rows: split.h's
// own_bf16_forward), never in training.
bool split_pays(const Shape& s, bool half, bool keep) {
  const int64_t macs = s.B * s.rec() * s.P, w_hh = s.rec() * s.P;
  if (half) {
    const bool rnn = s.kind == Kind::RNN_TANH || s.kind == Kind::RNN_RELU;
    return !keep && (s.kind == Kind::LSTM || rnn) && macs >= (int64_t(1) << 22);
  }
  if (s.B == 1) return !keep && w_hh >= (int64_t(1) << 16);
  if (keep) {  // training
    // where the float32 products run on brgemm's blocks (brgemm.h: one loop's product already split over both threads
    // by blocks), the split's two hand-offs a step cost more than it saves: on the AMD EPYC host, split off / on (min
    // and median of 3 interleaved processes) the LSTM 0.96 / 0.94 at (100, 64, 256, 256) and 0.94 / 0.77 at (100, 32,
    // 256, 256), the reset-after GRU 0.79 / 0.81 at (100, 64, 256, 256), 0.92 / 0.92 at (50, 128, 256, 512) and 0.91 /
    // 0.94 at (100, 8, 128, 256)
    if (s.dtype == at::kFloat && BlockedF32::available()) return false;
    if (s.kind == Kind::GRU_AFTER) return macs >= (int64_t(1) << 20);
    if (s.kind == Kind::LSTM) return macs >= (int64_t(1) << 23) && w_hh < (int64_t(1) << 20);
    return false;
  }
  if (s.kind == Kind::LSTM) return macs >= (int64_t(1) << 15);
  if (s.kind == Kind::GRU_AFTER) return macs >= (int64_t(1) << 14);
  if (s.kind == Kind::GRU_BEFORE) return macs >= (int64_t(1) << 16) && s.B >= 8;  // two hand-offs a step
  return macs >= (int64_t(1) << 19);
}
// Two directions in inference: run_jobs runs them at once, a core each, so each core reads its direction's whole W_hh
// every step; where half of W_hh fills a core's L2 that read comes from L3, and the directions run one after the other
// instead, each split by unit (each core then reads half of each W_hh, which its L2 holds). Float32 bidirectional LSTM
// inference, 2 threads, in turn / at once (min and median of 8 interleaved rounds): 0.77 and 0.72 at (50, 4, 256, 512),
// 0.87 and 0.96 at B = 8, 0.89 and 0.86 at (30, 32, 512, 1024); level within noise at B = 32-128 at H = 512 (0.98-1.13
// and 0.95-1.03). Engine "auto" still runs torch's oneDNN kernel for these from 2 to 127 rows (engine/__init__.py).
bool directions_in_turn_pay(const Shape& s, bool half, bool keep) {
  const int64_t w_hh_bytes = s.rec() * s.P * int64_t(c10::elementSize(s.dtype));
  return !keep && !half && s.kind == Kind::LSTM && s.B >= 2 && w_hh_bytes >= 2 * l2_bytes();
}
bool split_units(const Shape& s, bool half, bool keep) {
  const bool plain = s.kind == Kind::RNN_TANH || s.kind == Kind::RNN_RELU || s.kind == Kind::GRU_AFTER ||
                     (s.kind == Kind::GRU_BEFORE && !keep) || (s.kind == Kind::LSTM && !s.coupled && !s.peep);
  const bool can = (s.D == 1 || (s.D == 2 && !keep)) && plain && !s.ln_hh && !s.ln_ih && !s.drop && !s.zone &&
                   !s.proj && s.H >= 32 && s.B >= 1 && at::get_num_threads() >= 2;
  if (!can) return false;
  const char* env = std::getenv("RNNLAB_SPLIT");
  if (env && std::string(env) == "0") return false;
  if (env && std::string(env) == "1") return true;
  if (s.D == 2) return directions_in_turn_pay(s, half, keep) && split_pays(s, half, keep);
  return split_pays(s, half, keep);
}

// how many loops the operators have run in this process, by route: [forward on one loop, forward split by unit
// (split.h), forward with small_gemm.h's kernel, backward split by unit, forward in the bf16 mode, forward and backward
// split by row (split.h's run_rows)]; read by
// rnnlab::route_counts, so that tests and the bench see which route ran
std::atomic<int64_t> route_totals[7];
enum Route { ONE_LOOP = 0, SPLIT = 1, SMALL = 2, SPLIT_BACK = 3, BF16 = 4, ROWS = 5, ROWS_BACK = 6 };
void took(Route r) { route_totals[r].fetch_add(1, std::memory_order_relaxed); }

// split.h's run_rows: a one-direction loop as two loops over halves of the batch, on a thread each. Rows never meet in
// a step (only ∂W, the GEMMs over all T·B rows afterwards, sums over them), so the halves run with no hand-off at all;
// but each reads the whole W_hh every step, so it pays while W_hh fits in half a core's L2 (read at run time; 1 MB
// where the system does not say). Measured on an Intel Xeon (2 MB L2), 2 threads, min of 20 interleaved calls, rows /
// the route before (the unit split or one loop), at B >= 8:
// - inference: RNN 0.72-0.90, GRU 0.62-0.99, LSTM 0.68-1.01 (1.01 and 0.90 in two runs at (100, 32, 64, 128)) from
//   (1000, 8, 16, 32) to (100, 64, 256, 256) (the LSTM there, W_hh 1 MB: 1.10, so not at half the L2 or more);
// - training: LSTM 0.76-0.82 ((1000, 8, 16, 32), (100, 32, 64, 128)), GRU 0.81-0.90, RNN 0.79-0.90, but the RNN 1.10
//   at (1000, 8, 16, 32) (four rows a part), so the RNN from 16 rows; with W_hh at half the L2 (the LSTM at H = 256)
//   0.97 at (100, 64, 256, 256) against the unit split; at W_hh 4 MB ((100, 8, 256, 512)) 1.25 against one loop.
// RNNLAB_ROWS=0 turns it off, RNNLAB_ROWS=1 runs it wherever it can run (the tests compare the two).
bool rows_pay(const Shape& s, bool keep) {
  const int64_t w_hh_bytes = s.rec() * s.P * int64_t(c10::elementSize(s.dtype));
  const bool rnn = s.kind == Kind::RNN_TANH || s.kind == Kind::RNN_RELU;
  const int64_t l2 = l2_bytes();
  return s.B >= (keep && rnn ? 16 : 8) && (keep ? 2 * w_hh_bytes <= l2 : 2 * w_hh_bytes < l2);
}
bool split_rows(const Shape& s, bool half, bool keep) {
  const bool can = s.D == 1 && !s.ln_hh && !s.ln_ih && s.B >= 2 && at::get_num_threads() >= 2;
  if (!can) return false;
  const char* env = std::getenv("RNNLAB_ROWS");
  if (env && std::string(env) == "0") return false;
  if (env && std::string(env) == "1") return true;
  return rows_pay(s, keep);
}

// the first unit of the second part: half of H, rounded up to a multiple of 16 (whole vectors in each part)
int64_t split_cut(int64_t H) { return std::min(H - 1, (H / 2 + 15) / 16 * 16); }

// the bf16 mode's copies of W_hh packed once for brgemm.h's products, where this CPU has them (W_hhᵀ (P, rec) forward,
// W_hh (rec, P) backward: each (K, N) as its product reads it)
template <typename T>
void pack_bf16(Loop<T>& k) {
  if (k.w_hhT16) k.w_hhT16p = PackedBf16::make(k.P, k.ldw, k.w_hhT16, k.ldw);
  if (k.w_hh16) k.w_hh16p = PackedBf16::make(k.ldw, k.P, k.w_hh16, k.P);
}

// the services of one direction's loop
template <typename T>
Loop<T> make_loop(const Shape& s, const Record& r, const Reserve& res, const Tensor& w_hhT, const Tensor& w_hrT,
                  std::vector<T>& zeros, const Tensor& dhh, const Tensor& w_hhT16 = Tensor(),
                  const Tensor& w_hh16 = Tensor()) {
  Loop<T> k;
  k.B = s.B, k.H = s.H, k.P = s.P, k.ldw = s.rec();
  k.w_hhT = w_hhT.defined() ? w_hhT.data_ptr<T>() : nullptr;
  k.w_hh = r.w_hh.data_ptr<T>();
  k.dot = dot_rows(s);
  k.small = !k.dot && small_rows(s);
  k.gemm_threads = step_threads(s.B, k.ldw, s.P);  // a laid-out product's threads (brgemm.h), as BLAS's rule
  k.w_hrT = w_hrT.defined() ? w_hrT.data_ptr<T>() : nullptr;
  k.w_hr = ptr<T>(r.w_hr);
  if (w_hhT16.defined() || w_hh16.defined()) {  // bf16 mode: W_hh's bf16 copy, made once for the whole call
    k.w_hhT16 = w_hhT16.defined() ? reinterpret_cast<const bf16_t*>(w_hhT16.data_ptr()) : nullptr;
    k.w_hh16 = w_hh16.defined() ? reinterpret_cast<const bf16_t*>(w_hh16.data_ptr()) : nullptr;
    k.in16.assign(s.B * std::max(s.H, k.ldw), bf16_t(0));
    pack_bf16(k);
  }
  zeros.assign(s.H, T(0));
  k.b_hn = s.bias_hn ? r.b_hn.data_ptr<T>() : zeros.data();
  k.pf = k.pi = k.po = zeros.data();
  if (s.peep) {  // (p_f, p_i, p_o), or (p_f, p_o) when coupled
    const T* p = r.peep.data_ptr<T>();
    k.pf = p;
    if (s.coupled) {
      k.po = p + s.H;
    } else {
      k.pi = p + s.H;
      k.po = p + 2 * s.H;
    }
  }
  if (s.ln_hh) {
    k.norm.g_hh = r.ln_hh_w.data_ptr<T>(), k.norm.b_hh = r.ln_hh_b.data_ptr<T>();
    k.norm.g_c = ptr<T>(r.ln_c_w), k.norm.b_c = ptr<T>(r.ln_c_b);
    k.norm.uhat = mut<T>(res.get("uhat")), k.norm.urstd = mut<T>(res.get("urstd"));
    k.norm.nhat = mut<T>(res.get("nhat")), k.norm.nrstd = mut<T>(res.get("nrstd"));
    k.norm.chat = mut<T>(res.get("chat")), k.norm.crstd = mut<T>(res.get("crstd"));
    k.norm.dhh = mut<T>(dhh);
  }
  k.ngrads = nullptr;
  return k;
}

// the loop over n of the batch's rows (split.h's run_rows): the whole loop's, with what make_loop derives from B
// derived again (the product's route for so few rows, the bf16 mode's row buffer), on one thread
template <typename T>
Loop<T> rows_loop(const Loop<T>& whole, const Shape& s, int64_t n) {
  Shape part = s;
  part.B = n;
  Loop<T> k = whole;
  k.B = n;
  k.dot = dot_rows(part);
  k.small = !k.dot && small_rows(part);
  if (!k.in16.empty()) k.in16.assign(n * std::max(s.H, k.ldw), bf16_t(0));
  k.threads = 1;
  return k;
}

// direction d's arrays from row b0 on, for a loop over a part of the batch (split.h's run_rows): every array is
// (T, B, width) or (B, width), so its part starts b0 rows in, and each time slot still holds B rows (Direction::rows)
template <typename T>
Direction<T> rows_of(const Direction<T>& d, const Shape& s, int64_t b0) {
  auto at = [b0](auto* p, int64_t width) { return p ? p + b0 * width : p; };
  Direction<T> o = d;
  o.rows = s.B;
  o.mask = at(d.mask, 1), o.xp = at(d.xp, s.GX), o.x = at(d.x, s.X), o.x16 = at(d.x16, s.X);
  o.states = at(d.states, s.P), o.cells = at(d.cells, s.H), o.gates = at(d.gates, s.GH), o.extra = at(d.extra, s.H);
  o.da16 = at(d.da16, s.GX);
  o.c_pre = at(d.c_pre, s.H), o.m = at(d.m, s.H), o.h_mask = at(d.h_mask, s.P), o.zone = at(d.zone, s.H);
  o.g_states = at(d.g_states, s.P), o.g_final = at(d.g_final, s.P), o.g_final_c = at(d.g_final_c, s.H);
  o.g_cells = at(d.g_cells, s.H), o.g_gates = at(d.g_gates, s.GH);
  o.g_cpre = at(d.g_cpre, s.H), o.da = at(d.da, s.GX), o.dhn = at(d.dhn, s.H), o.dhr = at(d.dhr, s.P);
  o.dh0 = at(d.dh0, s.P), o.dc0 = at(d.dc0, s.H);
  return o;
}

using LevelOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

// wᵀ as a dense tensor, for a contiguous 2-D w: transpose.h's tiles (ATen's transposing copy was 12.8 % of the
// samples in a profile of one-step batch-1 LSTM calls at H = 64; MKL's omatcopy, used before, took 38 µs for a
// 256 × 64 W_hh on an AMD EPYC host against 5.7 µs here, and 604 against 72 µs for 1024 × 256)
Tensor transposed(const Tensor& w) {
  Tensor out = pooled_empty({w.size(1), w.size(0)}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "rnnlab::transposed", [&] {
    transpose(w.size(0), w.size(1), w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

// W_hhᵀ (or W_hrᵀ) of a loop in the calling thread's workspace (workspace.h) instead of a new tensor: glibc's allocator
// (a fresh 64 KB block per call for an LSTM's W_hh at H = 64, freed with malloc_consolidate, among the call's other
// allocations) was 15 % of the samples of one-step batch-1 calls. ``ws`` must outlive every use (the tensor wraps the
// workspace's memory and never leaves the call).
Tensor transposed(const Tensor& w, Workspace& ws) {
  Tensor out;
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "rnnlab::transposed", [&] {
    scalar_t* p = ws.take<scalar_t>(w.numel());
    transpose(w.size(0), w.size(1), w.data_ptr<scalar_t>(), p);
    out = at::from_blob(p, {w.size(1), w.size(0)}, w.options());
  });
  return out;
}

// recurrent_level's work on its checked arguments (check_level's Shape and records; lean_forward's lean_level):
// states (D, T+1, B, P), cells (D, T+1 or 2 slots, B, H) for the LSTM, and, where ``keep``, gates, c_pre and the
// reserve (else undefined tensors: inference keeps one step's gates, overwritten). A record's undefined h0 (c0) starts
// the direction from zeros.
LevelOut run_level(const Shape& s, const std::vector<Record>& recs, const Tensor& x, const Opt& mask, bool keep,
                   bool bf16) {
  const bool lstm = s.kind == Kind::LSTM;
  const Tensor x2 = x.contiguous().view({s.T * s.B, s.X});
  const Tensor m = mask.has_value() ? mask->contiguous() : Tensor();
  // the outputs, directions first: each direction's slice is contiguous
  Tensor states = pooled_empty({s.D, s.T + 1, s.B, s.P}, x.options());  // (pool.h: large ones from its cache)
  // keep=False (inference): C's first and last slots only (Direction::cell_slots), one step's gates and reserve,
  // overwritten every step, and neither is returned
  const int64_t cell_slots = keep ? s.T + 1 : 2;
  Tensor cells = lstm ? pooled_empty({s.D, cell_slots, s.B, s.H}, x.options()) : x.new_empty({0});
  Shape kept = s;
  if (!keep) kept.T = 1;
  Tensor gates = pooled_empty({s.D, kept.T, s.B, s.GH}, x.options());
  Tensor c_pre = lstm && s.zone ? pooled_empty({s.D, s.T, s.B, s.H}, x.options()) : x.new_empty({0});
  Tensor reserve = pooled_empty({s.D, reserve_size(kept)}, x.options());
  const bool half = use_bf16(s, bf16);
  const bool by_rows = split_rows(s, half, keep);
  const bool split = !by_rows && split_units(s, half, keep);
  const Tensor x16 = half ? to16(x2) : Tensor();
  std::vector<Tensor> xps, w_ih16s, w_hhTs, w_hrTs, w_hhT16s;
  std::vector<Reserve> reserves;
  Workspace ws;  // W_hhᵀ and W_hrᵀ (the bf16 mode rounds its W_hhᵀ into a tensor of its own)
  for (int64_t d = 0; d < s.D; ++d) {
    const Record& r = recs[d];
    reserves.emplace_back(kept, reserve[d]);
    const Reserve& res = reserves.back();
    w_ih16s.push_back(half ? to16(r.w_ih) : Tensor());
    Tensor xp;  // without layer norm the driver projects the inputs itself, a chunk of steps at a time
    if (s.ln_ih) {  // LN(x W_ihᵀ) + b over all T·B rows at once (b folded into LN's bias)
      Tensor raw = res.get("raw").view({s.T * s.B, s.GX});
      if (half)
        mm16(x16, false, w_ih16s.back(), true, 0.0f, raw);
      else
        at::mm_out(raw, x2, r.w_ih.t());
      const Tensor shift = s.bias ? r.ln_ih_b + r.b : r.ln_ih_b;
      auto [y, mean, rstd] = at::native_layer_norm(raw, {s.GX}, r.ln_ih_w, shift, LN_EPS);
      res.get("ih_mean").view({-1}).copy_(mean.view({-1}));
      res.get("ih_rstd").view({-1}).copy_(rstd.view({-1}));
      xp = y.contiguous();
    }
    xps.push_back(xp);
    // W_hhᵀ (P, rec): MKL is faster on it for small B; not made where the loop reads W_hh itself (dot_rows)
    // (nor where split parts make their own)
    const bool makes_w_hhT = !((dot_rows(s) && !half) || split);  // (split by row: one, shared)
    w_hhTs.push_back(makes_w_hhT ? transposed(r.w_hh, ws) : Tensor());
    w_hrTs.push_back(s.proj ? transposed(r.w_hr, ws) : Tensor());  // W_hrᵀ (H, P)
    w_hhT16s.push_back(half && !split ? to16(w_hhTs.back()) : Tensor());  // (split parts make their own)
  }
  AT_DISPATCH_FLOATING_TYPES(s.dtype, "rnnlab::recurrent_level", [&] {
    using T = scalar_t;
    each_direction(s, [&](int64_t d) {
      const Record& r = recs[d];
      const Reserve& res = reserves[d];
      std::vector<T> zeros;
      Loop<T> k = make_loop<T>(s, r, res, w_hhTs[d], w_hrTs[d], zeros, Tensor(), w_hhT16s[d]);
      k.threads = pointwise_threads(s);
      k.bf16 = half;
      Direction<T> dir;
      dir.keep = keep;
      dir.steps = s.T, dir.reverse = d == 1, dir.mask = ptr<T>(m), dir.xp = ptr<T>(xps[d]);
      if (!dir.xp) {  // the driver's input projection
        dir.x = x2.data_ptr<T>();
        if (half) dir.x16 = reinterpret_cast<const bf16_t*>(x16.data_ptr());
        k.X = s.X, k.w_ih = r.w_ih.data_ptr<T>(), k.b_ih = s.bias ? r.b.data_ptr<T>() : nullptr;
        if (half) k.w_ih16 = reinterpret_cast<const bf16_t*>(w_ih16s[d].data_ptr());
      }
      // direction d's slices of the outputs, by pointer (each is contiguous); h_0 (C_0) into the first slot
      const int64_t slot = d == 1 ? s.T : 0;
      dir.states = states.data_ptr<T>() + d * (s.T + 1) * s.B * s.P;
      T* h_first = dir.states + slot * s.B * s.P;
      if (!r.h0.defined())
        std::fill(h_first, h_first + s.B * s.P, T(0));
      else if (s.B > 0)
        std::memcpy(h_first, r.h0.data_ptr<T>(), s.B * s.P * sizeof(T));
      dir.cells = lstm ? cells.data_ptr<T>() + d * cell_slots * s.B * s.H : nullptr;
      dir.cell_slots = keep ? 0 : 2;
      const int64_t c_slot = keep ? slot : (d == 1 ? 1 : 0);
      T* c_first = lstm ? dir.cells + c_slot * s.B * s.H : nullptr;
      if (lstm && !r.c0.defined())
        std::fill(c_first, c_first + s.B * s.H, T(0));
      else if (lstm && s.B > 0)
        std::memcpy(c_first, r.c0.data_ptr<T>(), s.B * s.H * sizeof(T));
      dir.gates = gates.data_ptr<T>() + d * kept.T * s.B * s.GH, dir.extra = mut<T>(res.get("extra"));
      dir.c_pre = lstm && s.zone ? c_pre.data_ptr<T>() + d * s.T * s.B * s.H : nullptr;
      dir.h_mask = ptr<T>(r.h_mask), dir.zone = ptr<T>(r.zone), dir.m = mut<T>(res.get("m"));
      with_cell<T>(s, [&](auto unit) {
        using Cell = decltype(unit);
        if (by_rows) {  // each half of the batch a whole loop of its own, on a thread each (split.h's run_rows)
          lay_out_forward(k, s.GX, !dir.xp);  // once, for both halves
          auto part = [&](int64_t b0, int64_t n) {
            Loop<T> kp = rows_loop(k, s, n);
            if (kp.small) took(SMALL);
            run_forward<T, Cell>(kp, rows_of(dir, s, b0));
          };
          if (run_rows(s.B, part)) {
            if (half) took(BF16);
            return took(ROWS);
          }
        }
        if (k.small) took(SMALL);
        if (half) took(BF16);
        if constexpr (Cell::unit_split) {
          if (split) return took(run_forward_split<T, Cell>(k, dir, split_cut(s.H)) ? SPLIT : ONE_LOOP);
        }
        took(ONE_LOOP);
        run_forward<T, Cell>(k, dir);
      });
    }, /*in_turn=*/s.D == 2 && split);
  });
  if (!keep) return {states, cells, Tensor(), c_pre, Tensor()};
  return {states, cells, gates, c_pre, reserve};
}

LevelOut recurrent_level(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& h0, const Opt& c0,
                         const Opt& b, const Opt& b_hn, const Opt& mask, const Opt& peep, const Opt& h_mask,
                         const Opt& ln_ih_w, const Opt& ln_ih_b, const Opt& ln_hh_w, const Opt& ln_hh_b,
                         const Opt& ln_c_w, const Opt& ln_c_b, const Opt& zone, const Opt& w_hr,
                         c10::string_view cell, bool coupled, bool keep, bool bf16) {
  const char* fn = "rnnlab::recurrent_level";
  std::vector<Record> recs;
  const Shape s = check_level(fn, x, mask, w_ih, w_hh, h0, c0, b, b_hn, peep, h_mask, ln_ih_w, ln_ih_b, ln_hh_w,
                              ln_hh_b, ln_c_w, ln_c_b, zone, w_hr, cell, coupled, &recs);
  TORCH_CHECK_VALUE(keep || (!s.ln_hh && !s.zone), fn, ": keep: expected True with layer norm or zoneout (their ",
                    "saved values are read at every step), got False");
  auto [states, cells, gates, c_pre, reserve] = run_level(s, recs, x, mask, keep, bf16);
  if (!keep) return {states, cells, x.new_empty({0}), c_pre, x.new_empty({0})};
  return {states, cells, gates, c_pre, reserve};
}

// dense row-major C (M, N) = A (M, K) · B (K, N) + beta · C: small_gemm.h's kernel where ``small`` (float32), else BLAS
template <typename T>
void rows_times(int64_t M, int64_t N, int64_t K, const T* A, const T* Bm, T beta, T* C, bool small) {
  if constexpr (std::is_same_v<T, float>) {
    if (small) return small_gemm(M, N, K, A, K, Bm, N, beta, C, N);
  }
  gemm<T>(M, N, K, A, K, Bm, N, beta, C, N);
}

// rnnlab::cell_step — one time step of one plain level, for streaming (rnnlab.Streamer.step): the cell's own
// forward pass (cells/*.h) on B rows, with no time axis, outputs kept for backward, or per-call copies: the latency
// path. Returns the new h (B, H) and, for the LSTM, C (else an empty C).
// Each weight comes in either layout, or both, made once by the caller (the Streamer, again when they change):
// - transposed, W_ihᵀ (X, gx) and W_hhᵀ (H, rec): the products x · W_ihᵀ and h · W_hhᵀ as row-major GEMMs (BLAS, or
//   small_gemm.h's kernel for a few rows against a small W);
// - float32 only, the same transposes in column blocks (rnnlab::column_blocks of W_ih and W_hh: (⌈gx/64⌉, X, 64) and
//   (⌈rec/64⌉, H, 64)): one row at a time through block_gemv, which reads the weights once, front to back, at the rate
//   a plain read of them reaches (a large level's weights come from L3 every step, so the read is the whole cost).
//   ``backwards`` takes the blocks last to first and runs W_hh's product before W_ih's (the caller alternates it step
//   by step, so that the blocks read last, still in L2, are read first); each output is the same sum either way.
// A layout given is used where it is the one preferred (the blocks at batch 1, the transposes for more rows), or
// where it is the only one given; a product with neither is refused by name.
std::tuple<Tensor, Tensor> cell_step(const Tensor& x, const Tensor& h, const Opt& c, const Opt& w_ihT,
                                     const Opt& w_hhT, const Opt& b, const Opt& b_hn, c10::string_view cell,
                                     const Opt& w_ih_blocks, const Opt& w_hh_blocks, bool backwards) {
  const char* fn = "rnnlab::cell_step";
  Shape s{};
  s.kind = kind_of(cell);
  const bool lstm = s.kind == Kind::LSTM;
  TORCH_CHECK_VALUE(x.dim() == 2, fn, ": x: expected a 2-D tensor (B, X), got shape ", x.sizes());
  TORCH_CHECK_VALUE(h.dim() == 2, fn, ": h: expected a 2-D tensor (B, H), got shape ", h.sizes());
  s.dtype = x.scalar_type();
  TORCH_CHECK_TYPE(s.dtype == at::kFloat || s.dtype == at::kDouble, fn, ": x: expected float32 or float64, got ",
                   s.dtype);
  TORCH_CHECK_VALUE(x.device().is_cpu(), fn, ": x: expected a CPU tensor, got one on ", x.device());
  s.D = 1, s.T = 1, s.B = x.size(0), s.X = x.size(1), s.H = s.P = h.size(1);
  s.GX = input_gates(s.kind, false) * s.H, s.GH = stored_gates(s.kind) * s.H;
  s.bias = b.has_value(), s.bias_hn = b_hn.has_value();
  expect(fn, "h", h, {s.B, s.H}, s.dtype);
  const auto blocks = [](int64_t n) { return (n + GEMV_BLOCK - 1) / GEMV_BLOCK; };
  TORCH_CHECK_VALUE(w_ihT.has_value() || w_ih_blocks.has_value(), fn, ": w_ihT: expected a tensor (", s.X, ", ",
                    s.GX, ") or w_ih_blocks (", blocks(s.GX), ", ", s.X, ", ", GEMV_BLOCK, "), got neither");
  TORCH_CHECK_VALUE(w_hhT.has_value() || w_hh_blocks.has_value(), fn, ": w_hhT: expected a tensor (", s.H, ", ",
                    s.rec(), ") or w_hh_blocks (", blocks(s.rec()), ", ", s.H, ", ", GEMV_BLOCK, "), got neither");
  if (w_ihT) expect(fn, "w_ihT", *w_ihT, {s.X, s.GX}, s.dtype);
  if (w_hhT) expect(fn, "w_hhT", *w_hhT, {s.H, s.rec()}, s.dtype);
  if (w_ih_blocks) expect(fn, "w_ih_blocks", *w_ih_blocks, {blocks(s.GX), s.X, GEMV_BLOCK}, at::kFloat);
  if (w_hh_blocks) expect(fn, "w_hh_blocks", *w_hh_blocks, {blocks(s.rec()), s.H, GEMV_BLOCK}, at::kFloat);
  TORCH_CHECK_TYPE(s.dtype == at::kFloat || !(w_ih_blocks || w_hh_blocks), fn,
                   ": w_ih_blocks, w_hh_blocks: expected None for float64 x (the blocks are float32 only)");
  TORCH_CHECK_VALUE(c.has_value() == lstm, fn, ": c: expected ", lstm ? "a tensor (B, H)" : "None", " for cell '",
                    std::string(cell), "', got ", c.has_value() ? "a tensor" : "None");
  if (lstm) expect(fn, "c", *c, {s.B, s.H}, s.dtype);
  if (s.bias) expect(fn, "b", *b, {s.GX}, s.dtype);
  present(fn, "b_hn", b_hn, s.kind == Kind::GRU_AFTER, "(only the GRU with reset after has b_hn)");
  if (s.bias_hn) expect(fn, "b_hn", *b_hn, {s.H}, s.dtype);
  const bool ih_blocks = w_ih_blocks && (s.B == 1 || !w_ihT), hh_blocks = w_hh_blocks && (s.B == 1 || !w_hhT);
  const Tensor xc = x.contiguous(), hc = h.contiguous(), cc = lstm ? c->contiguous() : Tensor();
  const Tensor wi = (ih_blocks ? *w_ih_blocks : *w_ihT).contiguous();
  const Tensor wh = (hh_blocks ? *w_hh_blocks : *w_hhT).contiguous();
  Tensor h_out = x.new_empty({s.B, s.H});
  Tensor c_out = lstm ? x.new_empty({s.B, s.H}) : x.new_empty({0});
  AT_DISPATCH_FLOATING_TYPES(s.dtype, "rnnlab::cell_step", [&] {
    using T = scalar_t;
    BlasThreads threads(step_threads(s.B, s.rec(), s.P));
    Loop<T> k;
    k.B = s.B, k.H = s.H, k.P = s.P, k.ldw = s.rec();
    if (hh_blocks) {
      k.w_hh_blocks = wh.data_ptr<float>();
      k.backwards = backwards;
    } else {
      k.w_hhT = wh.data_ptr<T>();
      k.small = small_rows(s);
    }
    std::vector<T> zeros(s.GX, T(0));  // (G·H ≥ H: long enough for every absent vector below)
    k.b_hn = s.bias_hn ? b_hn->data_ptr<T>() : zeros.data();
    k.pf = k.pi = k.po = zeros.data();
    // xp = x · W_ihᵀ, then the cell's step (the driver's forward step with one time slot), which adds the bias
    std::vector<T> buf(s.B * (s.GX + s.first() + s.GH + s.H));
    T* xp = buf.data();
    T* hh = xp + s.B * s.GX;
    T* gate = hh + s.B * s.first();
    T* extra = gate + s.B * s.GH;
    const T* xb = s.bias ? b->data_ptr<T>() : zeros.data();
    const T* h_prev = hc.data_ptr<T>();
    auto input = [&] {
      if (s.X == 0) {  // no input features: xp is zero (BLAS refuses a zero leading dimension)
        std::fill(xp, xp + s.B * s.GX, T(0));
      } else if (ih_blocks) {  // (float32: checked above)
        gemv_blocks(s.B, s.X, xc.data_ptr<float>(), s.X, wi.data_ptr<float>(), 0, s.GX, reinterpret_cast<float*>(xp),
                    s.GX, backwards);
      } else {
        rows_times<T>(s.B, s.GX, s.X, xc.data_ptr<T>(), wi.data_ptr<T>(), T(0), xp, small_rows(s));
      }
    };
    if (!backwards) input();
    k.product(h_prev, 0, s.first(), hh, s.first());
    if (backwards) input();
    const Fw<T> step{0, nullptr, xp, xb, hh, h_prev, h_prev, gate, h_out.data_ptr<T>(),
                     lstm ? cc.data_ptr<T>() : nullptr, lstm ? c_out.data_ptr<T>() : nullptr, extra};
    with_cell<T>(s, [&](auto unit) {
      k.scratch.assign(decltype(unit)::scratch(s.B, s.H), T(0));  // the GRU's r·h (reset before)
      decltype(unit)::forward(step, k);
    });
  });
  return {h_out, c_out};
}

// rnnlab::column_blocks — a weight W (N, K) as torch stores it, laid out as its transpose (K, N) in small_gemm.h's
// column blocks, (⌈N/64⌉, K, 64), the last block padded with zero columns: the layout cell_step's w_ih_blocks and
// w_hh_blocks take (the Streamer makes it once per load)
Tensor column_blocks(const Tensor& w) {
  const char* fn = "rnnlab::column_blocks";
  TORCH_CHECK_VALUE(w.dim() == 2, fn, ": w: expected a 2-D tensor (N, K), got shape ", w.sizes());
  TORCH_CHECK_TYPE(w.scalar_type() == at::kFloat, fn, ": w: expected float32, got ", w.scalar_type());
  TORCH_CHECK_VALUE(w.device().is_cpu(), fn, ": w: expected a CPU tensor, got one on ", w.device());
  const int64_t N = w.size(0), K = w.size(1), blocks = (N + GEMV_BLOCK - 1) / GEMV_BLOCK;
  return at::constant_pad_nd(w, {0, 0, 0, blocks * GEMV_BLOCK - N})
      .view({blocks, GEMV_BLOCK, K})
      .transpose(1, 2)
      .contiguous();
}

using LevelGrads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                              Tensor, Tensor, Tensor, Tensor>;

// per-direction gradients -> one (D, ...) tensor, or an empty one where the field is absent or not asked for
Tensor stacked(const std::vector<Tensor>& per, const Tensor& none) {
  if (per.empty()) return none;
  return per.size() == 1 ? per[0].unsqueeze(0) : at::stack(per);
}

// an output's gradient (D, ...): the given one (contiguous), or undefined where none was given
Tensor grad_of(const char* fn, const char* name, const c10::optional<Tensor>& g, c10::IntArrayRef shape,
               at::ScalarType dtype) {
  if (!g.has_value()) return Tensor();
  expect(fn, name, *g, shape, dtype);
  return g->contiguous();
}

// A weight's gradient ∂W (G·H, K) = ∂aᵀ · v over the T·B rows (v: x for W_ih, h_{t-1} for W_hh, K their width): MKL
// runs it as given, with ∂aᵀ a transposed view, or as (vᵀ · ∂a)ᵀ — the same sums, the GEMM's roles swapped, then a
// transposing copy of the small (K, G·H) result. Where ∂W is wide and short (G·H ≥ 4K) over many rows the swapped form
// is faster: on 2 threads (min of 30 calls; three runs at (100, 32, 64, 128), one elsewhere), swapped / as given, ∂W_ih
// 0.68-0.78 and ∂W_hh 0.92-0.97 at (100, 32, 64, 128) for the LSTM, ∂W_ih 0.85 for the GRU there, 0.76 (∂W_ih) and
// 0.94 (∂W_hh) for the LSTM at (1000, 8, 16, 32), 0.89-0.91 at (100, 64, 256, 256); but 1.05-1.09 where G·H = K (the
// RNN at H = X = 256 and 512) and 1.13-1.37 at 800 rows ((200, 4, 32, 64)). RNNLAB_WGRAD=1 swaps every float ∂W, RNNLAB_WGRAD=0 none (the tests
// compare the two).
bool swap_weight_grad(int64_t rows, int64_t GH, int64_t K) {
  const char* env = std::getenv("RNNLAB_WGRAD");
  if (env && std::string(env) == "0") return false;
  if (env && std::string(env) == "1") return true;
  return rows >= 2048 && GH >= 4 * K;
}

// A bias's gradient: the column sums of the (rows, n) gradient of the pre-activations. ATen's sum(0) reads the rows
// in its own order; a GEMV against a column of ones (MKL) is faster on large ones. Measured on 2 threads (min of 40
// calls), sum(0) / GEMV: 5.6 / 2.3 ms at (6400, 2048) (the LSTM at (50, 128, 256, 512)), 2.5 / 0.8 at (6400, 1024),
// 0.24 / 0.19 at (3200, 512), 0.16 / 0.09 at (8000, 128); but 0.019 / 0.022 at (800, 256) and 0.012 / 0.015 at
// (400, 128). So the GEMV from 2^20 numbers.
Tensor column_sums(const Tensor& rows) {
  if (rows.numel() < (int64_t(1) << 20)) return rows.sum(0);
  return at::mv(rows.t(), at::ones({rows.size(0)}, rows.options()));
}

LevelGrads recurrent_level_backward(
    const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& h0, const Opt& c0, const Opt& b,
    const Opt& b_hn, const Opt& mask, const Opt& peep, const Opt& h_mask, const Opt& ln_ih_w, const Opt& ln_ih_b,
    const Opt& ln_hh_w, const Opt& ln_hh_b, const Opt& ln_c_w, const Opt& ln_c_b, const Opt& zone, const Tensor& states,
    const Tensor& cells, const Tensor& gates, const Tensor& c_pre, const Tensor& reserve, const Tensor& g_states,
    const c10::optional<Tensor>& g_cells, const c10::optional<Tensor>& g_gates, const c10::optional<Tensor>& g_c_pre,
    const Opt& w_hr, c10::string_view cell, bool coupled, bool need_x, bool need_weights, bool bf16,
    const Opt& g_final, const Opt& g_final_c, bool out_rows) {
  const char* fn = "rnnlab::recurrent_level_backward";
  std::vector<Record> recs;
  const Shape s = check_level(fn, x, mask, w_ih, w_hh, h0, c0, b, b_hn, peep, h_mask, ln_ih_w, ln_ih_b, ln_hh_w,
                              ln_hh_b, ln_c_w, ln_c_b, zone, w_hr, cell, coupled, &recs);
  const bool lstm = s.kind == Kind::LSTM;
  const int64_t R = s.rec(), T = s.T, B = s.B, H = s.H, P = s.P;
  const int64_t D = s.D;
  expect(fn, "states", states, {D, T + 1, B, P}, s.dtype);
  expect(fn, "cells", cells, lstm ? c10::IntArrayRef{D, T + 1, B, H} : c10::IntArrayRef{0}, s.dtype);
  expect(fn, "gates", gates, {D, T, B, s.GH}, s.dtype);
  expect(fn, "c_pre", c_pre, lstm && s.zone ? c10::IntArrayRef{D, T, B, H} : c10::IntArrayRef{0}, s.dtype);
  expect(fn, "reserve", reserve, {D, reserve_size(s)}, s.dtype);
  // g_states: every slot's gradient, or (out_rows) the output rows' alone, with g_final's for the last state
  expect(fn, "g_states", g_states, {D, out_rows ? T : T + 1, B, P}, s.dtype);
  TORCH_CHECK_VALUE(!g_final.has_value() || out_rows, fn, ": g_final: expected None where g_states holds every "
                    "slot (out_rows=False; with out_rows=True g_states is the output rows, (D, T, B, P)), got a tensor");
  const Tensor g_final_h = g_final.has_value() ? (expect(fn, "g_final", *g_final, {D, B, P}, s.dtype),
                                                  g_final->contiguous()) : Tensor();
  // g_final_c: the LSTM's last C's own gradient (c_n's, given apart from g_cells' slots), added to that slot's
  TORCH_CHECK_VALUE(!g_final_c.has_value() || lstm, fn, ": g_final_c: expected None for cell '", cell,
                    "' (only the LSTM carries C), got a tensor");
  const Tensor g_last_c = g_final_c.has_value() ? (expect(fn, "g_final_c", *g_final_c, {D, B, H}, s.dtype),
                                                   g_final_c->contiguous()) : Tensor();
  const Tensor states_c = states.contiguous(), cells_c = cells.contiguous(), gates_c = gates.contiguous();
  const Tensor c_pre_c = c_pre.contiguous(), reserve_c = reserve.contiguous(), g_states_c = g_states.contiguous();
  const Tensor g_cells_c = lstm ? grad_of(fn, "g_cells", g_cells, {D, T + 1, B, H}, s.dtype) : Tensor();
  const Tensor g_gates_c = grad_of(fn, "g_gates", g_gates, {D, T, B, s.GH}, s.dtype);
  const Tensor g_c_pre_c = lstm && s.zone ? grad_of(fn, "g_c_pre", g_c_pre, {D, T, B, H}, s.dtype) : Tensor();
  const Tensor m = mask.has_value() ? mask->contiguous() : Tensor();
  struct Work {
    Tensor states, cells, gates, c_pre, reserve, g_states, g_final, g_final_c, g_cells, g_gates, g_c_pre, da, da16, db,
        dhn, dh0, dc0, dhh, dhr;
    Tensor dln_hh_w, dln_hh_b, dln_c_w, dln_c_b;
  };
  std::vector<Work> work(s.D);
  const bool half = use_bf16(s, bf16);
  const bool by_rows = split_rows(s, half, true);
  const bool split = !by_rows && split_units(s, half, true);
  // bf16 mode: the loop's per-step rounding of ∂a for the product with W_hh is kept (da16) and is the weights' GEMMs'
  // operand, in place of a rounding pass over all T·B rows after the loop (a pass from memory: 9 ms of a 100 ms LSTM
  // step at (50, 128, 256, 512)). Where that product reads whole rows of ∂a — the RNN and the LSTM without layer norm —
  // on one loop or split by row (split by unit, each part rounds its own columns). RNNLAB_DA16=0 rounds after the loop
  // instead (tests compare the two: the same values, rounded once either way)
  const char* da16_env = std::getenv("RNNLAB_DA16");
  const bool keep16 = half && need_weights && !split && !s.ln_hh && !s.ln_ih &&
                      (lstm || s.kind == Kind::RNN_TANH || s.kind == Kind::RNN_RELU) &&
                      !(da16_env && std::string(da16_env) == "0");
  // and then ∂a in float32 is one step's rows, its column sums (the gate bias's gradient) taken by the loop, unless
  // the peepholes' gradient reads every step's ∂a after the loop
  const bool da_step = keep16 && !s.peep;
  std::vector<Tensor> w_hh16s;  // bf16 mode: W_hh rounded once for the whole loop
  for (int64_t d = 0; d < s.D; ++d) w_hh16s.push_back(half && !split ? to16(recs[d].w_hh) : Tensor());  // (split.h's parts: their own)
  for (int64_t d = 0; d < s.D; ++d) {
    Work& w = work[d];
    w.states = states_c[d], w.cells = lstm ? cells_c[d] : Tensor(), w.gates = gates_c[d];
    w.c_pre = lstm && s.zone ? c_pre_c[d] : Tensor(), w.reserve = reserve_c[d], w.g_states = g_states_c[d];
    w.g_final = g_final_h.defined() ? g_final_h[d] : Tensor();
    w.g_final_c = g_last_c.defined() ? g_last_c[d] : Tensor();
    w.g_cells = g_cells_c.defined() ? g_cells_c[d] : Tensor();
    w.g_gates = g_gates_c.defined() ? g_gates_c[d] : Tensor();
    w.g_c_pre = g_c_pre_c.defined() ? g_c_pre_c[d] : Tensor();
    w.da = pooled_empty({da_step ? 1 : T, B, s.GX}, x.options());
    if (keep16) w.da16 = pooled_empty({T, B, s.GX}, x.options().dtype(at::kBFloat16));
    if (da_step && s.bias) w.db = by_rows ? x.new_zeros({2, s.GX}) : x.new_zeros({1, s.GX});  // a row per loop
    w.dhn = s.kind == Kind::GRU_AFTER ? pooled_empty({T, B, H}, x.options()) : Tensor();
    w.dh0 = x.new_empty({B, P});
    if (s.proj) w.dhr = pooled_empty({T, B, P}, x.options());
    w.dc0 = lstm ? x.new_empty({B, H}) : x.new_empty({0});
    if (s.ln_hh) {  // ∂ of the raw recurrent GEMM outputs; the gains' and biases' gradients
      w.dhh = pooled_empty({T, B, R}, x.options());
      w.dln_hh_w = x.new_empty({R}), w.dln_hh_b = x.new_empty({R});
      if (lstm) w.dln_c_w = x.new_empty({H}), w.dln_c_b = x.new_empty({H});
    }
  }
  AT_DISPATCH_FLOATING_TYPES(s.dtype, "rnnlab::recurrent_level_backward", [&] {
    using T_ = scalar_t;
    each_direction(s, [&](int64_t d) {
      const Record& r = recs[d];
      Work& w = work[d];
      const Reserve res(s, w.reserve);
      std::vector<T_> zeros;
      Loop<T_> k = make_loop<T_>(s, r, res, Tensor(), Tensor(), zeros, w.dhh, Tensor(), w_hh16s[d]);
      k.threads = pointwise_threads(s);
      k.bf16 = half;
      Direction<T_> dir;
      dir.steps = T, dir.reverse = d == 1, dir.mask = ptr<T_>(m);
      dir.states = w.states.data_ptr<T_>(), dir.cells = mut<T_>(w.cells), dir.gates = w.gates.data_ptr<T_>();
      dir.extra = mut<T_>(res.get("extra")), dir.c_pre = mut<T_>(w.c_pre);
      dir.h_mask = ptr<T_>(r.h_mask), dir.zone = ptr<T_>(r.zone);
      dir.g_states = w.g_states.data_ptr<T_>(), dir.g_cells = ptr<T_>(w.g_cells);
      dir.out_rows = out_rows, dir.g_final = ptr<T_>(w.g_final), dir.g_final_c = ptr<T_>(w.g_final_c);
      dir.g_gates = ptr<T_>(w.g_gates), dir.g_cpre = ptr<T_>(w.g_c_pre);
      if (w.da16.defined()) dir.da16 = reinterpret_cast<bf16_t*>(w.da16.data_ptr());
      dir.da_step = da_step, dir.db = mut<T_>(w.db);
      dir.da = w.da.data_ptr<T_>(), dir.dhn = ptr<T_>(w.dhn) ? mut<T_>(w.dhn) : nullptr;
      dir.dh0 = w.dh0.data_ptr<T_>(), dir.dc0 = mut<T_>(w.dc0);
      dir.m = mut<T_>(res.get("m")), dir.dhr = mut<T_>(w.dhr);
      dir.dg_hh = mut<T_>(w.dln_hh_w), dir.db_hh = mut<T_>(w.dln_hh_b);
      dir.dg_c = mut<T_>(w.dln_c_w), dir.db_c = mut<T_>(w.dln_c_b);
      with_cell<T_>(s, [&](auto unit) {
        using Cell = decltype(unit);
        if (by_rows) {  // each half of the batch on a thread of its own (split.h's run_rows)
          lay_out_backward(k);  // once, for both halves
          auto part = [&](int64_t b0, int64_t n) {
            Loop<T_> kp = rows_loop(k, s, n);
            Direction<T_> pd = rows_of(dir, s, b0);
            if (pd.db) pd.db = dir.db + (b0 ? s.GX : 0);  // each part its own row of sums
            run_backward<T_, Cell>(kp, pd);
          };
          if (run_rows(s.B, part)) return took(ROWS_BACK);
        }
        if constexpr (Cell::unit_split_back) {
          if (split) {
            if (run_backward_split<T_, Cell>(k, dir, split_cut(s.H))) took(SPLIT_BACK);
            return;
          }
        }
        run_backward<T_, Cell>(k, dir);
      });
    });
  });
  // after the loops: every weight and input gradient is one GEMM or reduction over T·B rows
  const Tensor x2 = x.contiguous().view({T * B, s.X});
  const Tensor none = x.new_empty({0});
  // the GEMMs' operands: bf16 copies in bf16 mode (products accumulate in float32), else the float tensors
  auto low = [&](const Tensor& t) { return half ? to16(t) : t; };
  auto mm_tn = [&](const Tensor& a, const Tensor& b) {
    if (half) return mm16(a, true, b, false);
    if (swap_weight_grad(a.size(0), a.size(1), b.size(1))) return at::mm(b.t(), a).t().contiguous();
    return at::mm(a.t(), b);
  };
  const Tensor x2_ = half && need_weights ? to16(x2) : x2;
  Tensor dx;
  std::vector<Tensor> dw_ih, dw_hh, db, db_hn, dh0, dc0, dpeep, dg_ih, db_ih, dg_hh, db_hh, dg_c, db_c, dw_hr;
  for (int64_t d = 0; d < s.D; ++d) {
    const Record& r = recs[d];
    Work& w = work[d];
    const Reserve res(s, w.reserve);
    const Tensor da2 = da_step ? Tensor() : w.da.view({T * B, s.GX});  // (da_step: one step, read by the loop only)
    Tensor d_raw = da2, d_bias;  // ∂ of x W_ihᵀ; Σ ∂a, the gate bias's gradient
    if (s.ln_ih) {  // through LN(x W_ihᵀ); its bias β and the gate bias b share the gradient Σ ∂a
      Tensor dg;
      std::tie(d_raw, dg, d_bias) = at::native_layer_norm_backward(
          da2, res.get("raw").view({T * B, s.GX}), {s.GX}, res.get("ih_mean").reshape({T * B, 1}),
          res.get("ih_rstd").reshape({T * B, 1}), r.ln_ih_w, r.ln_ih_b, {true, need_weights, need_weights});
      if (need_weights) dg_ih.push_back(dg), db_ih.push_back(d_bias);
    }
    const Tensor d_raw_ = w.da16.defined() ? w.da16.view({T * B, s.GX}) : low(d_raw);
    if (need_x && half) {
      if (!dx.defined()) dx = pooled_empty({T * B, s.X}, x.options());
      mm16(d_raw_, false, to16(r.w_ih), false, d == 0 ? 0.0f : 1.0f, dx);
    } else if (need_x) {
      if (dx.defined()) {
        dx.addmm_(d_raw, r.w_ih);
      } else {
        dx = pooled_empty({T * B, s.X}, x.options());
        at::mm_out(dx, d_raw, r.w_ih);
      }
    }
    dh0.push_back(w.dh0);
    if (lstm) dc0.push_back(w.dc0);
    if (!need_weights) continue;
    const bool reverse = d == 1;
    Tensor h_prev = reverse ? w.states.narrow(0, 1, T) : w.states.narrow(0, 0, T);  // h_{t-1} of each step t
    if (s.drop) h_prev = h_prev * r.h_mask;  // recurrent dropout: W_hh saw h_{t-1} · mask
    h_prev = low(h_prev.reshape({T * B, P}));
    if (s.proj) dw_hr.push_back(at::mm(w.dhr.view({T * B, P}).t(), res.get("m").reshape({T * B, H})));  // Σ ∂h_tᵀ m_t
    // ∂ of the recurrent GEMMs' outputs
    const Tensor rec = s.ln_hh ? low(w.dhh.view({T * B, R})) : (s.ln_ih ? low(da2) : d_raw_);
    if (s.kind == Kind::GRU_BEFORE) {  // the n rows multiply r·h_{t-1}
      const Tensor extra = low(res.get("extra").reshape({T * B, H}));
      dw_hh.push_back(at::cat({mm_tn(rec.narrow(1, 0, 2 * H), h_prev), mm_tn(rec.narrow(1, 2 * H, H), extra)}));
    } else if (s.kind == Kind::GRU_AFTER && !s.ln_hh) {  // the n rows' gradient is r·∂n_pre
      dw_hh.push_back(at::cat({mm_tn(rec.narrow(1, 0, 2 * H), h_prev), mm_tn(low(w.dhn.view({T * B, H})), h_prev)}));
    } else {
      dw_hh.push_back(mm_tn(rec, h_prev));
    }
    dw_ih.push_back(mm_tn(d_raw_, x2_));
    if (s.bias) db.push_back(d_bias.defined() ? d_bias : w.db.defined() ? w.db.sum(0) : column_sums(da2));
    if (s.bias_hn) db_hn.push_back(column_sums(w.dhn.view({T * B, H})));
    if (s.peep) {  // ∂p = Σ over T·B rows of ∂a_gate · C (C_{t-1} for f, i; C_t before zoneout for o)
      Tensor c_prev = reverse ? w.cells.narrow(0, 1, T) : w.cells.narrow(0, 0, T);
      Tensor c_next = s.zone ? w.c_pre : (reverse ? w.cells.narrow(0, 0, T) : w.cells.narrow(0, 1, T));
      std::vector<int64_t> rows = coupled ? std::vector<int64_t>{0, 2} : std::vector<int64_t>{0, 1, 3};
      std::vector<Tensor> parts;
      for (int64_t k : rows)
        parts.push_back((w.da.narrow(2, k * H, H) * (k == rows.back() ? c_next : c_prev)).sum({0, 1}));
      dpeep.push_back(at::cat(parts));
    }
    if (s.ln_hh) {
      dg_hh.push_back(w.dln_hh_w), db_hh.push_back(w.dln_hh_b);
      if (lstm) dg_c.push_back(w.dln_c_w), db_c.push_back(w.dln_c_b);
    }
  }
  dx = need_x ? dx.view({T, B, s.X}) : none;
  auto st = [&](const std::vector<Tensor>& per) { return stacked(per, none); };
  return {dx,        st(dw_ih), st(dw_hh), st(dh0),   lstm ? st(dc0) : none, st(db),    st(db_hn),
          st(dpeep), st(dg_ih), st(db_ih), st(dg_hh), st(db_hh),             st(dg_c), st(db_c), st(dw_hr)};
}

// ---------------------------------------------------------------------------------------------
// linear recurrences
// ---------------------------------------------------------------------------------------------

void check_linear(const char* fn, const Tensor& a, const c10::optional<Tensor>& mask) {
  TORCH_CHECK_VALUE(a.dim() == 3, fn, ": a: expected a 3-D tensor (T, B, H), got shape ", a.sizes());
  const auto dtype = a.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, fn, ": a: expected float32 or float64, got ", dtype);
  TORCH_CHECK_VALUE(a.device().is_cpu(), fn, ": a: expected a CPU tensor, got one on ", a.device());
  if (mask.has_value()) expect(fn, "mask", *mask, {a.size(0), a.size(1)}, dtype);
}

Tensor linear_recurrence(const Tensor& a, const Tensor& b, const Tensor& h0, const c10::optional<Tensor>& mask,
                         bool reverse) {
  const char* fn = "rnnlab::linear_recurrence";
  check_linear(fn, a, mask);
  const int64_t T = a.size(0), B = a.size(1), H = a.size(2);
  expect(fn, "b", b, {T, B, H}, a.scalar_type());
  expect(fn, "h0", h0, {B, H}, a.scalar_type());
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  const Tensor m = mask.has_value() ? mask->contiguous() : Tensor();
  Tensor states = a.new_empty({T + 1, B, H});
  states[reverse ? T : 0].copy_(h0);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnlab::linear_recurrence", [&] {
    run_linear_forward<scalar_t, LinearCell<scalar_t>>(T, B, H, reverse, ptr<scalar_t>(m), ac.data_ptr<scalar_t>(),
                                                       bc.data_ptr<scalar_t>(), states.data_ptr<scalar_t>());
  });
  return states;
}

std::tuple<Tensor, Tensor, Tensor> linear_recurrence_backward(const Tensor& a, const c10::optional<Tensor>& mask,
                                                              const Tensor& states, const Tensor& g_states,
                                                              bool reverse) {
  const char* fn = "rnnlab::linear_recurrence_backward";
  check_linear(fn, a, mask);
  const int64_t T = a.size(0), B = a.size(1), H = a.size(2);
  expect(fn, "states", states, {T + 1, B, H}, a.scalar_type());
  expect(fn, "g_states", g_states, {T + 1, B, H}, a.scalar_type());
  const Tensor ac = a.contiguous(), sc = states.contiguous(), gc = g_states.contiguous();
  const Tensor m = mask.has_value() ? mask->contiguous() : Tensor();
  Tensor da = at::empty_like(ac), db = at::empty_like(ac), dh0 = a.new_empty({B, H});
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnlab::linear_recurrence_backward", [&] {
    run_linear_backward<scalar_t, LinearCell<scalar_t>>(T, B, H, reverse, ptr<scalar_t>(m), ac.data_ptr<scalar_t>(),
                                                        sc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                                        da.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(),
                                                        dh0.data_ptr<scalar_t>());
  });
  return {da, db, dh0};
}

// under torch.autocast (CPU): the operators take float32 arguments with autocast off inside — bf16/half tensors
// among the arguments are cast up (the cast is differentiable: autocast sits above autograd), float64 ones are
// left as they are — and recurrent_level runs its bf16 mode (use_bf16: bf16 GEMMs, float32 everything else)
// when autocast's dtype is bfloat16: the kernel sets the schema's ``bf16`` flag, so a traced graph records it
// and the backward (register_autograd's setup_context reads it) runs the same mode. Under float16 autocast the
// operators compute in float32 (no float16 GEMM is faster than float32 on the CPUs this targets).
void autocast_to_float(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  const auto& args = op.schema().arguments();
  const size_t first = stack->size() - args.size();
  const bool bf16 = at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16;
  for (size_t i = 0; i < args.size(); ++i) {
    auto& value = (*stack)[first + i];
    if (args[i].name() == "bf16" && op.schema().name() == "rnnlab::recurrent_level" && bf16) value = true;
    if (!value.isTensor()) continue;
    const Tensor t = value.toTensor();
    if (t.defined() && (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf)) value = t.to(at::kFloat);
  }
  op.callBoxed(stack);
}

#include "wavefront.h"  // rnnlab::recurrent_stack: a stack's unidirectional levels as a wavefront on threads

}  // namespace
}  // namespace rnnlab

#define RNNLAB_LEVEL_ARGS                                                                                     \
  "Tensor x, Tensor w_ih, Tensor w_hh, Tensor h0, Tensor? c0, Tensor? b, Tensor? b_hn, Tensor? mask, "       \
  "Tensor? peep, Tensor? h_mask, Tensor? ln_ih_w, Tensor? ln_ih_b, Tensor? ln_hh_w, Tensor? ln_hh_b, "        \
  "Tensor? ln_c_w, Tensor? ln_c_b, Tensor? zone"

TORCH_LIBRARY(rnnlab, m) {
  // w_hr (the LSTM's projection) last, with a default: calls written before it existed stay valid
  // keep=False: inference — gates and reserve come back empty, nothing is kept for a backward
  m.def("recurrent_level(" RNNLAB_LEVEL_ARGS ", Tensor? w_hr=None, *, str cell, bool coupled=False, bool keep=True, "
        "bool bf16=False) -> (Tensor states, Tensor cells, Tensor gates, Tensor c_pre, Tensor reserve)");
  m.def("recurrent_level_backward(" RNNLAB_LEVEL_ARGS ", Tensor states, Tensor cells, Tensor gates, "
        "Tensor c_pre, Tensor reserve, Tensor g_states, Tensor? g_cells, Tensor? g_gates, Tensor? g_c_pre, "
        "Tensor? w_hr=None, *, str cell, bool coupled=False, bool need_x=True, bool need_weights=True, "
        "bool bf16=False, Tensor? g_final=None, Tensor? g_final_c=None, bool out_rows=False) -> (Tensor dx, "
        "Tensor dw_ih, Tensor dw_hh, Tensor dh0, Tensor dc0, Tensor db, Tensor db_hn, Tensor dpeep, "
        "Tensor dln_ih_w, Tensor dln_ih_b, Tensor dln_hh_w, Tensor dln_hh_b, Tensor dln_c_w, Tensor dln_c_b, "
        "Tensor dw_hr)");
  m.def("recurrent_stack(Tensor x, Tensor[] w_ih, Tensor[] w_hh, Tensor h0, Tensor? c0, Tensor[] b, Tensor[] b_hn, "
        "Tensor? mask, Tensor? drop, *, str cell, int chunk=0) -> (Tensor states, Tensor cells, Tensor gates, "
        "Tensor reserve)");
  m.def("recurrent_stack_backward(Tensor x, Tensor[] w_ih, Tensor[] w_hh, Tensor h0, Tensor? c0, Tensor[] b, "
        "Tensor[] b_hn, Tensor? mask, Tensor? drop, Tensor states, Tensor cells, Tensor gates, Tensor reserve, "
        "Tensor? g_states, Tensor? g_cells, Tensor? g_gates, *, str cell, int chunk=0, bool need_x=True, "
        "bool need_weights=True) -> (Tensor dx, Tensor[] dw_ih, Tensor[] dw_hh, Tensor dh0, Tensor dc0, Tensor[] db, "
        "Tensor[] db_hn)");
  m.def("linear_recurrence(Tensor a, Tensor b, Tensor h0, Tensor? mask, *, bool reverse=False) -> Tensor states");
  m.def("linear_recurrence_backward(Tensor a, Tensor? mask, Tensor states, Tensor g_states, *, bool reverse=False) "
        "-> (Tensor da, Tensor db, Tensor dh0)");
  // which kernel recurrent_level's bf16 mode runs here, or why it runs float32 (rnnlab.engine.ops.bf16_kernel)
  m.def("bf16_kernel() -> str", &rnnlab::bf16_kernel);
  m.def("cell_step(Tensor x, Tensor h, Tensor? c, Tensor? w_ihT, Tensor? w_hhT, Tensor? b, Tensor? b_hn, *, str cell, "
        "Tensor? w_ih_blocks=None, Tensor? w_hh_blocks=None, bool backwards=False) -> (Tensor h, Tensor c)");
  m.def("column_blocks(Tensor w) -> Tensor");
}

TORCH_LIBRARY_IMPL(rnnlab, AutocastCPU, m) {
  for (const char* name : {"recurrent_level", "recurrent_level_backward", "linear_recurrence", "linear_recurrence_backward",
                           "recurrent_stack", "recurrent_stack_backward"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&rnnlab::autocast_to_float>());
}

TORCH_LIBRARY_IMPL(rnnlab, CPU, m) {
  m.impl("recurrent_level", &rnnlab::recurrent_level);
  m.impl("recurrent_level_backward", &rnnlab::recurrent_level_backward);
  m.impl("recurrent_stack", &rnnlab::recurrent_stack);
  m.impl("recurrent_stack_backward", &rnnlab::recurrent_stack_backward);
  m.impl("linear_recurrence", &rnnlab::linear_recurrence);
  m.impl("cell_step", &rnnlab::cell_step);
  m.impl("column_blocks", &rnnlab::column_blocks);
  m.impl("linear_recurrence_backward", &rnnlab::linear_recurrence_backward);
}

// ---------------------------------------------------------------------------------------------
// bench only: rnnlab::time_step_gemms — the seconds one training step's per-step recurrent GEMMs take on
// their own, for the engine benchmark's split of a step (rnnlab.bench.split); with bf16, as the bf16 mode runs
// them (h and the gradient rows rounded to bf16 per step; brgemm.h's products on W_hh packed once, else MKL's bf16
// GEMM). Over T steps: forward
// (B, H) · W_hhᵀ (H, GH) as the loop runs it (the first ``first`` columns, then the rest: the GRU reset="before"
// runs its n block as a second GEMM), and backward's (B, GH) · W_hh (GH, H) likewise, through the loop's own
// Loop::product and product_back (so the same kernel: BLAS, the small-rows kernel or the row-by-row product),
// with the same row strides and BLAS thread rule as the driver (each_direction). Buffers are allocated first.
// With rows, as a step split by row runs them: each half of the batch its own products on a thread of its own, one
// BLAS thread each (split.h's run_rows), both halves timed together.
// ---------------------------------------------------------------------------------------------

#include <chrono>

namespace rnnlab {
namespace {

// One thread's per-step products over B rows: its buffers, made before the clock starts, and the loop's own
// Loop::product / product_back, chosen by make_loop's rules (the bf16 mode's, the small-rows kernel, the row-by-row
// product or BLAS)
struct StepGemms {
  int64_t B, H, GH, first;
  bool bf16;
  std::vector<float> w_hhT, w_hh, h, hh, d, dh;
  std::vector<bf16_t> w_hhT16, w_hh16;
  Loop<float> k;
  StepGemms(int64_t B_, int64_t H_, int64_t GH_, int64_t first_, bool bf16_)
      : B(B_), H(H_), GH(GH_), first(first_), bf16(bf16_), w_hhT(H * GH, 0.01f), w_hh(GH * H, 0.01f),
        h(B * H, 0.5f), hh(B * GH), d(B * GH, 0.1f), dh(B * H), w_hhT16(bf16 ? H * GH : 0, to_bf16(0.01f)),
        w_hh16(bf16 ? GH * H : 0, to_bf16(0.01f)) {
    k.B = B, k.H = k.P = H, k.ldw = GH;
    k.w_hhT = w_hhT.data(), k.w_hh = w_hh.data();
    k.dot = dot_rows(B, GH * H);
    k.small = !k.dot && small_rows(B, GH * H, at::kFloat);
    k.gemm_threads = step_threads(B, GH, H);  // a laid-out product's threads, as the driver's (make_loop)
    if (bf16) {
      k.w_hhT16 = w_hhT16.data(), k.w_hh16 = w_hh16.data(), k.in16.assign(B * std::max(H, GH), bf16_t(0));
      pack_bf16(k);
    }
    lay_out_forward(k, GH, false), lay_out_backward(k);  // the float32 loop's blocked W_hh (driver.h)
  }
  void run(int64_t T) {
    const int64_t rest = GH - first;
    for (int64_t s = 0; s < T; ++s) {
      k.product(h.data(), 0, first, hh.data(), GH);
      if (rest) k.product(h.data(), first, rest, hh.data() + first, GH);
    }
    for (int64_t s = 0; s < T; ++s) {
      if (rest) k.product_back(d.data() + first, GH, first, rest, 0.f, dh.data());
      k.product_back(d.data(), GH, 0, first, rest ? 1.f : 0.f, dh.data());
    }
  }
};

double time_step_gemms(int64_t B, int64_t H, int64_t GH, int64_t first, int64_t T, bool bf16, bool rows) {
  TORCH_CHECK_VALUE(B > 0 && H > 0 && T > 0 && 0 < first && first <= GH,
                    "rnnlab::time_step_gemms: expected B, H, T > 0 and 0 < first <= GH");
  TORCH_CHECK_VALUE(!bf16 || bf16_on(), "rnnlab::time_step_gemms: bf16: expected False on this machine (",
                    bf16_kernel(), "), got True");
  TORCH_CHECK_VALUE(!rows || B >= 2, "rnnlab::time_step_gemms: rows: expected B >= 2, got B = ", B);
  if (rows) {  // split by row: each half of the batch its own products on a thread of its own (split.h's run_rows)
    StepGemms a(B / 2, H, GH, first, bf16), b(B - B / 2, H, GH, first, bf16);
    const auto t0 = std::chrono::steady_clock::now();
    const bool ran = run_rows(B, [&](int64_t b0, int64_t) { (b0 == 0 ? a : b).run(T); });
    TORCH_CHECK(ran, "rnnlab::time_step_gemms: rows: OpenMP gave no second thread");
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  StepGemms one(B, H, GH, first, bf16);
  BlasThreads guard(step_threads(B, GH, H));  // with the driver's BLAS thread rule (each_direction)
  const auto t0 = std::chrono::steady_clock::now();
  one.run(T);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace
}  // namespace rnnlab

TORCH_LIBRARY_FRAGMENT(rnnlab, m) {
  m.def("time_step_gemms(int B, int H, int GH, int first, int T, bool bf16=False, bool rows=False) -> float",
        &rnnlab::time_step_gemms);
}

// ---------------------------------------------------------------------------------------------
// tests only: rnnlab::activation — the cells' own activations (pointwise.h's act::tanh, act::sigmoid) over a
// float32 or float64 tensor, run by the same kernel clone the cells run on this CPU, so that a test can hold
// them against the correctly rounded values over every float32 input (tests/engine/test_activations.py)
// ---------------------------------------------------------------------------------------------

namespace rnnlab {
namespace {

template <typename T, bool SIGMOID>
RNNLAB_KERNEL void activate(int64_t n, const T* __restrict x, T* __restrict y) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] = SIGMOID ? act::sigmoid(x[j]) : act::tanh(x[j]);
}

Tensor activation(const Tensor& x, c10::string_view name) {
  const char* fn = "rnnlab::activation";
  TORCH_CHECK_VALUE(name == "tanh" || name == "sigmoid", fn, ": name: expected 'tanh' or 'sigmoid', got '",
                    std::string(name), "'");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, fn,
                   ": x: expected float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device().is_cpu(), fn, ": x: expected a CPU tensor, got one on ", x.device());
  const Tensor xc = x.contiguous();
  Tensor y = at::empty_like(xc);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnlab::activation", [&] {
    if (name == "sigmoid")
      activate<scalar_t, true>(xc.numel(), xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
    else
      activate<scalar_t, false>(xc.numel(), xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
  });
  return y;
}

// tests only: rnnlab::small_gemm — small_gemm.h's kernel, the one Loop::small runs, on 2-D float32 tensors:
// a (M, K) · b (K, N) + beta · c, with c's old contents kept in a copy (tests/engine/test_small_gemm.py checks
// it against torch.mm)
Tensor small_gemm_op(const Tensor& a, const Tensor& b, const Tensor& c, double beta) {
  const char* fn = "rnnlab::small_gemm";
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"a", a}, {"b", b}, {"c", c}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, fn, ": ", name, ": expected float32, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.dim() == 2 && t.device().is_cpu(), fn, ": ", name, ": expected a 2-D CPU tensor, got shape ",
                      t.sizes(), " on ", t.device());
  }
  TORCH_CHECK_VALUE(b.size(0) == a.size(1) && c.size(0) == a.size(0) && c.size(1) == b.size(1), fn,
                    ": expected a (M, K), b (K, N), c (M, N), got ", a.sizes(), ", ", b.sizes(), ", ", c.sizes());
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  Tensor out = c.clone(at::MemoryFormat::Contiguous);
  small_gemm(a.size(0), b.size(1), a.size(1), ac.data_ptr<float>(), a.size(1), bc.data_ptr<float>(), b.size(1),
             static_cast<float>(beta), out.data_ptr<float>(), b.size(1));
  return out;
}

// rnnlab::small_gemv (tests) — small_gemm.h's out (N) = w (N, K) · a (K), the batch-1 product Loop::dot runs in float32
Tensor small_gemv_op(const Tensor& w, const Tensor& a, bool backwards) {
  const char* fn = "rnnlab::small_gemv";
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"w", w}, {"a", a}})
    TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, fn, ": ", name, ": expected float32, got ", t.scalar_type());
  TORCH_CHECK_VALUE(w.dim() == 2 && a.dim() == 1 && w.size(1) == a.size(0) && w.device().is_cpu() && a.device().is_cpu(),
                    fn, ": expected CPU tensors w (N, K) and a (K), got shapes ", w.sizes(), " and ", a.sizes());
  const Tensor wc = w.contiguous(), ac = a.contiguous();
  Tensor out = at::empty({w.size(0)}, w.options());
  small_gemv(w.size(0), w.size(1), ac.data_ptr<float>(), wc.data_ptr<float>(), w.size(1), out.data_ptr<float>(),
             backwards);
  return out;
}

// rnnlab::splits_units: whether a plain one-direction level (no variants, no projection) of this cell and size runs
// split by unit (split.h) on this thread count: the stack's rule (engine/wavefront.py) keeps such levels off the
// wavefront in inference, since each level already uses both cores
Shape plain_level(c10::string_view cell, int64_t B, int64_t H) {  // a stack's upper level: X = H, float32
  Shape s{};
  s.kind = kind_of(cell);
  s.D = 1, s.B = B, s.H = s.P = H, s.T = 1, s.X = H;
  s.GX = input_gates(s.kind, false) * H, s.GH = stored_gates(s.kind) * H;
  s.dtype = at::kFloat;
  return s;
}
bool splits_units(c10::string_view cell, int64_t B, int64_t H, bool keep) {
  return split_units(plain_level(cell, B, H), false, keep);
}

// rnnlab::splits_level: whether such a level's loop runs on two threads of its own, split by unit or by row
// (split.h): the stack's rule keeps those levels off the wavefront
bool splits_level(c10::string_view cell, int64_t B, int64_t H, bool keep) {
  const Shape s = plain_level(cell, B, H);
  return split_rows(s, false, keep) || split_units(s, false, keep);
}
// rnnlab::splits_rows: whether it runs split by row (in float32 and in the bf16 mode alike): engine "auto" runs the
// native LSTM under bf16 autocast there
bool splits_rows(c10::string_view cell, int64_t B, int64_t H, bool keep) {
  return split_rows(plain_level(cell, B, H), false, keep);
}

// rnnlab::directions_in_turn: whether a float32 bidirectional level runs its directions one after the other, each split
// by unit (directions_in_turn_pay): engine "auto" runs torch's oneDNN kernel for the LSTM there below 128 rows
bool directions_in_turn(c10::string_view cell, int64_t B, int64_t H, bool keep) {
  Shape s = plain_level(cell, B, H);
  s.D = 2;
  return directions_in_turn_pay(s, false, keep);
}
// rnnlab::swaps_weight_grad (tests): swap_weight_grad's rule for ∂W (GH, K) over ``rows`` rows
bool swaps_weight_grad_op(int64_t rows, int64_t GH, int64_t K) { return swap_weight_grad(rows, GH, K); }

// rnnlab::route_counts (tests and the bench) — the operators' loops so far, by route: [forward on one loop, forward
// split by unit (split.h), forward with the small-rows kernel (small_gemm.h), backward split by unit, forward in the
// bf16 mode, forward split by row (split.h's run_rows), backward split by row]
int64_t l2_bytes_op() { return l2_bytes(); }

std::vector<int64_t> route_counts() {
  std::vector<int64_t> out;
  for (const auto& total : route_totals) out.push_back(total.load());
  return out;
}

// rnnlab::transpose (tests) — transpose.h's wᵀ of a 2-D float32 or float64 tensor, as the operators make W_hhᵀ
Tensor transpose_op(const Tensor& w) {
  const char* fn = "rnnlab::transpose";
  TORCH_CHECK_VALUE(w.dim() == 2, fn, ": w: expected a 2-D tensor, got shape ", w.sizes());
  TORCH_CHECK_TYPE(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble, fn,
                   ": w: expected float32 or float64, got ", w.scalar_type());
  TORCH_CHECK_VALUE(w.device().is_cpu(), fn, ": w: expected a CPU tensor, got one on ", w.device());
  return transposed(w.contiguous());
}

}  // namespace
}  // namespace rnnlab

TORCH_LIBRARY_FRAGMENT(rnnlab, m) {
  m.def("transpose(Tensor w) -> Tensor", &rnnlab::transpose_op);
  m.def("route_counts() -> int[]", &rnnlab::route_counts);
  // bytes pool.h holds for reuse now (tests)
  m.def("pool_bytes() -> int", [] { return int64_t(rnnlab::BlockPool::get().cached()); });
  // bf16 products run on packed W_hh through brgemm.h so far, and whether this machine runs them (tests, bench)
  m.def("brgemm_products() -> int", [] { return rnnlab::PackedBf16::products().load(); });
  m.def("brgemm_available() -> bool", [] { return rnnlab::PackedBf16::available(); });
  m.def("sgemm_packs() -> int", [] { return rnnlab::PackedB<float>::packs().load(); });  // blas.h's PackedB
  // float32 products run on blocked W_hh through brgemm.h so far (tests, bench)
  m.def("brgemm_f32_products() -> int", [] { return rnnlab::BlockedF32::products().load(); });
  // which kernel the float32 loops' per-step products and input chunks run on this machine now (the bench says)
  m.def("f32_products() -> str", [] {
    return std::string(rnnlab::BlockedF32::available() ? "brgemm (oneDNN's float32 micro-kernel, W blocked once a call)"
                                                    : "BLAS (MKL's SGEMM)");
  });
  m.def("l2_bytes() -> int", &rnnlab::l2_bytes_op);  // a core's L2 as the rules read it (sysconf; 1 MB if unknown)
  m.def("splits_units(str cell, int B, int H, bool keep) -> bool", &rnnlab::splits_units);
  m.def("splits_level(str cell, int B, int H, bool keep) -> bool", &rnnlab::splits_level);
  m.def("splits_rows(str cell, int B, int H, bool keep) -> bool", &rnnlab::splits_rows);
  m.def("directions_in_turn(str cell, int B, int H, bool keep) -> bool", &rnnlab::directions_in_turn);
  m.def("swaps_weight_grad(int rows, int GH, int K) -> bool", &rnnlab::swaps_weight_grad_op);
  m.def("activation(Tensor x, str name) -> Tensor", &rnnlab::activation);
  m.def("small_gemm(Tensor a, Tensor b, Tensor c, float beta) -> Tensor", &rnnlab::small_gemm_op);
  m.def("small_gemv(Tensor w, Tensor a, bool backwards=False) -> Tensor", &rnnlab::small_gemv_op);
}

// ---------------------------------------------------------------------------------------------
// rnnlab.engine._C.lean_forward — Python's direct entry for the latency calls (fused.run_lean: eager inference of
// a plain one-direction stack, outside tracing and autocast). Per level one recurrent_level(keep=False), the same
// function the operator's CPU kernel runs, each level's h_1..h_T the next level's input; then out (T, B, P) and the
// finals h_n (L, B, P) and, for the LSTM, c_n (L, B, H) (else an empty c_n). h0 / c0 (L, B, ·), or None for zeros;
// bf16: the operators' bf16 mode, as the AutocastCPU kernel would set it.
// One pybind call with typed arguments instead of one dispatcher call per level (whose Python binding matches its
// 18 arguments against the schema): at batch 1 that, not the steps, was most of a short call.
// ---------------------------------------------------------------------------------------------

#include <torch/extension.h>

namespace rnnlab {
namespace {

// lean_forward's level k: its Shape and Record from 2-D weights (w_ih (G·H, X), w_hh (rec, P), b (G·H), b_hn (H),
// w_hr (P, H)) and (B, ·) states (undefined: zeros), checked as check_level checks the operator's (D, …) ones, without
// the views and copies that cost more than a short call's steps (contiguous weights are used as they are)
Shape lean_level(const char* fn, Kind kind, const Tensor& x, const Opt* w, const Tensor& h0, const Tensor& c0,
                 int64_t k, Record* r) {
  auto level = [k](const std::string& name) { return name + " (level " + std::to_string(k) + ")"; };
  TORCH_CHECK_VALUE(w[0].has_value() && w[1].has_value(), fn, ": weights: level ", k, " has no w_ih or w_hh");
  Shape s{};
  s.kind = kind, s.coupled = false, s.D = 1, s.dtype = x.scalar_type();
  s.T = x.size(0), s.B = x.size(1), s.X = x.size(2);
  const Tensor& w_hh = *w[1];
  TORCH_CHECK_VALUE(w_hh.dim() == 2 && w_hh.size(1) >= 1, fn, ": ", level("w_hh"),
                    ": expected a 2-D tensor (G*H, P) with P >= 1, got shape ", w_hh.sizes());
  s.P = w_hh.size(1);
  s.proj = present(fn, "w_hr", w[4], kind == Kind::LSTM, "(only the LSTM has a projection)");
  if (s.proj)
    TORCH_CHECK_VALUE(w[4]->dim() == 2 && w[4]->size(0) == s.P && w[4]->size(1) >= 1, fn, ": ", level("w_hr"),
                      ": expected a 2-D tensor (P, H) with P = ", s.P, " (w_hh's columns), got shape ", w[4]->sizes());
  s.H = s.proj ? w[4]->size(1) : s.P;
  s.GX = input_gates(kind, false) * s.H, s.GH = stored_gates(kind) * s.H;
  s.bias = present(fn, "b", w[2], true, "");
  s.bias_hn = present(fn, "b_hn", w[3], kind == Kind::GRU_AFTER, "(only the GRU with reset after has b_hn)");
  expect(fn, level("w_ih"), *w[0], {s.GX, s.X}, s.dtype);
  expect(fn, level("w_hh"), w_hh, {s.rec(), s.P}, s.dtype);
  if (s.proj) expect(fn, level("w_hr"), *w[4], {s.P, s.H}, s.dtype);
  if (s.bias) expect(fn, level("b"), *w[2], {s.GX}, s.dtype);
  if (s.bias_hn) expect(fn, level("b_hn"), *w[3], {s.H}, s.dtype);
  if (h0.defined()) expect(fn, level("h0"), h0, {s.B, s.P}, s.dtype);
  if (c0.defined()) expect(fn, level("c0"), c0, {s.B, s.H}, s.dtype);
  auto own = [](const Opt& t) { return t.has_value() ? t->contiguous() : Tensor(); };
  r->w_ih = w[0]->contiguous(), r->w_hh = w_hh.contiguous(), r->b = own(w[2]), r->b_hn = own(w[3]);
  r->w_hr = own(w[4]), r->h0 = h0.defined() ? h0.contiguous() : h0, r->c0 = c0.defined() ? c0.contiguous() : c0;
  return s;
}

std::tuple<Tensor, Tensor, Tensor> lean_forward(const Tensor& x, const std::vector<Opt>& weights, const Opt& h0,
                                                const Opt& c0, const std::string& cell, bool bf16) {
  const char* fn = "rnnlab._C.lean_forward";
  TORCH_CHECK_VALUE(!weights.empty() && weights.size() % 5 == 0, fn, ": weights: expected (w_ih, w_hh, b, b_hn, ",
                    "w_hr) per level, got ", weights.size(), " tensors");
  TORCH_CHECK_VALUE(x.dim() == 3, fn, ": x: expected (T, B, X), got ", x.dim(), " dimensions");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, fn,
                   ": x: expected float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device().is_cpu(), fn, ": x: expected a CPU tensor, got one on ", x.device());
  const int64_t L = static_cast<int64_t>(weights.size() / 5), T = x.size(0), B = x.size(1);
  const Kind kind = kind_of(cell);
  const bool lstm = kind == Kind::LSTM;
  TORCH_CHECK_VALUE(!c0.has_value() || lstm, fn, ": c0: expected None for cell '", cell, "'");
  for (const Opt& t : {h0, c0})
    TORCH_CHECK_VALUE(!t.has_value() || (t->dim() == 3 && t->size(0) == L), fn, ": h0, c0: expected (", L,
                      ", B, ·) tensors (one row per level), got shape ", t->sizes());
  Tensor h_n, c_n = lstm ? Tensor() : x.new_empty({0});
  Tensor inp = x;
  for (int64_t k = 0; k < L; ++k) {
    std::vector<Record> recs(1);
    const Shape s = lean_level(fn, kind, inp, &weights[5 * k], h0.has_value() ? h0->select(0, k) : Tensor(),
                               c0.has_value() ? c0->select(0, k) : Tensor(), k, &recs[0]);
    if (k == 0) {  // the finals, every level's copied in (not views of the states, as torch.nn)
      h_n = at::empty({L, B, s.P}, x.options());
      if (lstm) c_n = at::empty({L, B, s.H}, x.options());
    }
    TORCH_CHECK_VALUE(h_n.size(2) == s.P && (!lstm || c_n.size(2) == s.H), fn, ": weights: level ", k,
                      " is ", s.P, " wide (H = ", s.H, "), expected the width of level 0, ", h_n.size(2),
                      lstm ? " (H = " + std::to_string(c_n.size(2)) + ")" : std::string(),
                      ": the finals h_n, c_n are one tensor for all levels");
    auto [states, cells, gates, c_pre, reserve] = run_level(s, recs, inp, Opt(), false, bf16);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnlab._C.lean_forward", [&] {
      const scalar_t* h_last = states.data_ptr<scalar_t>() + T * B * s.P;  // (D = 1, T+1, B, P): slot T
      std::copy(h_last, h_last + B * s.P, h_n.data_ptr<scalar_t>() + k * B * s.P);
      if (lstm) {  // keep=False: C's first and last slots
        const scalar_t* c_last = cells.data_ptr<scalar_t>() + B * s.H;
        std::copy(c_last, c_last + B * s.H, c_n.data_ptr<scalar_t>() + k * B * s.H);
      }
    });
    inp = states.view({T + 1, B, s.P}).narrow(0, 1, T);
  }
  return {inp, h_n, c_n};
}

}  // namespace
}  // namespace rnnlab

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lean_forward", &rnnlab::lean_forward, py::call_guard<py::gil_scoped_release>(), py::arg("x"),
        py::arg("weights"), py::arg("h0"), py::arg("c0"), py::arg("cell"), py::arg("bf16"));
}
