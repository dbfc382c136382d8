// The GRU, forward and backward side by side (cells/gru.py: the same equations, the seed's section 3).
//
//   z_t = σ(W_z·[h_{t-1}, x_t] + b_z)
//   r_t = σ(W_r·[h_{t-1}, x_t] + b_r)
//   h̃_t = tanh(W_h·[r_t * h_{t-1}, x_t] + b_h)            reset="before" (the seed's form)
//   h̃_t = tanh(W_xn x_t + b_n + r_t * (W_hn h_{t-1} + b_hn))  reset="after" (cuDNN's form)
//   h_t = (1 - z_t) * h_{t-1} + z_t * h̃_t
//
// Gate order of the fused rows: (z, r, n = h̃). Template flag AFTER picks the form. Reset "before"
// needs r_t before its second GEMM W_hn (r_t h_{t-1}), so it runs that GEMM (and, with layer norm, the
// candidate's own LN of it) between its two pointwise passes, forward and backward.
#pragma once

#include "../step.h"

namespace rnnlab {

template <typename T, bool AFTER>
struct GRUCell {
  static int64_t gx(int64_t H) { return 3 * H; }
  static int64_t first(int64_t H) { return AFTER ? 3 * H : 2 * H; }  // reset before: the z, r blocks only
  static int64_t rec(int64_t H) { return 3 * H; }
  static int64_t scratch(int64_t B, int64_t H) { return AFTER ? 3 * B * H : B * H; }
  static constexpr int64_t G = 3;  // stored gates
  static constexpr int64_t states = 1;
  // split.h may run its forward by unit; reset before in inference only (its backward is not split), each part's
  // W_hn (r h) reading the whole row of r h that both parts write (Loop::mid_step waits for the other's units)
  static constexpr bool unit_split = true;
  static constexpr bool unit_split_back = AFTER;
  static constexpr bool mid_product = !AFTER;

  static void forward(const Fw<T>& s, Loop<T>& k) {
    if (AFTER) {
      k.rows([&](int64_t b0, int64_t b1) { forward_after(s, k, b0, b1); });
      return;
    }
    const int64_t B = k.B, H = k.H, ld = k.state_ld();
    k.rows([&](int64_t b0, int64_t b1) { forward_zr(s, k, b0, b1); });
    if (s.live)  // rows outside their sequence: r·h = 0, so their W_hn product is 0 too
      for (int64_t b = 0; b < B; ++b)
        if (s.live[b] == T(0)) std::memset(s.extra + b * ld, 0, H * sizeof(T));
    if (k.mid_step) k.mid_step();  // a split part: the other part's units of r h are written too
    T* hn = k.scratch.data();
    k.product(s.extra - k.j0, 2 * H, H, hn, H);  // W_hn (r_t h_{t-1}), over the whole row of r h
    if (k.norm.on())                      // the candidate's own LN(W_hn (r h)): gain and bias rows 2H:
      ln_rows<T>(B, H, s.live, hn, H, k.norm.g_hh + 2 * H, k.norm.b_hh + 2 * H, k.norm.nhat + s.t * B * H,
                 k.norm.nrstd + s.t * B);
    k.rows([&](int64_t b0, int64_t b1) { forward_n(s, k, hn, b0, b1); });
  }

  // z, r = σ(·);  rh = r h_in  (the input of the second GEMM, W_hn · rh)
  static RNNLAB_KERNEL void forward_zr(const Fw<T>& s, const Loop<T>& k, int64_t b0, int64_t b1) {
    const int64_t H = k.H, GH = 3 * H, ld = k.state_ld();
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const T* __restrict x_ = s.xp + b * GH;
      const T* __restrict xb = s.xb;
      const T* __restrict hh_ = s.hh + b * 2 * H;
      const T* __restrict hp = s.h_in + b * ld;
      T* __restrict g_ = s.gate + b * GH;
      T* __restrict rh_ = s.extra + b * ld;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T z = act::sigmoid(x_[j] + xb[j] + hh_[j]);              // z_t
        const T r = act::sigmoid(x_[H + j] + xb[H + j] + hh_[H + j]);  // r_t
        g_[j] = z;
        g_[H + j] = r;
        rh_[j] = r * hp[j];  // r_t * h_{t-1}
      }
    }
  }

  // n = tanh(W_xn x + b_n + W_hn (r h_{t-1}));  h_t = (1 - z) h_{t-1} + z n
  static RNNLAB_KERNEL void forward_n(const Fw<T>& s, const Loop<T>& k, const T* __restrict hn, int64_t b0, int64_t b1) {
    const int64_t H = k.H, GH = 3 * H, ld = k.state_ld();
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const T* __restrict x_ = s.xp + b * GH;
      const T* __restrict xb = s.xb;
      const T* __restrict hn_ = hn + b * H;
      const T* __restrict hp = s.h_prev + b * ld;
      T* __restrict g_ = s.gate + b * GH;
      T* __restrict h_ = s.h + b * ld;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T z = g_[j];
        const T n = act::tanh(x_[2 * H + j] + xb[2 * H + j] + hn_[j]);  // h̃_t
        g_[2 * H + j] = n;
        h_[j] = hp[j] + z * (n - hp[j]);  // h_t = (1 - z_t) h_{t-1} + z_t h̃_t
      }
    }
  }

  // z, r = σ(·);  hn = W_hn h_{t-1} + b_hn;  n = tanh(W_xn x + b_n + r hn);  h_t = (1 - z) h_{t-1} + z n
  static RNNLAB_KERNEL void forward_after(const Fw<T>& s, const Loop<T>& k, int64_t b0, int64_t b1) {
    const int64_t H = k.H, GH = 3 * H, ld = k.state_ld();
    const T* __restrict b_hn = k.b_hn;
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const T* __restrict x_ = s.xp + b * GH;
      const T* __restrict xb = s.xb;
      const T* __restrict hh_ = s.hh + b * GH;
      const T* __restrict hp = s.h_prev + b * ld;
      T* __restrict g_ = s.gate + b * GH;
      T* __restrict hn_ = s.extra + b * H;
      T* __restrict h_ = s.h + b * ld;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T z = act::sigmoid(x_[j] + xb[j] + hh_[j]);
        const T r = act::sigmoid(x_[H + j] + xb[H + j] + hh_[H + j]);
        const T hn = hh_[2 * H + j] + b_hn[j];
        const T n = act::tanh(x_[2 * H + j] + xb[2 * H + j] + r * hn);
        g_[j] = z;
        g_[H + j] = r;
        g_[2 * H + j] = n;
        hn_[j] = hn;
        h_[j] = hp[j] + z * (n - hp[j]);
      }
    }
  }

  static Grad<T> backward(const Bw<T>& s, Loop<T>& k) {
    const int64_t B = k.B, H = k.H, GH = 3 * H;
    if (AFTER) {  // (dhh: rows of the layer's width, split.h's parts included)
      T* dhh = k.scratch.data();
      k.rows([&](int64_t b0, int64_t b1) { backward_after(s, k, dhh, b0, b1); });
      return {dhh, 3 * k.state_ld()};
    }
    k.rows([&](int64_t b0, int64_t b1) { backward_zn(s, k, b0, b1); });
    const T* dn = s.da + 2 * H;  // ∂ W_hn (r h): the candidate's pre-activation gradient, through its LN
    if (k.norm.on()) {
      T* dhh_t = k.norm.dhh + s.t * B * GH;
      ln_rows_back<T>(B, H, s.live, s.da + 2 * H, GH, k.norm.g_hh + 2 * H, k.norm.nhat + s.t * B * H,
                      k.norm.nrstd + s.t * B, dhh_t + 2 * H, GH, k.ngrads->g_hh.data() + 2 * H,
                      k.ngrads->b_hh.data() + 2 * H, k.ln_step.data());
      dn = dhh_t + 2 * H;
    }
    T* drh = k.scratch.data();
    k.product_back(dn, GH, 2 * H, H, T(0), drh);  // ∂(r_t h_{t-1}) = ∂n_pre · W_hn
    k.rows([&](int64_t b0, int64_t b1) { backward_r(s, k, drh, b0, b1); });
    return {s.da, GH};  // the z, r blocks
  }

  // first pass (before the GEMM drh = ∂n_pre · W_hn): z and n, and dh_{t-1}'s direct part (1 - z) dh
  static RNNLAB_KERNEL void backward_zn(const Bw<T>& s, const Loop<T>& k, int64_t b0, int64_t b1) {
    const int64_t H = k.H, GH = 3 * H;
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const int64_t r = b * H, q = b * GH;
      const T* __restrict g_ = s.gate + q;
      const T* __restrict gg = s.gg + q;
      const T* __restrict dh = s.dh + r;
      const T* __restrict hp = s.h_prev + r;
      const T* __restrict ghp = s.gh_prev + r;
      T* __restrict da = s.da + q;
      T* __restrict dhp = s.dh_prev + r;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T z = g_[j], n = g_[2 * H + j];
        const T dz = dh[j] * (n - hp[j]) + gg[j];  // h_t = h_{t-1} + z_t (h̃_t - h_{t-1})
        const T dn = dh[j] * z + gg[2 * H + j];
        da[j] = dz * z * (T(1) - z);
        da[2 * H + j] = dn * (T(1) - n * n);  // h̃_t = tanh(·)
        dhp[j] = dh[j] * (T(1) - z) + ghp[j];
      }
    }
  }

  // second pass: r, from drh = ∂(r h_in); and rh's contribution r · drh to the recurrent share of ∂h_{t-1}
  static RNNLAB_KERNEL void backward_r(const Bw<T>& s, const Loop<T>& k, const T* __restrict drh, int64_t b0, int64_t b1) {
    const int64_t H = k.H, GH = 3 * H;
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) continue;
      const int64_t r = b * H, q = b * GH;
      const T* __restrict rg_ = s.gate + q + H;
      const T* __restrict gg = s.gg + q + H;
      const T* __restrict hin = s.h_in + r;
      const T* __restrict drh_ = drh + r;
      T* __restrict da = s.da + q + H;
      T* __restrict acc = s.acc + r;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T rg = rg_[j];
        const T dr = drh_[j] * hin[j] + gg[j];  // r_t * h_{t-1}
        da[j] = dr * rg * (T(1) - rg);
        acc[j] += drh_[j] * rg;
      }
    }
  }

  // da goes to the input side (z, r, n pre-activations); dhh to the recurrent side (z, r, hn). Rows are the layer's
  // width H; the units [0, n) (split.h runs a part of the units)
  static RNNLAB_KERNEL void backward_after(const Bw<T>& s, const Loop<T>& k, T* __restrict dhh, int64_t b0, int64_t b1) {
    const int64_t H = k.state_ld(), n = k.H, GH = 3 * H;
    for (int64_t b = b0; b < b1; ++b) {
      if (skip(s.live, b)) {  // outside its sequence: nothing reaches W_hh or b_hn
        std::memset(dhh + b * GH, 0, GH * sizeof(T));
        std::memset(s.dhn + b * H, 0, n * sizeof(T));
        continue;
      }
      const int64_t r = b * H, q = b * GH;
      const T* __restrict g_ = s.gate + q;
      const T* __restrict gg = s.gg + q;
      const T* __restrict dh = s.dh + r;
      const T* __restrict hp = s.h_prev + r;
      const T* __restrict hn = s.extra + r;
      const T* __restrict ghp = s.gh_prev + r;
      T* __restrict da = s.da + q;
      T* __restrict dhh_ = dhh + q;
      T* __restrict dhn = s.dhn + r;
      T* __restrict dhp = s.dh_prev + r;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T z = g_[j], rg = g_[H + j], c = g_[2 * H + j];  // c: the candidate h̃_t
        const T dz = dh[j] * (c - hp[j]) + gg[j];
        const T dn = dh[j] * z + gg[2 * H + j];
        const T dn_pre = dn * (T(1) - c * c);
        const T dr = dn_pre * hn[j] + gg[H + j];  // h̃_t = tanh(W_xn x + b_n + r_t hn)
        const T dz_pre = dz * z * (T(1) - z);
        const T dr_pre = dr * rg * (T(1) - rg);
        da[j] = dz_pre;
        da[H + j] = dr_pre;
        da[2 * H + j] = dn_pre;
        dhh_[j] = dz_pre;
        dhh_[H + j] = dr_pre;
        dhh_[2 * H + j] = dn_pre * rg;
        dhn[j] = dn_pre * rg;
        dhp[j] = dh[j] * (T(1) - z) + ghp[j];
      }
    }
  }
};

}  // namespace rnnlab
