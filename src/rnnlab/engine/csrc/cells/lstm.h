// The LSTM, forward and backward side by side (cells/lstm.py: the same equations, the seed's section 2).
//
//   f_t = σ(W_f·[h_{t-1}, x_t] + b_f (+ p_f C_{t-1}))
//   i_t = σ(W_i·[h_{t-1}, x_t] + b_i (+ p_i C_{t-1}))       coupled (CIFG): i_t = 1 - f_t
//   C̃_t = tanh(W_C·[h_{t-1}, x_t] + b_C)
//   C_t = f_t * C_{t-1} + i_t * C̃_t
//   o_t = σ(W_o·[h_{t-1}, x_t] + b_o (+ p_o C_t))
//   h_t = o_t * tanh(C_t)                                    layer norm: o_t * tanh(LN(C_t))
//
// The gates are stored as (f, i, g = C̃, o) even when coupled; xp, the GEMM's output and da then have
// the G = 3 blocks (f, g, o). Template flags: COUPLED, PEEP (peepholes p_f, p_i, p_o), LN (layer norm
// of C_t here; the driver normalises the GEMM's output).
#pragma once

#include "../step.h"

namespace rnnlab {

template <typename T, bool COUPLED, bool PEEP, bool LN>
struct LSTMCell {
  static int64_t gx(int64_t H) { return (COUPLED ? 3 : 4) * H; }
  static int64_t first(int64_t H) { return gx(H); }
  static int64_t rec(int64_t H) { return gx(H); }
  static int64_t scratch(int64_t B, int64_t H) { return LN ? 3 * B * H : 0; }
  static constexpr int64_t G = 4;  // stored gates
  static constexpr int64_t states = 2;
  static constexpr bool unit_split = !COUPLED && !PEEP && !LN;  // split.h may run it by unit (LN: a row-wide pass)
  static constexpr bool unit_split_back = unit_split;
  static constexpr bool mid_product = false;
  static constexpr int64_t KG = COUPLED ? 1 : 2, KO = COUPLED ? 2 : 3;  // the blocks of g, o in xp, hh and da

  static void forward(const Fw<T>& s, Loop<T>& k) {
    k.rows([&](int64_t b0, int64_t b1) { gates(s, k, b0, b1); });
    if (LN) {  // h_t = o tanh(LN(C_t))
      const int64_t B = k.B, H = k.H;
      T* y = k.scratch.data();
      std::memcpy(y, s.c, B * H * sizeof(T));
      ln_rows<T>(B, H, s.live, y, H, k.norm.g_c, k.norm.b_c, k.norm.chat + s.t * B * H, k.norm.crstd + s.t * B);
      for (int64_t b = 0; b < B; ++b) {
        if (skip(s.live, b)) continue;
        const T* o = s.gate + b * 4 * H + 3 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) s.h[b * H + j] = o[j] * act::tanh(y[b * H + j]);
      }
    }
  }

  // rows [b0, b1) of the step
  static RNNLAB_KERNEL void gates(const Fw<T>& s, const Loop<T>& k, int64_t b0, int64_t b1) {
    const int64_t H = k.H, GX = gx(H), GH = 4 * H, ld = k.state_ld();
    const T *__restrict pf = k.pf, *__restrict pi = k.pi, *__restrict po = k.po;
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const T* __restrict x_ = s.xp + b * GX;
      const T* __restrict xb = s.xb;
      const T* __restrict hh_ = s.hh + b * GX;
      const T* __restrict cp = s.c_prev + b * ld;
      T* __restrict g_ = s.gate + b * GH;
      T* __restrict c_ = s.c + b * ld;
      T* __restrict h_ = s.h + b * ld;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        // each gate's pre-activation: x_t W_ihᵀ + b + h_{t-1} W_hhᵀ (+ its peephole)
        const T f = act::sigmoid(x_[j] + xb[j] + hh_[j] + (PEEP ? pf[j] * cp[j] : T(0)));  // f_t
        const T i = COUPLED ? T(1) - f
                            : act::sigmoid(x_[H + j] + xb[H + j] + hh_[H + j] + (PEEP ? pi[j] * cp[j] : T(0)));  // i_t
        const T g = act::tanh(x_[KG * H + j] + xb[KG * H + j] + hh_[KG * H + j]);  // C̃_t
        const T cn = f * cp[j] + i * g;                                            // C_t = f_t C_{t-1} + i_t C̃_t
        const T ao = x_[KO * H + j] + xb[KO * H + j] + hh_[KO * H + j];
        const T o = act::sigmoid(ao + (PEEP ? po[j] * cn : T(0)));  // o_t
        g_[j] = f;
        g_[H + j] = i;
        g_[2 * H + j] = g;
        g_[3 * H + j] = o;
        c_[j] = cn;
        h_[j] = o * act::tanh(cn);  // h_t = o_t tanh(C_t)
      }
    }
  }

  static Grad<T> backward(const Bw<T>& s, Loop<T>& k) {
    const int64_t B = k.B, H = k.H;
    T* tcn = LN ? k.scratch.data() : nullptr;  // tanh(LN(C_t))
    T* dyc = LN ? tcn + B * H : nullptr;       // ∂LN(C_t)
    T* dch = LN ? dyc + B * H : nullptr;       // the gradient reaching C_t through h_t
    if (LN) {
      const T* chat = k.norm.chat + s.t * B * H;
      for (int64_t b = 0; b < B; ++b) {
        if (skip(s.live, b)) continue;
        const int64_t r = b * H;
        const T* o = s.gate + b * 4 * H + 3 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const T tc = act::tanh(chat[r + j] * k.norm.g_c[j] + k.norm.b_c[j]);
          tcn[r + j] = tc;
          dyc[r + j] = s.dh[r + j] * o[j] * (T(1) - tc * tc);
        }
      }
      ln_rows_back<T>(B, H, s.live, dyc, H, k.norm.g_c, chat, k.norm.crstd + s.t * B, dch, H, k.ngrads->g_c.data(),
                      k.ngrads->b_c.data(), k.ln_step.data());
    }
    k.rows([&](int64_t b0, int64_t b1) { derivatives(s, k, tcn, dch, b0, b1); });
    return {s.da, gx(k.state_ld())};
  }

  // ∂ of each equation above, bottom up; ``tcn``, ``dch`` (layer norm): tanh(LN(C_t)) and the gradient
  // reaching C_t through h_t, in place of tanh(C_t) and ∂h_t o (1 - tanh²(C_t)). Rows are the layer's width H;
  // the units [0, n) (split.h runs a part of the units; layer norm never is)
  static RNNLAB_KERNEL void derivatives(const Bw<T>& s, const Loop<T>& k, const T* __restrict tcn,
                                        const T* __restrict dch, int64_t b0, int64_t b1) {
    const int64_t H = k.state_ld(), n = k.H, GX = gx(H), GH = 4 * H;
    const T *__restrict pf = k.pf, *__restrict pi = k.pi, *__restrict po = k.po;
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const int64_t r = b * H, q = b * GH;
      const T* __restrict g_ = s.gate + q;
      const T* __restrict gg = s.gg + q;
      const T* __restrict dh_ = s.dh + r;
      const T* __restrict c_ = s.c + r;
      const T* __restrict cp = s.c_prev + r;
      const T* __restrict gcp = s.gc_prev + r;
      const T* __restrict ghp = s.gh_prev + r;
      T* __restrict dc = s.dc + r;
      T* __restrict dhp = s.dh_prev + r;
      T* __restrict da_ = s.da + b * GX;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T f = g_[j], i = g_[H + j], g = g_[2 * H + j], o = g_[3 * H + j];
        const T dh = dh_[j];
        const T tc = LN ? tcn[r + j] : act::tanh(c_[j]);
        const T dao = (dh * tc + gg[3 * H + j]) * o * (T(1) - o);                 // ∂o_t's pre-activation
        const T through_h = LN ? dch[r + j] : dh * o * (T(1) - tc * tc);        // h_t = o_t tanh(C_t)
        const T dC = dc[j] + through_h + (PEEP ? dao * po[j] : T(0));     // ∂C_t (o's peephole sees C_t)
        const T df = dC * cp[j] + gg[j];                                   // C_t = f_t C_{t-1} + i_t C̃_t
        const T di = dC * g + gg[H + j];
        const T dag = (dC * i + gg[2 * H + j]) * (T(1) - g * g);                // C̃_t = tanh(·)
        T dcp;
        if (COUPLED) {
          const T daf = (df - di) * f * (T(1) - f);  // i_t = 1 - f_t
          da_[j] = daf;
          dcp = dC * f + (PEEP ? daf * pf[j] : T(0));
        } else {
          const T daf = df * f * (T(1) - f);
          const T dai = di * i * (T(1) - i);
          da_[j] = daf;
          da_[H + j] = dai;
          dcp = dC * f + (PEEP ? daf * pf[j] + dai * pi[j] : T(0));
        }
        da_[KG * H + j] = dag;
        da_[KO * H + j] = dao;
        dc[j] = dcp + gcp[j];  // ∂C_{t-1}
        dhp[j] = ghp[j];
      }
    }
  }
};

}  // namespace rnnlab
