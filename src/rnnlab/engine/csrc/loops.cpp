// The fast engine's per-step loops: BPTT written by hand, one translation unit.
//
// The structure of cuDNN, oneDNN and haste. Python (engine/fused.py) does the input projection
// of all steps as one GEMM before ``forward_loop`` and the weight/input gradients as GEMMs over
// all T·B rows after ``backward_loop``; these loops do only what must be sequential:
//
//   forward, per step:  one GEMM  hh = h_{t-1} · W_hhᵀ          (GRU reset="before": two, r·h first)
//                       (W_hhᵀ is passed as a contiguous (H, G·H) copy: MKL is faster on it for small B)
//                       one fused pass over the cell's pointwise maths, writing the activated
//                       gates (T, B, G·H) and the states (T+1, B, H)
//   backward, per step: one fused pass for the gate gradients ∂a (T, B, G·H)
//                       one GEMM  dh_{t-1} += ∂a · W_hh             (GRU reset="before": two)
//
// Gate order of the fused rows (the cells' GATES): RNN (h), LSTM (f, i, g, o), GRU (z, r, n).
// Derivatives are written in terms of the activations' outputs (σ' = y(1 - y), tanh' = 1 - y²).
//
// State layout: states[0] = h_0 and states[t+1] = h after step t for the forward direction;
// the reverse direction runs t = T-1 … 0 and keeps states[T] = h_0, states[t] = h after step t,
// so its output over time is the slice states[0:T] — no reversal copy.
//
// Lengths: ``mask`` (T, B) is 1 where step t is inside sequence b. A masked row keeps its state,
// its gates are zero, and in the backward pass its gradient passes straight through.
//
// Every buffer is allocated by the caller or before the loop; nothing is allocated inside it.
// Compiled with -ffast-math so g++ vectorises tanh through glibc's vector maths (libmvec); the
// kernels are written so that never overflows (σ(a) = ½ + ½ tanh(a/2)), and the AVX2 clones are
// picked at run time (target_clones), so the build does not depend on the machine it ran on.

#include <torch/extension.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*);
// MKL (torch's BLAS here): the calling thread's BLAS thread count; weak, so another BLAS still links
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
}

namespace {

enum Cell { RNN_TANH = 0, RNN_RELU = 1, LSTM = 2, GRU_BEFORE = 3, GRU_AFTER = 4 };

// row-major C (M, N) = op(A) · op(B) + beta · C, with op(A) (M, K) and op(B) (K, N);
// BLAS is column-major, so it computes Cᵀ = op(B)ᵀ · op(A)ᵀ.
inline void blas(const char* tb, const char* ta, const int* n, const int* m, const int* k, const float* one,
                 const float* B, const int* ldb, const float* A, const int* lda, const float* beta, float* C,
                 const int* ldc) {
  sgemm_(tb, ta, n, m, k, one, B, ldb, A, lda, beta, C, ldc);
}
inline void blas(const char* tb, const char* ta, const int* n, const int* m, const int* k, const double* one,
                 const double* B, const int* ldb, const double* A, const int* lda, const double* beta, double* C,
                 const int* ldc) {
  dgemm_(tb, ta, n, m, k, one, B, ldb, A, lda, beta, C, ldc);
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const T one = 1;
  blas(&tb, &ta, &n, &m, &k, &one, B, &lb, A, &la, &beta, C, &lc);
}

// the per-step GEMMs of a small layer are a few µs: on a busy machine, waking a second BLAS thread
// for each can cost more than the GEMM, so the caller says how many threads the loop's GEMMs get
class BlasThreads {
 public:
  explicit BlasThreads(int64_t n) : old_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(static_cast<int>(n)) : 0) {}
  ~BlasThreads() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(old_);
  }

 private:
  int old_;
};

template <typename T>
inline T sigmoid(T a) {
  return T(0.5) + T(0.5) * std::tanh(T(0.5) * a);
}

#define RNNLAB_KERNEL __attribute__((target_clones("avx2", "default")))

// ---------------------------------------------------------------------------------------------
// forward pointwise passes over the B rows of one step. ``live`` (B) is the step's mask row, or
// null when every row is inside its sequence; rows outside are skipped here and fixed up by the loop.
// Row strides: xp and gate G·H, hh ``ldh``, states H.
// ---------------------------------------------------------------------------------------------

template <typename T>
inline bool skip(const T* live, int64_t b) {
  return live && live[b] == T(0);
}

// ReLU and its derivative on the bits: -ffast-math lets g++ assume no NaN, so `a > 0 ? a : 0`
// may become a max that drops a NaN; torch.relu keeps it (NaN in, NaN out), and so must we.
template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using U = uint32_t;
  static constexpr U inf = 0x7f800000u;
};
template <>
struct Bits<double> {
  using U = uint64_t;
  static constexpr U inf = 0x7ff0000000000000ull;
};

// max(a, 0), NaN kept: a negative (sign bit set) non-NaN a gives 0
template <typename T>
inline T relu_kept(T a) {
  using U = typename Bits<T>::U;
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  U u;
  std::memcpy(&u, &a, sizeof(T));
  const bool zero = (u & sign) && (u & ~sign) <= Bits<T>::inf;
  u = zero ? U(0) : u;
  std::memcpy(&a, &u, sizeof(T));
  return a;
}

// the gradient through y = relu(a), from y: d where y != 0 (NaN included, as torch's threshold_backward), else 0
template <typename T>
inline T relu_kept_grad(T y, T d) {
  using U = typename Bits<T>::U;
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  U u;
  std::memcpy(&u, &y, sizeof(T));
  return (u & ~sign) == 0 ? T(0) : d;
}

// h_t = φ(a),  a = x_t W_ihᵀ + b + h_{t-1} W_hhᵀ
template <typename T>
RNNLAB_KERNEL void fw_rnn(bool relu, int64_t B, int64_t H, const T* live, const T* __restrict xp,
                          const T* __restrict hh, T* __restrict gate, T* __restrict h) {
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const T* x_ = xp + b * H;
    const T* hh_ = hh + b * H;
    T* g_ = gate + b * H;
    T* h_ = h + b * H;
    if (relu) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T y = relu_kept(x_[j] + hh_[j]);
        g_[j] = y;
        h_[j] = y;
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T y = std::tanh(x_[j] + hh_[j]);
        g_[j] = y;
        h_[j] = y;
      }
    }
  }
}

// f, i, o = σ(·), g = C̃ = tanh(·);  C_t = f C_{t-1} + i g;  h_t = o tanh(C_t)
template <typename T>
RNNLAB_KERNEL void fw_lstm(int64_t B, int64_t H, const T* live, const T* __restrict xp, const T* __restrict hh,
                           const T* __restrict c_prev, T* __restrict gate, T* __restrict c, T* __restrict h) {
  const int64_t GH = 4 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const T* x_ = xp + b * GH;
    const T* hh_ = hh + b * GH;
    const T* cp = c_prev + b * H;
    T* g_ = gate + b * GH;
    T* c_ = c + b * H;
    T* h_ = h + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T f = sigmoid(x_[j] + hh_[j]);
      const T i = sigmoid(x_[H + j] + hh_[H + j]);
      const T g = std::tanh(x_[2 * H + j] + hh_[2 * H + j]);
      const T o = sigmoid(x_[3 * H + j] + hh_[3 * H + j]);
      const T cn = f * cp[j] + i * g;
      g_[j] = f;
      g_[H + j] = i;
      g_[2 * H + j] = g;
      g_[3 * H + j] = o;
      c_[j] = cn;
      h_[j] = o * std::tanh(cn);
    }
  }
}

// z, r = σ(·);  rh = r h_{t-1}  (the input of the second GEMM, W_hn · rh)
template <typename T>
RNNLAB_KERNEL void fw_gru_before_zr(int64_t B, int64_t H, const T* live, const T* __restrict xp,
                                    const T* __restrict hh, const T* __restrict h_prev, T* __restrict gate,
                                    T* __restrict rh) {
  const int64_t GH = 3 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const T* x_ = xp + b * GH;
    const T* hh_ = hh + b * 2 * H;
    const T* hp = h_prev + b * H;
    T* g_ = gate + b * GH;
    T* rh_ = rh + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T z = sigmoid(x_[j] + hh_[j]);
      const T r = sigmoid(x_[H + j] + hh_[H + j]);
      g_[j] = z;
      g_[H + j] = r;
      rh_[j] = r * hp[j];
    }
  }
}

// n = tanh(W_xn x + b_n + W_hn (r h_{t-1}));  h_t = (1 - z) h_{t-1} + z n
template <typename T>
RNNLAB_KERNEL void fw_gru_before_n(int64_t B, int64_t H, const T* live, const T* __restrict xp,
                                   const T* __restrict hn, const T* __restrict h_prev, T* __restrict gate,
                                   T* __restrict h) {
  const int64_t GH = 3 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const T* x_ = xp + b * GH;
    const T* hn_ = hn + b * H;
    const T* hp = h_prev + b * H;
    T* g_ = gate + b * GH;
    T* h_ = h + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T z = g_[j];
      const T n = std::tanh(x_[2 * H + j] + hn_[j]);
      g_[2 * H + j] = n;
      h_[j] = hp[j] + z * (n - hp[j]);
    }
  }
}

// z, r = σ(·);  hn = W_hn h_{t-1} + b_hn;  n = tanh(W_xn x + b_n + r hn);  h_t = (1 - z) h_{t-1} + z n
template <typename T>
RNNLAB_KERNEL void fw_gru_after(int64_t B, int64_t H, const T* live, const T* __restrict xp, const T* __restrict hh,
                                const T* __restrict b_hn, const T* __restrict h_prev, T* __restrict gate,
                                T* __restrict hn_out, T* __restrict h) {
  const int64_t GH = 3 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const T* x_ = xp + b * GH;
    const T* hh_ = hh + b * GH;
    const T* hp = h_prev + b * H;
    T* g_ = gate + b * GH;
    T* hn_ = hn_out + b * H;
    T* h_ = h + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T z = sigmoid(x_[j] + hh_[j]);
      const T r = sigmoid(x_[H + j] + hh_[H + j]);
      const T hn = hh_[2 * H + j] + b_hn[j];
      const T n = std::tanh(x_[2 * H + j] + r * hn);
      g_[j] = z;
      g_[H + j] = r;
      g_[2 * H + j] = n;
      hn_[j] = hn;
      h_[j] = hp[j] + z * (n - hp[j]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// backward pointwise passes over the B rows of one step. dh, dc: gradients w.r.t. this step's h_t,
// C_t; gg: w.r.t. its gates; gh_prev, gc_prev: the outputs' own gradients at h_{t-1},
// C_{t-1}. They write da (the gradient w.r.t. the pre-activations) and dh_{t-1}'s direct part;
// rows outside their sequence are skipped and fixed up by the loop.
// ---------------------------------------------------------------------------------------------

template <typename T>
RNNLAB_KERNEL void bw_rnn(bool relu, int64_t B, int64_t H, const T* live, const T* __restrict gate,
                          const T* __restrict gg, const T* __restrict dh, const T* __restrict gh_prev,
                          T* __restrict da, T* __restrict dh_prev) {
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const int64_t r = b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T y = gate[r + j];
      const T d = dh[r + j] + gg[r + j];
      da[r + j] = relu ? relu_kept_grad(y, d) : d * (T(1) - y * y);
      dh_prev[r + j] = gh_prev[r + j];
    }
  }
}

template <typename T>
RNNLAB_KERNEL void bw_lstm(int64_t B, int64_t H, const T* live, const T* __restrict gate, const T* __restrict gg,
                           const T* __restrict c, const T* __restrict c_prev, const T* __restrict dh,
                           T* __restrict dc, const T* __restrict gc_prev, const T* __restrict gh_prev,
                           T* __restrict da, T* __restrict dh_prev) {
  const int64_t GH = 4 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const int64_t r = b * H, q = b * GH;
    const T* g_ = gate + q;
    T* da_ = da + q;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T f = g_[j], i = g_[H + j], g = g_[2 * H + j], o = g_[3 * H + j];
      const T tc = std::tanh(c[r + j]);
      const T dC = dc[r + j] + dh[r + j] * o * (T(1) - tc * tc);  // ∂C_t, through h_t = o tanh(C_t) and onwards
      const T df = dC * c_prev[r + j] + gg[q + j];
      const T di = dC * g + gg[q + H + j];
      const T dg = dC * i + gg[q + 2 * H + j];
      const T d_o = dh[r + j] * tc + gg[q + 3 * H + j];
      da_[j] = df * f * (T(1) - f);
      da_[H + j] = di * i * (T(1) - i);
      da_[2 * H + j] = dg * (T(1) - g * g);
      da_[3 * H + j] = d_o * o * (T(1) - o);
      dc[r + j] = dC * f + gc_prev[r + j];  // ∂C_{t-1}
      dh_prev[r + j] = gh_prev[r + j];
    }
  }
}

// first pass (before the GEMM drh = ∂n_pre · W_hn): z and n, and dh_{t-1}'s direct part (1 - z) dh
template <typename T>
RNNLAB_KERNEL void bw_gru_before_zn(int64_t B, int64_t H, const T* live, const T* __restrict gate,
                                    const T* __restrict gg, const T* __restrict h_prev, const T* __restrict dh,
                                    const T* __restrict gh_prev, T* __restrict da, T* __restrict dh_prev) {
  const int64_t GH = 3 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const int64_t r = b * H, q = b * GH;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T z = gate[q + j], n = gate[q + 2 * H + j];
      const T dz = dh[r + j] * (n - h_prev[r + j]) + gg[q + j];
      const T dn = dh[r + j] * z + gg[q + 2 * H + j];
      da[q + j] = dz * z * (T(1) - z);
      da[q + 2 * H + j] = dn * (T(1) - n * n);
      dh_prev[r + j] = dh[r + j] * (T(1) - z) + gh_prev[r + j];
    }
  }
}

// second pass: r, from drh = ∂(r h_{t-1}); and rh's contribution r · drh to dh_{t-1}
template <typename T>
RNNLAB_KERNEL void bw_gru_before_r(int64_t B, int64_t H, const T* live, const T* __restrict gate,
                                   const T* __restrict gg, const T* __restrict h_prev, const T* __restrict drh,
                                   T* __restrict da, T* __restrict dh_prev) {
  const int64_t GH = 3 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const int64_t r = b * H, q = b * GH;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T rg = gate[q + H + j];
      const T dr = drh[r + j] * h_prev[r + j] + gg[q + H + j];
      da[q + H + j] = dr * rg * (T(1) - rg);
      dh_prev[r + j] += drh[r + j] * rg;
    }
  }
}

// da goes to the input side (z, r, n pre-activations); dhh to the recurrent side (z, r, hn)
template <typename T>
RNNLAB_KERNEL void bw_gru_after(int64_t B, int64_t H, const T* live, const T* __restrict gate,
                                const T* __restrict gg, const T* __restrict hn, const T* __restrict h_prev,
                                const T* __restrict dh, const T* __restrict gh_prev, T* __restrict da,
                                T* __restrict dhh, T* __restrict dhn, T* __restrict dh_prev) {
  const int64_t GH = 3 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const int64_t r = b * H, q = b * GH;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T z = gate[q + j], rg = gate[q + H + j], n = gate[q + 2 * H + j];
      const T dz = dh[r + j] * (n - h_prev[r + j]) + gg[q + j];
      const T dn = dh[r + j] * z + gg[q + 2 * H + j];
      const T dn_pre = dn * (T(1) - n * n);
      const T dr = dn_pre * hn[r + j] + gg[q + H + j];
      const T dz_pre = dz * z * (T(1) - z);
      const T dr_pre = dr * rg * (T(1) - rg);
      da[q + j] = dz_pre;
      da[q + H + j] = dr_pre;
      da[q + 2 * H + j] = dn_pre;
      dhh[q + j] = dz_pre;
      dhh[q + H + j] = dr_pre;
      dhh[q + 2 * H + j] = dn_pre * rg;
      dhn[r + j] = dn_pre * rg;
      dh_prev[r + j] = dh[r + j] * (T(1) - z) + gh_prev[r + j];
    }
  }
}


// ---------------------------------------------------------------------------------------------
// the LSTM's variants (lstm_forward_loop / lstm_backward_loop): peepholes p_f, p_i, p_o (zeros when
// absent), coupled (CIFG: i = 1 - f; xp, hh and da have the G = 3 blocks f, g, o) and recurrent
// dropout (the GEMM's input is h_{t-1} · mask). The gates are always stored as (f, i, g, o).
// ---------------------------------------------------------------------------------------------

// f = σ(a_f + p_f C_{t-1}), i = σ(a_i + p_i C_{t-1}) or 1 - f, g = tanh(a_g), C_t = f C_{t-1} + i g,
// o = σ(a_o + p_o C_t), h_t = o tanh(C_t)
template <typename T, bool COUPLED>
RNNLAB_KERNEL void fw_lstm_x(int64_t B, int64_t H, const T* live, const T* __restrict xp, const T* __restrict hh,
                             const T* __restrict pf, const T* __restrict pi, const T* __restrict po,
                             const T* __restrict c_prev, T* __restrict gate, T* __restrict c, T* __restrict h) {
  const int64_t GX = (COUPLED ? 3 : 4) * H, GH = 4 * H;
  const int64_t kg = COUPLED ? H : 2 * H, ko = COUPLED ? 2 * H : 3 * H;  // blocks of g, o in xp and hh
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const T* x_ = xp + b * GX;
    const T* hh_ = hh + b * GX;
    const T* cp = c_prev + b * H;
    T* g_ = gate + b * GH;
    T* c_ = c + b * H;
    T* h_ = h + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T f = sigmoid(x_[j] + hh_[j] + pf[j] * cp[j]);
      const T i = COUPLED ? T(1) - f : sigmoid(x_[H + j] + hh_[H + j] + pi[j] * cp[j]);
      const T g = std::tanh(x_[kg + j] + hh_[kg + j]);
      const T cn = f * cp[j] + i * g;
      const T o = sigmoid(x_[ko + j] + hh_[ko + j] + po[j] * cn);
      g_[j] = f;
      g_[H + j] = i;
      g_[2 * H + j] = g;
      g_[3 * H + j] = o;
      c_[j] = cn;
      h_[j] = o * std::tanh(cn);
    }
  }
}

// LN: h_t = o tanh(LN(C_t)); ``tcn`` is tanh(LN(C_t)) and ``dch`` the gradient reaching C_t through
// h_t (lstm_cell_ln_back), in place of tanh(C_t) and ∂h_t o (1 - tanh²(C_t))
template <typename T, bool COUPLED, bool LN>
RNNLAB_KERNEL void bw_lstm_x(int64_t B, int64_t H, const T* live, const T* __restrict gate, const T* __restrict gg,
                             const T* __restrict c, const T* __restrict c_prev, const T* __restrict pf,
                             const T* __restrict pi, const T* __restrict po, const T* __restrict dh,
                             T* __restrict dc, const T* __restrict gc_prev, const T* __restrict gh_prev,
                             T* __restrict da, T* __restrict dh_prev, const T* __restrict tcn, const T* __restrict dch) {
  const int64_t GX = (COUPLED ? 3 : 4) * H, GH = 4 * H;
  const int64_t kg = COUPLED ? H : 2 * H, ko = COUPLED ? 2 * H : 3 * H;
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const int64_t r = b * H, q = b * GH;
    const T* g_ = gate + q;
    T* da_ = da + b * GX;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T f = g_[j], i = g_[H + j], g = g_[2 * H + j], o = g_[3 * H + j];
      const T tc = LN ? tcn[r + j] : std::tanh(c[r + j]);
      const T dao = (dh[r + j] * tc + gg[q + 3 * H + j]) * o * (T(1) - o);
      const T through_h = LN ? dch[r + j] : dh[r + j] * o * (T(1) - tc * tc);
      const T dC = dc[r + j] + through_h + dao * po[j];  // o's peephole sees C_t
      const T df = dC * c_prev[r + j] + gg[q + j];
      const T di = dC * g + gg[q + H + j];
      const T dag = (dC * i + gg[q + 2 * H + j]) * (T(1) - g * g);
      T dcp;
      if (COUPLED) {
        const T daf = (df - di) * f * (T(1) - f);  // i = 1 - f
        da_[j] = daf;
        dcp = dC * f + daf * pf[j];
      } else {
        const T daf = df * f * (T(1) - f);
        const T dai = di * i * (T(1) - i);
        da_[j] = daf;
        da_[H + j] = dai;
        dcp = dC * f + daf * pf[j] + dai * pi[j];
      }
      da_[kg + j] = dag;
      da_[ko + j] = dao;
      dc[r + j] = dcp + gc_prev[r + j];  // ∂C_{t-1}
      dh_prev[r + j] = gh_prev[r + j];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// layer normalisation (the variant loops' layer_norm) and zoneout. LN over a row of W values:
//   y = g · â + b,  â = (a − μ) / σ,  σ = √(var + ε)  (μ, var over the row; var biased)
//   ∂a = (1/σ) (∂y g − mean(∂y g) − â · mean(∂y g · â))
// Rows outside their sequence are skipped: their saved â and 1/σ stay zero and their ∂a is zero.
// ---------------------------------------------------------------------------------------------

constexpr double LN_EPS = 1e-5;  // cells/variants.EPS

// in place over B rows of width W (row stride lda): a ← LN(a); â (B, W) and 1/σ (B) saved
template <typename T>
RNNLAB_KERNEL void ln_rows(int64_t B, int64_t W, const T* live, T* __restrict a, int64_t lda, const T* __restrict gain,
                           const T* __restrict bias, T* __restrict hat, T* __restrict rstd) {
  for (int64_t b = 0; b < B; ++b) {
    T* h_ = hat + b * W;
    if (skip(live, b)) {  // nothing computed: zeros saved
      std::memset(h_, 0, W * sizeof(T));
      rstd[b] = T(0);
      continue;
    }
    T* a_ = a + b * lda;
    T mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
    for (int64_t j = 0; j < W; ++j) mean += a_[j];
    mean /= T(W);
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < W; ++j) var += (a_[j] - mean) * (a_[j] - mean);
    const T rs = T(1) / std::sqrt(var / T(W) + T(LN_EPS));
    rstd[b] = rs;
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) {
      const T x = (a_[j] - mean) * rs;
      h_[j] = x;
      a_[j] = x * gain[j] + bias[j];
    }
  }
}

// ∂a (row stride ldo) from ∂y (row stride ldy) over B rows of width W; rows outside their sequence get
// zero. The gain's and bias's gradients Σ ∂y â and Σ ∂y gather into dgain, dbias (W, in double)
template <typename T>
RNNLAB_KERNEL void ln_rows_back(int64_t B, int64_t W, const T* live, const T* __restrict dy, int64_t ldy,
                                const T* __restrict gain, const T* __restrict hat, const T* __restrict rstd,
                                T* __restrict out, int64_t ldo, double* __restrict dgain, double* __restrict dbias,
                                T* __restrict step) {
  // step (2W scratch): this step's sums in T, vectorised, folded into the double totals once per step
  T* sg = step;
  T* sb = step + W;
  std::memset(step, 0, 2 * W * sizeof(T));
  for (int64_t b = 0; b < B; ++b) {
    T* o_ = out + b * ldo;
    if (skip(live, b)) {
      std::memset(o_, 0, W * sizeof(T));
      continue;
    }
    const T* d_ = dy + b * ldy;
    const T* h_ = hat + b * W;
    T s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < W; ++j) {
      const T g = d_[j] * gain[j];
      s1 += g;
      s2 += g * h_[j];
    }
    s1 /= T(W);
    s2 /= T(W);
    const T rs = rstd[b];
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) {
      o_[j] = rs * (d_[j] * gain[j] - s1 - h_[j] * s2);
      sg[j] += d_[j] * h_[j];
      sb[j] += d_[j];
    }
  }
  for (int64_t j = 0; j < W; ++j) {
    dgain[j] += double(sg[j]);
    dbias[j] += double(sb[j]);
  }
}

// the LSTM's h_t = o tanh(LN(C_t)), over the B rows of one step (after fw_lstm_x wrote C_t and o)
template <typename T>
RNNLAB_KERNEL void lstm_cell_ln(int64_t B, int64_t H, const T* live, const T* c, const T* gate, const T* gain, const T* bias,
                  T* chat, T* crstd, T* h, T* y) {
  std::memcpy(y, c, B * H * sizeof(T));  // y: (B, H) scratch
  ln_rows<T>(B, H, live, y, H, gain, bias, chat, crstd);
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const T* o = gate + b * 4 * H + 3 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) h[b * H + j] = o[j] * std::tanh(y[b * H + j]);
  }
}

// its backward before bw_lstm_x<LN>: tanh(LN(C_t)) into tcn; ∂LN(C_t) = ∂h_t o (1 - tanh²) into dyc
// (scratch); the gradient reaching C_t through h_t into dch; the gain's and bias's gradients into dgain, dbias
template <typename T>
RNNLAB_KERNEL void lstm_cell_ln_back(int64_t B, int64_t H, const T* live, const T* gate, const T* dh, const T* chat, const T* crstd,
                       const T* gain, const T* bias, T* tcn, T* dyc, T* dch, double* dgain, double* dbias, T* step) {
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    const int64_t r = b * H;
    const T* o = gate + b * 4 * H + 3 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T tc = std::tanh(chat[r + j] * gain[j] + bias[j]);
      tcn[r + j] = tc;
      dyc[r + j] = dh[r + j] * o[j] * (T(1) - tc * tc);
    }
  }
  ln_rows_back<T>(B, H, live, dyc, H, gain, chat, crstd, dch, H, dgain, dbias, step);
}

// zoneout, forward: each unit of the new state keeps its previous value where ``keep`` is 1 (rows
// outside their sequence are fixed up by the loop)
template <typename T>
RNNLAB_KERNEL void zoneout_rows(int64_t B, int64_t H, const T* live, const T* keep, const T* prev, const T* fresh, T* out) {
  for (int64_t b = 0; b < B; ++b) {
    if (skip(live, b)) continue;
    for (int64_t j = b * H; j < (b + 1) * H; ++j) out[j] = keep[j] != T(0) ? prev[j] : fresh[j];
  }
}

// zoneout, backward: a unit that kept its previous value passes its gradient straight back (into carry);
// the cell's own update sees the rest
template <typename T>
RNNLAB_KERNEL void zoneout_rows_back(int64_t B, int64_t H, const T* live, const T* keep, T* d, T* carry) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = b * H; j < (b + 1) * H; ++j) {
      const bool kept = !skip(live, b) && keep[j] != T(0);
      carry[j] = kept ? d[j] : T(0);
      d[j] = kept ? T(0) : d[j];
    }
  }
}

template <typename T>
inline const T* ptr_or_null(const torch::Tensor& t) {
  return t.numel() ? t.data_ptr<T>() : nullptr;
}

template <typename T>
inline T* mut_or_null(torch::Tensor& t) {
  return t.numel() ? t.data_ptr<T>() : nullptr;
}

// ---------------------------------------------------------------------------------------------
// the loops
// ---------------------------------------------------------------------------------------------
// the variant loops' layer norm: gains and biases, the saved normalised values and 1/σ, and (backward)
// the gradients the loops hand back; all null when layer norm is off
template <typename T>
struct Norm {
  const T* g_hh = nullptr;  // LN(W_h ·): gain, bias (G·H; GRU reset="before": rows 2H: the candidate's own LN)
  const T* b_hh = nullptr;
  const T* g_c = nullptr;  // LSTM: LN(C_t): gain, bias (H)
  const T* b_c = nullptr;
  T* uhat = nullptr;  // (T, B, W): the first recurrent GEMM's output normalised; urstd (T, B): its 1/σ
  T* urstd = nullptr;
  T* nhat = nullptr;  // GRU reset="before": W_hn (r h) normalised (T, B, H); nrstd (T, B)
  T* nrstd = nullptr;
  T* chat = nullptr;  // LSTM: C_t normalised (T, B, H); crstd (T, B)
  T* crstd = nullptr;
  T* dhh = nullptr;  // backward: ∂ of the raw recurrent GEMM outputs (T, B, G·H), for ∂W_hh
  T* dg_hh = nullptr;  // backward: the gradients of g_hh, b_hh, g_c, b_c
  T* db_hh = nullptr;
  T* dg_c = nullptr;
  T* db_c = nullptr;
  bool on() const { return g_hh != nullptr; }
};

// the gains' and biases' gradients, gathered in double over the loop and written out at its end
template <typename T>
struct NormGrads {
  std::vector<double> g_hh, b_hh, g_c, b_c;
  std::vector<T> step;  // ln_rows_back's per-step scratch
  NormGrads(int64_t GX, int64_t H, bool on, bool cell)
      : g_hh(on ? GX : 0), b_hh(on ? GX : 0), g_c(on && cell ? H : 0), b_c(on && cell ? H : 0), step(on ? 2 * GX : 0) {}
  void write(const Norm<T>& norm) const {
    for (size_t j = 0; j < g_hh.size(); ++j) norm.dg_hh[j] = T(g_hh[j]), norm.db_hh[j] = T(b_hh[j]);
    for (size_t j = 0; j < g_c.size(); ++j) norm.dg_c[j] = T(g_c[j]), norm.db_c[j] = T(b_c[j]);
  }
};


template <typename T>
void forward_impl(int64_t cell, const torch::Tensor& xp_t, const torch::Tensor& w_hhT_t, const torch::Tensor& b_hn_t,
                  const torch::Tensor& mask_t, bool reverse, torch::Tensor& states_t, torch::Tensor& cells_t,
                  torch::Tensor& gates_t, torch::Tensor& extra_t, const T* h_mask = nullptr,
                  const Norm<T>& norm = Norm<T>(), const T* zone = nullptr) {
  // the GRU's variants (gru_forward_loop): h_mask (B, H): recurrent dropout, the GEMMs see h_{t-1} · mask,
  // the update term h_{t-1} itself; norm: layer norm of the recurrent GEMMs' outputs; zone (T, 1, B, H):
  // zoneout's keep masks
  const int64_t T_ = xp_t.size(0), B = xp_t.size(1), GH = xp_t.size(2), H = w_hhT_t.size(0);
  const T* xp = xp_t.data_ptr<T>();
  const T* w_hhT = w_hhT_t.data_ptr<T>();  // W_hhᵀ (H, G·H)
  std::vector<T> zeros(cell == GRU_AFTER && !b_hn_t.numel() ? H : 0, T(0));
  const T* b_hn = b_hn_t.numel() ? b_hn_t.data_ptr<T>() : zeros.data();
  const T* mask = ptr_or_null<T>(mask_t);
  T* hs = states_t.data_ptr<T>();
  T* cs = mut_or_null<T>(cells_t);
  T* gates = gates_t.data_ptr<T>();
  T* extra = mut_or_null<T>(extra_t);
  const bool before = cell == GRU_BEFORE;
  std::vector<T> hh_buf(B * GH);  // h_{t-1} · W_hhᵀ (reset="before": the z, r blocks, then W_hn · rh)
  T* hh = hh_buf.data();
  const int64_t ghh = before ? 2 * H : GH;  // width of the first recurrent GEMM
  std::vector<T> hin_buf(h_mask ? B * H : 0);
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    const int64_t p = reverse ? t + 1 : t, n = reverse ? t : t + 1;  // state slots: previous, next
    const T* live = mask ? mask + t * B : nullptr;
    const T* h_prev = hs + p * B * H;
    T* h_next = hs + n * B * H;
    const T* xp_s = xp + t * B * GH;
    T* gate_t = gates + t * B * GH;
    T* extra_t = extra ? extra + t * B * H : nullptr;
    const T* h_in = h_prev;
    if (h_mask) {
      for (int64_t k = 0; k < B * H; ++k) hin_buf[k] = h_prev[k] * h_mask[k];
      h_in = hin_buf.data();
    }
    gemm<T>(false, false, B, ghh, H, h_in, H, w_hhT, GH, T(0), hh, ghh);
    if (norm.on()) ln_rows<T>(B, ghh, live, hh, ghh, norm.g_hh, norm.b_hh, norm.uhat + t * B * ghh, norm.urstd + t * B);
    switch (cell) {
      case RNN_TANH:
      case RNN_RELU:
        fw_rnn<T>(cell == RNN_RELU, B, H, live, xp_s, hh, gate_t, h_next);
        break;
      case LSTM:
        fw_lstm<T>(B, H, live, xp_s, hh, cs + p * B * H, gate_t, cs + n * B * H, h_next);
        break;
      case GRU_BEFORE: {
        fw_gru_before_zr<T>(B, H, live, xp_s, hh, h_in, gate_t, extra_t);  // r · (h_{t-1} · mask)
        if (live)  // rows outside their sequence: r·h = 0, so their W_hn product is 0 too
          for (int64_t b = 0; b < B; ++b)
            if (live[b] == T(0)) std::memset(extra_t + b * H, 0, H * sizeof(T));
        T* hn = hh + B * ghh;
        gemm<T>(false, false, B, H, H, extra_t, H, w_hhT + 2 * H, GH, T(0), hn, H);
        if (norm.on())  // the candidate's own LN(W_hn (r h)), gain and bias rows 2H:
          ln_rows<T>(B, H, live, hn, H, norm.g_hh + 2 * H, norm.b_hh + 2 * H, norm.nhat + t * B * H, norm.nrstd + t * B);
        fw_gru_before_n<T>(B, H, live, xp_s, hn, h_prev, gate_t, h_next);
        break;
      }
      default:
        fw_gru_after<T>(B, H, live, xp_s, hh, b_hn, h_prev, gate_t, extra_t, h_next);
    }
    if (zone) zoneout_rows<T>(B, H, live, zone + t * B * H, h_prev, h_next, h_next);
    if (live) {  // rows past their sequence: state unchanged, gates zero
      for (int64_t b = 0; b < B; ++b) {
        if (live[b] != T(0)) continue;
        std::memcpy(h_next + b * H, h_prev + b * H, H * sizeof(T));
        if (cs) std::memcpy(cs + n * B * H + b * H, cs + p * B * H + b * H, H * sizeof(T));
        std::memset(gate_t + b * GH, 0, GH * sizeof(T));
        if (extra_t) std::memset(extra_t + b * H, 0, H * sizeof(T));
      }
    }
  }
}

template <typename T>
void backward_impl(int64_t cell, const torch::Tensor& w_hh_t, const torch::Tensor& mask_t, bool reverse,
                   const torch::Tensor& states_t, const torch::Tensor& cells_t, const torch::Tensor& gates_t,
                   const torch::Tensor& extra_t, const torch::Tensor& g_states_t, const torch::Tensor& g_cells_t,
                   const torch::Tensor& g_gates_t, torch::Tensor& da_t, torch::Tensor& dhn_t, torch::Tensor& dh0_t,
                   torch::Tensor& dc0_t, const T* h_mask = nullptr, const Norm<T>& norm = Norm<T>(),
                   const T* zone = nullptr) {
  const int64_t T_ = gates_t.size(0), B = gates_t.size(1), GH = gates_t.size(2), H = w_hh_t.size(1);
  const T* w_hh = w_hh_t.data_ptr<T>();
  const T* mask = ptr_or_null<T>(mask_t);
  const T* hs = states_t.data_ptr<T>();
  const T* cs = ptr_or_null<T>(cells_t);
  const T* gates = gates_t.data_ptr<T>();
  const T* extra = ptr_or_null<T>(extra_t);
  const T* g_hs = g_states_t.data_ptr<T>();
  const T* g_cs = ptr_or_null<T>(g_cells_t);  // empty: no gradient w.r.t. the cells (c_n unused)
  const T* gg = ptr_or_null<T>(g_gates_t);    // empty: no gradient w.r.t. the gates (no traces)
  // an absent gradient is read from one step's worth of zeros: the kernels stay branch-free,
  // which is what lets g++ vectorise them (a null check inside costs 2× on large layers)
  const std::vector<T> zeros((gg ? 0 : B * GH) + (g_cs ? 0 : B * H), T(0));
  const T* zero_gates = zeros.data();
  const T* zero_cells = zeros.data() + (gg ? 0 : B * GH);
  T* da_all = da_t.data_ptr<T>();
  T* dhn_all = mut_or_null<T>(dhn_t);
  std::vector<T> buf(3 * B * H + B * GH);
  T* dh = buf.data();        // ∂h_t  (the state after this step)
  T* dh_prev = dh + B * H;   // ∂h_{t-1}
  T* dc = dh_prev + B * H;   // ∂C_t, updated in place to ∂C_{t-1}
  T* dhh = dc + B * H;       // GRU reset="after": gradient w.r.t. h_{t-1} · W_hhᵀ; "before": ∂(r h)
  std::vector<T> drop_buf(h_mask ? 2 * B * H : 0);  // recurrent dropout: ∂(h_{t-1} · mask), h_{t-1} · mask
  T* dhin = drop_buf.data();
  T* hin = h_mask ? dhin + B * H : nullptr;
  std::vector<T> carry(zone ? B * H : 0);  // zoneout: the gradient the kept units pass straight back
  NormGrads<T> ngrads(GH, H, norm.on(), false);
  const int64_t last = reverse ? 0 : T_;
  std::memcpy(dh, g_hs + last * B * H, B * H * sizeof(T));
  if (cs) {
    if (g_cs)
      std::memcpy(dc, g_cs + last * B * H, B * H * sizeof(T));
    else
      std::memset(dc, 0, B * H * sizeof(T));
  }
  for (int64_t s = T_ - 1; s >= 0; --s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    const int64_t p = reverse ? t + 1 : t, n = reverse ? t : t + 1;
    const T* live = mask ? mask + t * B : nullptr;
    const T* h_prev = hs + p * B * H;
    const T* gh_prev = g_hs + p * B * H;
    const T* gc_prev = g_cs ? g_cs + p * B * H : zero_cells;
    const T* gate_t = gates + t * B * GH;
    const T* gg_t = gg ? gg + t * B * GH : zero_gates;
    T* da = da_all + t * B * GH;
    T* dhn = dhn_all ? dhn_all + t * B * H : nullptr;
    if (zone) zoneout_rows_back<T>(B, H, live, zone + t * B * H, dh, carry.data());
    switch (cell) {
      case RNN_TANH:
      case RNN_RELU:
        bw_rnn<T>(cell == RNN_RELU, B, H, live, gate_t, gg_t, dh, gh_prev, da, dh_prev);
        break;
      case LSTM:
        bw_lstm<T>(B, H, live, gate_t, gg_t, cs + n * B * H, cs + p * B * H, dh, dc, gc_prev, gh_prev, da, dh_prev);
        break;
      case GRU_BEFORE:
        bw_gru_before_zn<T>(B, H, live, gate_t, gg_t, h_prev, dh, gh_prev, da, dh_prev);
        break;
      default:
        bw_gru_after<T>(B, H, live, gate_t, gg_t, extra + t * B * H, h_prev, dh, gh_prev, da, dhh, dhn, dh_prev);
    }
    if (live) {  // rows outside their sequence: no gate gradient, the state's gradient passes through
      for (int64_t b = 0; b < B; ++b) {
        if (live[b] != T(0)) continue;
        const int64_t r = b * H;
        std::memset(da + b * GH, 0, GH * sizeof(T));
        for (int64_t j = 0; j < H; ++j) dh_prev[r + j] = dh[r + j] + gh_prev[r + j];
        if (cs)
          for (int64_t j = 0; j < H; ++j) dc[r + j] += gc_prev[r + j];
        if (cell == GRU_AFTER) {
          std::memset(dhh + b * GH, 0, GH * sizeof(T));
          std::memset(dhn + r, 0, H * sizeof(T));
        }
      }
    }
    if ((h_mask || norm.on()) && (cell == GRU_BEFORE || cell == GRU_AFTER)) {
      // the GRU's variants: as below, but through LN's backward to the raw GEMM outputs (kept in dhh_t
      // for ∂W_hh), r's gradient reading h_{t-1} · mask, and the recurrent share of ∂h_{t-1} masked
      T* dhh_t = norm.on() ? norm.dhh + t * B * GH : nullptr;
      T* acc = h_mask ? dhin : dh_prev;  // where the recurrent share of ∂h_{t-1} gathers
      if (h_mask) std::memset(dhin, 0, B * H * sizeof(T));
      if (cell == GRU_BEFORE) {
        const T* dn = da + 2 * H;  // ∂ W_hn (r h): the candidate's pre-activation gradient, through its LN
        if (dhh_t) {
          ln_rows_back<T>(B, H, live, da + 2 * H, GH, norm.g_hh + 2 * H, norm.nhat + t * B * H, norm.nrstd + t * B,
                          dhh_t + 2 * H, GH, ngrads.g_hh.data() + 2 * H, ngrads.b_hh.data() + 2 * H, ngrads.step.data());
          dn = dhh_t + 2 * H;
        }
        gemm<T>(false, false, B, H, H, dn, GH, w_hh + 2 * H * H, H, T(0), dhh, H);  // ∂(r h_{t-1} · mask)
        const T* h_seen = h_prev;
        if (h_mask) {
          for (int64_t k = 0; k < B * H; ++k) hin[k] = h_prev[k] * h_mask[k];
          h_seen = hin;
        }
        bw_gru_before_r<T>(B, H, live, gate_t, gg_t, h_seen, dhh, da, acc);
        const T* dzr = da;
        if (dhh_t) {
          ln_rows_back<T>(B, 2 * H, live, da, GH, norm.g_hh, norm.uhat + t * B * 2 * H, norm.urstd + t * B, dhh_t, GH,
                          ngrads.g_hh.data(), ngrads.b_hh.data(), ngrads.step.data());
          dzr = dhh_t;
        }
        gemm<T>(false, false, B, H, 2 * H, dzr, GH, w_hh, H, T(1), acc, H);
      } else {
        const T* du = dhh;
        if (dhh_t) {
          ln_rows_back<T>(B, GH, live, dhh, GH, norm.g_hh, norm.uhat + t * B * GH, norm.urstd + t * B, dhh_t, GH,
                          ngrads.g_hh.data(), ngrads.b_hh.data(), ngrads.step.data());
          du = dhh_t;
        }
        gemm<T>(false, false, B, H, GH, du, GH, w_hh, H, T(1), acc, H);
      }
      if (h_mask)
        for (int64_t k = 0; k < B * H; ++k) dh_prev[k] += dhin[k] * h_mask[k];
    } else if (cell == GRU_BEFORE) {
      // ∂(r h_{t-1}) = ∂n_pre · W_hn, then r's gradient, then the z, r rows' share of ∂h_{t-1}
      gemm<T>(false, false, B, H, H, da + 2 * H, GH, w_hh + 2 * H * H, H, T(0), dhh, H);
      bw_gru_before_r<T>(B, H, live, gate_t, gg_t, h_prev, dhh, da, dh_prev);
      gemm<T>(false, false, B, H, 2 * H, da, GH, w_hh, H, T(1), dh_prev, H);
    } else if (cell == GRU_AFTER) {
      gemm<T>(false, false, B, H, GH, dhh, GH, w_hh, H, T(1), dh_prev, H);
    } else {
      gemm<T>(false, false, B, H, GH, da, GH, w_hh, H, T(1), dh_prev, H);
    }
    if (zone)
      for (int64_t k = 0; k < B * H; ++k) dh_prev[k] += carry[k];
    std::swap(dh, dh_prev);
  }
  std::memcpy(dh0_t.data_ptr<T>(), dh, B * H * sizeof(T));
  if (cs) std::memcpy(dc0_t.data_ptr<T>(), dc, B * H * sizeof(T));
  if (norm.on()) ngrads.write(norm);
}


// the peephole rows (p_f, p_i, p_o; p_f, p_o when coupled), or zeros
template <typename T>
void peep_rows(const torch::Tensor& peep_t, bool coupled, int64_t H, std::vector<T>& zeros, const T** pf,
               const T** pi, const T** po) {
  zeros.assign(H, T(0));
  *pf = *pi = *po = zeros.data();
  if (!peep_t.numel()) return;
  const T* p = peep_t.data_ptr<T>();
  *pf = p;
  if (coupled) {
    *po = p + H;
  } else {
    *pi = p + H;
    *po = p + 2 * H;
  }
}

template <typename T>
void lstm_forward_impl(const torch::Tensor& xp_t, const torch::Tensor& w_hhT_t, const torch::Tensor& peep_t,
                       bool coupled, const torch::Tensor& h_mask_t, const torch::Tensor& mask_t, bool reverse,
                       torch::Tensor& states_t, torch::Tensor& cells_t, torch::Tensor& gates_t, const Norm<T>& norm,
                       const T* zone, T* c_pre) {
  // norm: LN of the GEMM's output (over G·H) and of C_t before its tanh; zone (T, 2, B, H): zoneout's keep
  // masks of h and C; c_pre (T, B, H): C_t before zoneout (the traces' C_t and the backward's)
  const int64_t T_ = xp_t.size(0), B = xp_t.size(1), GX = xp_t.size(2), H = w_hhT_t.size(0), GH = 4 * H;
  const T* xp = xp_t.data_ptr<T>();
  const T* w_hhT = w_hhT_t.data_ptr<T>();
  std::vector<T> zeros;
  const T *pf, *pi, *po;
  peep_rows<T>(peep_t, coupled, H, zeros, &pf, &pi, &po);
  const T* h_mask = ptr_or_null<T>(h_mask_t);
  const T* mask = ptr_or_null<T>(mask_t);
  T* hs = states_t.data_ptr<T>();
  T* cs = cells_t.data_ptr<T>();
  T* gates = gates_t.data_ptr<T>();
  std::vector<T> hh_buf(B * GX), hin_buf(h_mask ? B * H : 0), y_buf(norm.on() ? B * H : 0);
  T* hh = hh_buf.data();
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    const int64_t p = reverse ? t + 1 : t, n = reverse ? t : t + 1;
    const T* live = mask ? mask + t * B : nullptr;
    const T* h_prev = hs + p * B * H;
    T* h_next = hs + n * B * H;
    T* gate_t = gates + t * B * GH;
    const T* c_prev = cs + p * B * H;
    T* c_next = cs + n * B * H;
    T* c_new = zone ? c_pre + t * B * H : c_next;  // C_t, before zoneout
    const T* h_in = h_prev;
    if (h_mask) {  // recurrent dropout: W_hh sees h_{t-1} · mask
      for (int64_t k = 0; k < B * H; ++k) hin_buf[k] = h_prev[k] * h_mask[k];
      h_in = hin_buf.data();
    }
    gemm<T>(false, false, B, GX, H, h_in, H, w_hhT, GX, T(0), hh, GX);
    if (norm.on()) ln_rows<T>(B, GX, live, hh, GX, norm.g_hh, norm.b_hh, norm.uhat + t * B * GX, norm.urstd + t * B);
    if (coupled)
      fw_lstm_x<T, true>(B, H, live, xp + t * B * GX, hh, pf, pi, po, c_prev, gate_t, c_new, h_next);
    else
      fw_lstm_x<T, false>(B, H, live, xp + t * B * GX, hh, pf, pi, po, c_prev, gate_t, c_new, h_next);
    if (norm.on())  // h_t = o tanh(LN(C_t))
      lstm_cell_ln<T>(B, H, live, c_new, gate_t, norm.g_c, norm.b_c, norm.chat + t * B * H, norm.crstd + t * B, h_next,
                      y_buf.data());
    if (zone) {
      zoneout_rows<T>(B, H, live, zone + (2 * t) * B * H, h_prev, h_next, h_next);
      zoneout_rows<T>(B, H, live, zone + (2 * t + 1) * B * H, c_prev, c_new, c_next);
    }
    if (live) {
      for (int64_t b = 0; b < B; ++b) {
        if (live[b] != T(0)) continue;
        std::memcpy(h_next + b * H, h_prev + b * H, H * sizeof(T));
        std::memcpy(c_next + b * H, c_prev + b * H, H * sizeof(T));
        std::memset(gate_t + b * GH, 0, GH * sizeof(T));
        if (zone) std::memset(c_new + b * H, 0, H * sizeof(T));
      }
    }
  }
}

template <typename T>
void lstm_backward_impl(const torch::Tensor& w_hh_t, const torch::Tensor& peep_t, bool coupled,
                        const torch::Tensor& h_mask_t, const torch::Tensor& mask_t, bool reverse,
                        const torch::Tensor& states_t, const torch::Tensor& cells_t, const torch::Tensor& gates_t,
                        const torch::Tensor& g_states_t, const torch::Tensor& g_cells_t,
                        const torch::Tensor& g_gates_t, torch::Tensor& da_t, torch::Tensor& dh0_t,
                        torch::Tensor& dc0_t, const Norm<T>& norm, const T* zone, const T* c_pre, const T* g_cpre) {
  const int64_t T_ = gates_t.size(0), B = gates_t.size(1), GH = 4 * w_hh_t.size(1), H = w_hh_t.size(1);
  const int64_t GX = w_hh_t.size(0);
  const T* w_hh = w_hh_t.data_ptr<T>();
  std::vector<T> pzeros;
  const T *pf, *pi, *po;
  peep_rows<T>(peep_t, coupled, H, pzeros, &pf, &pi, &po);
  const T* h_mask = ptr_or_null<T>(h_mask_t);
  const T* mask = ptr_or_null<T>(mask_t);
  const T* cs = cells_t.data_ptr<T>();
  const T* gates = gates_t.data_ptr<T>();
  const T* g_hs = g_states_t.data_ptr<T>();
  const T* g_cs = ptr_or_null<T>(g_cells_t);
  const T* gg = ptr_or_null<T>(g_gates_t);
  const std::vector<T> zeros((gg ? 0 : B * GH) + (g_cs ? 0 : B * H), T(0));
  const T* zero_gates = zeros.data();
  const T* zero_cells = zeros.data() + (gg ? 0 : B * GH);
  T* da_all = da_t.data_ptr<T>();
  const int64_t nb = 3 + (h_mask ? 1 : 0) + (zone ? 2 : 0) + (norm.on() ? 3 : 0);
  std::vector<T> buf(nb * B * H);
  T* dh = buf.data();
  T* dh_prev = dh + B * H;
  T* dc = dh_prev + B * H;
  T* next = dc + B * H;
  T* rec = h_mask ? next : nullptr;  // recurrent dropout: ∂a · W_hh, masked into ∂h_{t-1}
  next += h_mask ? B * H : 0;
  T* carry_h = zone ? next : nullptr;  // zoneout: the gradients the kept units pass straight back
  T* carry_c = zone ? next + B * H : nullptr;
  next += zone ? 2 * B * H : 0;
  T* tcn = norm.on() ? next : nullptr;  // layer norm: tanh(LN(C_t)), and the gradient reaching C_t through h_t
  T* dch = norm.on() ? next + B * H : nullptr;
  T* dyc = norm.on() ? next + 2 * B * H : nullptr;  // ∂LN(C_t), scratch
  NormGrads<T> ngrads(GX, H, norm.on(), true);
  const int64_t last = reverse ? 0 : T_;
  std::memcpy(dh, g_hs + last * B * H, B * H * sizeof(T));
  if (g_cs)
    std::memcpy(dc, g_cs + last * B * H, B * H * sizeof(T));
  else
    std::memset(dc, 0, B * H * sizeof(T));
  for (int64_t s = T_ - 1; s >= 0; --s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    const int64_t p = reverse ? t + 1 : t, n = reverse ? t : t + 1;
    const T* live = mask ? mask + t * B : nullptr;
    const T* gh_prev = g_hs + p * B * H;
    const T* gc_prev = g_cs ? g_cs + p * B * H : zero_cells;
    const T* gate_t = gates + t * B * GH;
    const T* gg_t = gg ? gg + t * B * GH : zero_gates;
    T* da = da_all + t * B * GX;
    const T* c_t = zone ? c_pre + t * B * H : cs + n * B * H;  // C_t before zoneout
    if (zone) {
      zoneout_rows_back<T>(B, H, live, zone + (2 * t) * B * H, dh, carry_h);
      zoneout_rows_back<T>(B, H, live, zone + (2 * t + 1) * B * H, dc, carry_c);
      if (g_cpre)  // the traces' C_t
        for (int64_t b = 0; b < B; ++b)
          if (!skip(live, b))
            for (int64_t j = b * H; j < (b + 1) * H; ++j) dc[j] += g_cpre[t * B * H + j];
    }
    if (norm.on())
      lstm_cell_ln_back<T>(B, H, live, gate_t, dh, norm.chat + t * B * H, norm.crstd + t * B, norm.g_c, norm.b_c, tcn,
                           dyc, dch, ngrads.g_c.data(), ngrads.b_c.data(), ngrads.step.data());
    const T* c_p = cs + p * B * H;
    if (coupled && norm.on())
      bw_lstm_x<T, true, true>(B, H, live, gate_t, gg_t, c_t, c_p, pf, pi, po, dh, dc, gc_prev, gh_prev, da, dh_prev,
                               tcn, dch);
    else if (coupled)
      bw_lstm_x<T, true, false>(B, H, live, gate_t, gg_t, c_t, c_p, pf, pi, po, dh, dc, gc_prev, gh_prev, da, dh_prev,
                                tcn, dch);
    else if (norm.on())
      bw_lstm_x<T, false, true>(B, H, live, gate_t, gg_t, c_t, c_p, pf, pi, po, dh, dc, gc_prev, gh_prev, da, dh_prev,
                                tcn, dch);
    else
      bw_lstm_x<T, false, false>(B, H, live, gate_t, gg_t, c_t, c_p, pf, pi, po, dh, dc, gc_prev, gh_prev, da,
                                 dh_prev, tcn, dch);
    if (live) {
      for (int64_t b = 0; b < B; ++b) {
        if (live[b] != T(0)) continue;
        const int64_t r = b * H;
        std::memset(da + b * GX, 0, GX * sizeof(T));
        for (int64_t j = 0; j < H; ++j) dh_prev[r + j] = dh[r + j] + gh_prev[r + j];
        for (int64_t j = 0; j < H; ++j) dc[r + j] += gc_prev[r + j];
      }
    }
    const T* du = da;  // ∂ of the GEMM's output: through LN(W_h ·) when on
    if (norm.on()) {
      T* dhh_t = norm.dhh + t * B * GX;
      ln_rows_back<T>(B, GX, live, da, GX, norm.g_hh, norm.uhat + t * B * GX, norm.urstd + t * B, dhh_t, GX,
                      ngrads.g_hh.data(), ngrads.b_hh.data(), ngrads.step.data());
      du = dhh_t;
    }
    if (h_mask) {
      gemm<T>(false, false, B, H, GX, du, GX, w_hh, H, T(0), rec, H);
      for (int64_t k = 0; k < B * H; ++k) dh_prev[k] += rec[k] * h_mask[k];
    } else {
      gemm<T>(false, false, B, H, GX, du, GX, w_hh, H, T(1), dh_prev, H);
    }
    if (zone) {
      for (int64_t k = 0; k < B * H; ++k) dh_prev[k] += carry_h[k];
      for (int64_t k = 0; k < B * H; ++k) dc[k] += carry_c[k];
    }
    std::swap(dh, dh_prev);
  }
  std::memcpy(dh0_t.data_ptr<T>(), dh, B * H * sizeof(T));
  std::memcpy(dc0_t.data_ptr<T>(), dc, B * H * sizeof(T));
  if (norm.on()) ngrads.write(norm);
}

// ---------------------------------------------------------------------------------------------
// argument checks: the entry points validate every tensor (shape, dtype, layout) before the loops
// touch memory, so a direct call with bad tensors raises ValueError/TypeError instead of reading
// or writing out of bounds
// ---------------------------------------------------------------------------------------------

int64_t gates_of(int64_t cell) {
  return cell == LSTM ? 4 : (cell == GRU_BEFORE || cell == GRU_AFTER) ? 3 : 1;
}

// t has ``shape`` (or is empty where ``optional``), is contiguous, on the CPU, of dtype ``dtype``
void expect(const char* fn, const char* name, const torch::Tensor& t, c10::IntArrayRef shape, at::ScalarType dtype,
            bool optional = false) {
  if (optional && t.numel() == 0) return;
  TORCH_CHECK_VALUE(t.sizes().equals(shape), fn, ": ", name, ": expected shape ", shape, optional ? " (or empty)" : "",
                    ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, fn, ": ", name, ": expected dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), fn, ": ", name, ": expected a CPU tensor, got one on ", t.device());
  TORCH_CHECK_VALUE(t.is_contiguous(), fn, ": ", name, ": expected a contiguous tensor, got strides ", t.strides());
}

void expect_empty(const char* fn, const char* name, const torch::Tensor& t, int64_t cell) {
  TORCH_CHECK_VALUE(t.numel() == 0, fn, ": ", name, ": expected an empty tensor for cell ", cell, ", got shape ",
                    t.sizes());
}

// the cell code, the dtype of ``ref`` and the BLAS thread count
at::ScalarType expect_common(const char* fn, int64_t cell, const torch::Tensor& ref, int64_t threads) {
  TORCH_CHECK_VALUE(cell >= RNN_TANH && cell <= GRU_AFTER, fn, ": cell: expected 0..4 (rnn tanh, rnn relu, lstm, ",
                    "gru before, gru after), got ", cell);
  const auto dtype = ref.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, fn, ": expected float32 or float64 tensors, got ", dtype);
  TORCH_CHECK_VALUE(threads >= 1, fn, ": threads: expected at least 1, got ", threads);
  return dtype;
}

void check_forward(int64_t cell, const torch::Tensor& xp, const torch::Tensor& w_hhT, const torch::Tensor& b_hn,
                   const torch::Tensor& mask, const torch::Tensor& states, const torch::Tensor& cells,
                   const torch::Tensor& gates, const torch::Tensor& extra, int64_t threads) {
  const char* fn = "forward_loop";
  const auto dtype = expect_common(fn, cell, xp, threads);
  TORCH_CHECK_VALUE(xp.dim() == 3, fn, ": xp: expected a 3-D tensor (T, B, G*H), got shape ", xp.sizes());
  TORCH_CHECK_VALUE(w_hhT.dim() == 2, fn, ": w_hhT: expected a 2-D tensor (H, G*H), got shape ", w_hhT.sizes());
  const int64_t T = xp.size(0), B = xp.size(1), H = w_hhT.size(0), GH = gates_of(cell) * H;
  TORCH_CHECK_VALUE(H >= 1, fn, ": w_hhT: expected H >= 1 rows, got shape ", w_hhT.sizes());
  expect(fn, "xp", xp, {T, B, GH}, dtype);
  expect(fn, "w_hhT", w_hhT, {H, GH}, dtype);
  expect(fn, "b_hn", b_hn, {H}, dtype, true);
  expect(fn, "mask", mask, {T, B}, dtype, true);
  expect(fn, "states", states, {T + 1, B, H}, dtype);
  if (cell == LSTM)
    expect(fn, "cells", cells, {T + 1, B, H}, dtype);
  else
    expect_empty(fn, "cells", cells, cell);
  expect(fn, "gates", gates, {T, B, GH}, dtype);
  if (cell == GRU_BEFORE || cell == GRU_AFTER)
    expect(fn, "extra", extra, {T, B, H}, dtype);
  else
    expect_empty(fn, "extra", extra, cell);
}

void check_backward(int64_t cell, const torch::Tensor& w_hh, const torch::Tensor& mask, const torch::Tensor& states,
                    const torch::Tensor& cells, const torch::Tensor& gates, const torch::Tensor& extra,
                    const torch::Tensor& g_states, const torch::Tensor& g_cells, const torch::Tensor& g_gates,
                    const torch::Tensor& da, const torch::Tensor& dhn, const torch::Tensor& dh0,
                    const torch::Tensor& dc0, int64_t threads) {
  const char* fn = "backward_loop";
  const auto dtype = expect_common(fn, cell, gates, threads);
  TORCH_CHECK_VALUE(gates.dim() == 3, fn, ": gates: expected a 3-D tensor (T, B, G*H), got shape ", gates.sizes());
  TORCH_CHECK_VALUE(w_hh.dim() == 2, fn, ": w_hh: expected a 2-D tensor (G*H, H), got shape ", w_hh.sizes());
  const int64_t T = gates.size(0), B = gates.size(1), H = w_hh.size(1), GH = gates_of(cell) * H;
  TORCH_CHECK_VALUE(H >= 1, fn, ": w_hh: expected H >= 1 columns, got shape ", w_hh.sizes());
  expect(fn, "w_hh", w_hh, {GH, H}, dtype);
  expect(fn, "mask", mask, {T, B}, dtype, true);
  expect(fn, "states", states, {T + 1, B, H}, dtype);
  expect(fn, "gates", gates, {T, B, GH}, dtype);
  expect(fn, "g_states", g_states, {T + 1, B, H}, dtype);
  expect(fn, "g_gates", g_gates, {T, B, GH}, dtype, true);
  expect(fn, "da", da, {T, B, GH}, dtype);
  expect(fn, "dh0", dh0, {B, H}, dtype);
  if (cell == LSTM) {
    expect(fn, "cells", cells, {T + 1, B, H}, dtype);
    expect(fn, "g_cells", g_cells, {T + 1, B, H}, dtype, true);
    expect(fn, "dc0", dc0, {B, H}, dtype);
  } else {
    expect_empty(fn, "cells", cells, cell);
    expect_empty(fn, "g_cells", g_cells, cell);
    expect_empty(fn, "dc0", dc0, cell);
  }
  if (cell == GRU_BEFORE || cell == GRU_AFTER)
    expect(fn, "extra", extra, {T, B, H}, dtype);
  else
    expect_empty(fn, "extra", extra, cell);
  if (cell == GRU_AFTER)
    expect(fn, "dhn", dhn, {T, B, H}, dtype);
  else
    expect_empty(fn, "dhn", dhn, cell);
}

void forward_loop(int64_t cell, torch::Tensor xp, torch::Tensor w_hhT, torch::Tensor b_hn, torch::Tensor mask,
                  bool reverse, torch::Tensor states, torch::Tensor cells, torch::Tensor gates, torch::Tensor extra,
                  int64_t threads) {
  check_forward(cell, xp, w_hhT, b_hn, mask, states, cells, gates, extra, threads);
  BlasThreads guard(threads);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "forward_loop", [&] {
    forward_impl<scalar_t>(cell, xp, w_hhT, b_hn, mask, reverse, states, cells, gates, extra);
  });
}

void backward_loop(int64_t cell, torch::Tensor w_hh, torch::Tensor mask, bool reverse, torch::Tensor states,
                   torch::Tensor cells, torch::Tensor gates, torch::Tensor extra, torch::Tensor g_states,
                   torch::Tensor g_cells, torch::Tensor g_gates, torch::Tensor da, torch::Tensor dhn,
                   torch::Tensor dh0, torch::Tensor dc0, int64_t threads) {
  check_backward(cell, w_hh, mask, states, cells, gates, extra, g_states, g_cells, g_gates, da, dhn, dh0, dc0, threads);
  BlasThreads guard(threads);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "backward_loop", [&] {
    backward_impl<scalar_t>(cell, w_hh, mask, reverse, states, cells, gates, extra, g_states, g_cells, g_gates, da,
                            dhn, dh0, dc0);
  });
}

void check_lstm(const char* fn, const torch::Tensor& w_hh, bool transposed, const torch::Tensor& peep, bool coupled,
                const torch::Tensor& h_mask, const torch::Tensor& mask, const torch::Tensor& states,
                const torch::Tensor& cells, const torch::Tensor& gates, int64_t threads) {
  const auto dtype = expect_common(fn, LSTM, gates, threads);
  TORCH_CHECK_VALUE(gates.dim() == 3, fn, ": gates: expected a 3-D tensor (T, B, 4*H), got shape ", gates.sizes());
  TORCH_CHECK_VALUE(w_hh.dim() == 2, fn, ": w_hh: expected a 2-D tensor, got shape ", w_hh.sizes());
  const int64_t H = transposed ? w_hh.size(0) : w_hh.size(1), GX = (coupled ? 3 : 4) * H;
  const int64_t T = gates.size(0), B = gates.size(1);
  TORCH_CHECK_VALUE(H >= 1, fn, ": w_hh: expected H >= 1, got shape ", w_hh.sizes());
  if (transposed)
    expect(fn, "w_hhT", w_hh, {H, GX}, dtype);
  else
    expect(fn, "w_hh", w_hh, {GX, H}, dtype);
  expect(fn, "peep", peep, {(coupled ? 2 : 3) * H}, dtype, true);
  expect(fn, "h_mask", h_mask, {B, H}, dtype, true);
  expect(fn, "mask", mask, {T, B}, dtype, true);
  expect(fn, "states", states, {T + 1, B, H}, dtype);
  expect(fn, "cells", cells, {T + 1, B, H}, dtype);
  expect(fn, "gates", gates, {T, B, 4 * H}, dtype);
}

// the layer norm tensors of the variant loops, checked: an empty list (off), or the forward's
// ``fw`` names followed, in the backward loops, by ``bw``; shapes from ``shape_of``
template <typename Shape>
void check_norm(const char* fn, const std::vector<torch::Tensor>& norm, const std::vector<const char*>& names,
                Shape shape_of, at::ScalarType dtype) {
  if (norm.empty()) return;
  TORCH_CHECK_VALUE(norm.size() == names.size(), fn, ": norm: expected an empty list (no layer norm) or ",
                    names.size(), " tensors, got ", norm.size());
  for (size_t k = 0; k < names.size(); ++k) {
    const std::vector<int64_t> shape = shape_of(names[k]);
    expect(fn, names[k], norm[k], shape, dtype, shape.empty());
  }
}

// pointers into a checked norm list, by name
template <typename T>
Norm<T> make_norm(const std::vector<torch::Tensor>& norm, const std::vector<const char*>& names) {
  Norm<T> out;
  if (norm.empty()) return out;
  for (size_t k = 0; k < names.size(); ++k) {
    const std::string name = names[k];
    T* ptr = norm[k].numel() ? const_cast<torch::Tensor&>(norm[k]).data_ptr<T>() : nullptr;
    if (name == "g_hh") out.g_hh = ptr;
    else if (name == "b_hh") out.b_hh = ptr;
    else if (name == "g_c") out.g_c = ptr;
    else if (name == "b_c") out.b_c = ptr;
    else if (name == "uhat") out.uhat = ptr;
    else if (name == "urstd") out.urstd = ptr;
    else if (name == "nhat") out.nhat = ptr;
    else if (name == "nrstd") out.nrstd = ptr;
    else if (name == "chat") out.chat = ptr;
    else if (name == "crstd") out.crstd = ptr;
    else if (name == "dhh") out.dhh = ptr;
    else if (name == "dg_hh") out.dg_hh = ptr;
    else if (name == "db_hh") out.db_hh = ptr;
    else if (name == "dg_c") out.dg_c = ptr;
    else if (name == "db_c") out.db_c = ptr;
  }
  return out;
}

const std::vector<const char*> LSTM_NORM = {"g_hh", "b_hh", "g_c", "b_c", "uhat", "urstd", "chat", "crstd"};
const std::vector<const char*> LSTM_NORM_BW = {"g_hh", "b_hh", "g_c", "b_c", "uhat", "urstd", "chat", "crstd",
                                               "dhh", "dg_hh", "db_hh", "dg_c", "db_c"};
const std::vector<const char*> GRU_NORM = {"g_hh", "b_hh", "uhat", "urstd", "nhat", "nrstd"};
const std::vector<const char*> GRU_NORM_BW = {"g_hh", "b_hh", "uhat", "urstd", "nhat", "nrstd", "dhh", "dg_hh", "db_hh"};

// the shapes of the LSTM's norm tensors and zoneout's, for T steps, B rows, H units, GX gate rows
void check_lstm_variants(const char* fn, const std::vector<torch::Tensor>& norm, bool backward,
                         const torch::Tensor& zone, const torch::Tensor& c_pre, int64_t T, int64_t B, int64_t H,
                         int64_t GX, at::ScalarType dtype) {
  check_norm(fn, norm, backward ? LSTM_NORM_BW : LSTM_NORM, [&](const std::string& n) -> std::vector<int64_t> {
    if (n == "g_hh" || n == "b_hh" || n == "dg_hh" || n == "db_hh") return {GX};
    if (n == "g_c" || n == "b_c" || n == "dg_c" || n == "db_c") return {H};
    if (n == "uhat" || n == "dhh") return {T, B, GX};
    if (n == "chat") return {T, B, H};
    return {T, B};  // urstd, crstd
  }, dtype);
  expect(fn, "zone", zone, {T, 2, B, H}, dtype, true);
  if (zone.numel())
    expect(fn, "c_pre", c_pre, {T, B, H}, dtype);
  else
    TORCH_CHECK_VALUE(c_pre.numel() == 0, fn, ": c_pre: expected an empty tensor without zoneout, got shape ", c_pre.sizes());
}

void lstm_forward_loop(torch::Tensor xp, torch::Tensor w_hhT, torch::Tensor peep, bool coupled, torch::Tensor h_mask,
                       torch::Tensor mask, bool reverse, torch::Tensor states, torch::Tensor cells,
                       torch::Tensor gates, int64_t threads, std::vector<torch::Tensor> norm, torch::Tensor zone,
                       torch::Tensor c_pre) {
  const char* fn = "lstm_forward_loop";
  check_lstm(fn, w_hhT, true, peep, coupled, h_mask, mask, states, cells, gates, threads);
  expect(fn, "xp", xp, {gates.size(0), gates.size(1), w_hhT.size(1)}, gates.scalar_type());
  check_lstm_variants(fn, norm, false, zone, c_pre, gates.size(0), gates.size(1), w_hhT.size(0), w_hhT.size(1),
                      gates.scalar_type());
  BlasThreads guard(threads);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "lstm_forward_loop", [&] {
    lstm_forward_impl<scalar_t>(xp, w_hhT, peep, coupled, h_mask, mask, reverse, states, cells, gates,
                                make_norm<scalar_t>(norm, LSTM_NORM), ptr_or_null<scalar_t>(zone),
                                mut_or_null<scalar_t>(c_pre));
  });
}

void lstm_backward_loop(torch::Tensor w_hh, torch::Tensor peep, bool coupled, torch::Tensor h_mask, torch::Tensor mask,
                        bool reverse, torch::Tensor states, torch::Tensor cells, torch::Tensor gates,
                        torch::Tensor g_states, torch::Tensor g_cells, torch::Tensor g_gates, torch::Tensor da,
                        torch::Tensor dh0, torch::Tensor dc0, int64_t threads, std::vector<torch::Tensor> norm,
                        torch::Tensor zone, torch::Tensor c_pre, torch::Tensor g_cpre) {
  const char* fn = "lstm_backward_loop";
  check_lstm(fn, w_hh, false, peep, coupled, h_mask, mask, states, cells, gates, threads);
  const int64_t T = gates.size(0), B = gates.size(1), H = w_hh.size(1);
  const auto dtype = gates.scalar_type();
  expect(fn, "g_states", g_states, {T + 1, B, H}, dtype);
  expect(fn, "g_cells", g_cells, {T + 1, B, H}, dtype, true);
  expect(fn, "g_gates", g_gates, {T, B, 4 * H}, dtype, true);
  expect(fn, "da", da, {T, B, w_hh.size(0)}, dtype);
  expect(fn, "dh0", dh0, {B, H}, dtype);
  expect(fn, "dc0", dc0, {B, H}, dtype);
  check_lstm_variants(fn, norm, true, zone, c_pre, T, B, H, w_hh.size(0), dtype);
  expect(fn, "g_cpre", g_cpre, {T, B, H}, dtype, true);
  BlasThreads guard(threads);
  AT_DISPATCH_FLOATING_TYPES(dtype, "lstm_backward_loop", [&] {
    lstm_backward_impl<scalar_t>(w_hh, peep, coupled, h_mask, mask, reverse, states, cells, gates, g_states, g_cells,
                                 g_gates, da, dh0, dc0, make_norm<scalar_t>(norm, LSTM_NORM_BW),
                                 ptr_or_null<scalar_t>(zone), ptr_or_null<scalar_t>(c_pre),
                                 zone.numel() ? ptr_or_null<scalar_t>(g_cpre) : nullptr);
  });
}

// the GRU's norm tensors and zoneout's, for T steps, B rows, H units
void check_gru_variants(const char* fn, int64_t cell, const std::vector<torch::Tensor>& norm, bool backward,
                        const torch::Tensor& zone, int64_t T, int64_t B, int64_t H, at::ScalarType dtype) {
  const bool before = cell == GRU_BEFORE;
  check_norm(fn, norm, backward ? GRU_NORM_BW : GRU_NORM, [&](const std::string& n) -> std::vector<int64_t> {
    if (n == "g_hh" || n == "b_hh" || n == "dg_hh" || n == "db_hh") return {3 * H};
    if (n == "uhat") return {T, B, (before ? 2 : 3) * H};
    if (n == "dhh") return {T, B, 3 * H};
    if (n == "urstd") return {T, B};
    if (n == "nhat") return before ? std::vector<int64_t>{T, B, H} : std::vector<int64_t>{};
    return before ? std::vector<int64_t>{T, B} : std::vector<int64_t>{};  // nrstd
  }, dtype);
  if (!norm.empty() && !before)
    TORCH_CHECK_VALUE(norm[4].numel() == 0 && norm[5].numel() == 0, fn,
                      ": norm: nhat, nrstd: expected empty tensors for reset=\"after\"");
  expect(fn, "zone", zone, {T, 1, B, H}, dtype, true);
}

// the GRU with its variants: forward_loop / backward_loop with recurrent dropout (h_mask (B, H) or empty),
// layer norm (norm) and zoneout (zone (T, 1, B, H) or empty)
void gru_forward_loop(int64_t cell, torch::Tensor xp, torch::Tensor w_hhT, torch::Tensor b_hn, torch::Tensor h_mask,
                      torch::Tensor mask, bool reverse, torch::Tensor states, torch::Tensor cells, torch::Tensor gates,
                      torch::Tensor extra, int64_t threads, std::vector<torch::Tensor> norm, torch::Tensor zone) {
  const char* fn = "gru_forward_loop";
  TORCH_CHECK_VALUE(cell == GRU_BEFORE || cell == GRU_AFTER, fn, ": cell: expected 3 or 4 (gru), got ", cell);
  check_forward(cell, xp, w_hhT, b_hn, mask, states, cells, gates, extra, threads);
  expect(fn, "h_mask", h_mask, {xp.size(1), w_hhT.size(0)}, xp.scalar_type(), true);
  check_gru_variants(fn, cell, norm, false, zone, xp.size(0), xp.size(1), w_hhT.size(0), xp.scalar_type());
  BlasThreads guard(threads);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "gru_forward_loop", [&] {
    forward_impl<scalar_t>(cell, xp, w_hhT, b_hn, mask, reverse, states, cells, gates, extra,
                           ptr_or_null<scalar_t>(h_mask), make_norm<scalar_t>(norm, GRU_NORM),
                           ptr_or_null<scalar_t>(zone));
  });
}

void gru_backward_loop(int64_t cell, torch::Tensor w_hh, torch::Tensor h_mask, torch::Tensor mask, bool reverse,
                       torch::Tensor states, torch::Tensor cells, torch::Tensor gates, torch::Tensor extra,
                       torch::Tensor g_states, torch::Tensor g_cells, torch::Tensor g_gates, torch::Tensor da,
                       torch::Tensor dhn, torch::Tensor dh0, torch::Tensor dc0, int64_t threads,
                       std::vector<torch::Tensor> norm, torch::Tensor zone) {
  const char* fn = "gru_backward_loop";
  TORCH_CHECK_VALUE(cell == GRU_BEFORE || cell == GRU_AFTER, fn, ": cell: expected 3 or 4 (gru), got ", cell);
  check_backward(cell, w_hh, mask, states, cells, gates, extra, g_states, g_cells, g_gates, da, dhn, dh0, dc0, threads);
  expect(fn, "h_mask", h_mask, {gates.size(1), w_hh.size(1)}, gates.scalar_type(), true);
  check_gru_variants(fn, cell, norm, true, zone, gates.size(0), gates.size(1), w_hh.size(1), gates.scalar_type());
  BlasThreads guard(threads);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gru_backward_loop", [&] {
    backward_impl<scalar_t>(cell, w_hh, mask, reverse, states, cells, gates, extra, g_states, g_cells, g_gates, da,
                            dhn, dh0, dc0, ptr_or_null<scalar_t>(h_mask), make_norm<scalar_t>(norm, GRU_NORM_BW),
                            ptr_or_null<scalar_t>(zone));
  });
}

// ---------------------------------------------------------------------------------------------
// linear recurrences h_t = a_t * h_{t-1} + b_t (minGRU, minLSTM: a_t, b_t depend on x_t alone and are
// computed for all steps before the loop): no GEMM inside the loop, one multiply-add per unit and step.
// Backward: ∂a_t = ∂h_t h_{t-1}, ∂b_t = ∂h_t, ∂h_{t-1} = a_t ∂h_t (+ the outputs' own gradient).
// ---------------------------------------------------------------------------------------------

template <typename T>
RNNLAB_KERNEL void linear_step(int64_t n, const T* __restrict a, const T* __restrict b, const T* __restrict h_prev,
                               T* __restrict h) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) h[k] = a[k] * h_prev[k] + b[k];
}

template <typename T>
RNNLAB_KERNEL void linear_step_back(int64_t n, const T* __restrict a, const T* __restrict h_prev,
                                    const T* __restrict dh, const T* __restrict gh_prev, T* __restrict da,
                                    T* __restrict db, T* __restrict dh_prev) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    da[k] = dh[k] * h_prev[k];
    db[k] = dh[k];
    dh_prev[k] = a[k] * dh[k] + gh_prev[k];
  }
}

template <typename T>
void linear_forward_impl(const torch::Tensor& a_t, const torch::Tensor& b_t, const torch::Tensor& mask_t, bool reverse,
                         torch::Tensor& states_t) {
  const int64_t T_ = a_t.size(0), B = a_t.size(1), H = a_t.size(2);
  const T* a = a_t.data_ptr<T>();
  const T* b = b_t.data_ptr<T>();
  const T* mask = ptr_or_null<T>(mask_t);
  T* hs = states_t.data_ptr<T>();
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    const int64_t p = reverse ? t + 1 : t, n = reverse ? t : t + 1;
    const int64_t q = t * B * H;
    if (!mask) {
      linear_step<T>(B * H, a + q, b + q, hs + p * B * H, hs + n * B * H);
      continue;
    }
    for (int64_t r = 0; r < B; ++r) {  // a row outside its sequence keeps its state
      const int64_t o = r * H;
      if (mask[t * B + r] != T(0))
        linear_step<T>(H, a + q + o, b + q + o, hs + p * B * H + o, hs + n * B * H + o);
      else
        std::memcpy(hs + n * B * H + o, hs + p * B * H + o, H * sizeof(T));
    }
  }
}

template <typename T>
void linear_backward_impl(const torch::Tensor& a_t, const torch::Tensor& mask_t, bool reverse,
                          const torch::Tensor& states_t, const torch::Tensor& g_states_t, torch::Tensor& da_t,
                          torch::Tensor& db_t, torch::Tensor& dh0_t) {
  const int64_t T_ = a_t.size(0), B = a_t.size(1), H = a_t.size(2);
  const T* a = a_t.data_ptr<T>();
  const T* mask = ptr_or_null<T>(mask_t);
  const T* hs = states_t.data_ptr<T>();
  const T* g_hs = g_states_t.data_ptr<T>();
  T* da = da_t.data_ptr<T>();
  T* db = db_t.data_ptr<T>();
  std::vector<T> buf(2 * B * H);
  T* dh = buf.data();
  T* dh_prev = dh + B * H;
  std::memcpy(dh, g_hs + (reverse ? 0 : T_) * B * H, B * H * sizeof(T));
  for (int64_t s = T_ - 1; s >= 0; --s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    const int64_t p = reverse ? t + 1 : t;
    const int64_t q = t * B * H;
    if (!mask) {
      linear_step_back<T>(B * H, a + q, hs + p * B * H, dh, g_hs + p * B * H, da + q, db + q, dh_prev);
    } else {
      for (int64_t r = 0; r < B; ++r) {
        const int64_t o = r * H;
        if (mask[t * B + r] != T(0)) {
          linear_step_back<T>(H, a + q + o, hs + p * B * H + o, dh + o, g_hs + p * B * H + o, da + q + o, db + q + o,
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
  std::memcpy(dh0_t.data_ptr<T>(), dh, B * H * sizeof(T));
}

void linear_forward_loop(torch::Tensor a, torch::Tensor b, torch::Tensor mask, bool reverse, torch::Tensor states) {
  const char* fn = "linear_forward_loop";
  TORCH_CHECK_VALUE(a.dim() == 3, fn, ": a: expected a 3-D tensor (T, B, H), got shape ", a.sizes());
  const auto dtype = a.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, fn, ": expected float32 or float64 tensors, got ", dtype);
  const int64_t T = a.size(0), B = a.size(1), H = a.size(2);
  expect(fn, "a", a, {T, B, H}, dtype);
  expect(fn, "b", b, {T, B, H}, dtype);
  expect(fn, "mask", mask, {T, B}, dtype, true);
  expect(fn, "states", states, {T + 1, B, H}, dtype);
  AT_DISPATCH_FLOATING_TYPES(dtype, "linear_forward_loop", [&] { linear_forward_impl<scalar_t>(a, b, mask, reverse, states); });
}

void linear_backward_loop(torch::Tensor a, torch::Tensor mask, bool reverse, torch::Tensor states,
                          torch::Tensor g_states, torch::Tensor da, torch::Tensor db, torch::Tensor dh0) {
  const char* fn = "linear_backward_loop";
  TORCH_CHECK_VALUE(a.dim() == 3, fn, ": a: expected a 3-D tensor (T, B, H), got shape ", a.sizes());
  const auto dtype = a.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, fn, ": expected float32 or float64 tensors, got ", dtype);
  const int64_t T = a.size(0), B = a.size(1), H = a.size(2);
  expect(fn, "a", a, {T, B, H}, dtype);
  expect(fn, "mask", mask, {T, B}, dtype, true);
  expect(fn, "states", states, {T + 1, B, H}, dtype);
  expect(fn, "g_states", g_states, {T + 1, B, H}, dtype);
  expect(fn, "da", da, {T, B, H}, dtype);
  expect(fn, "db", db, {T, B, H}, dtype);
  expect(fn, "dh0", dh0, {B, H}, dtype);
  AT_DISPATCH_FLOATING_TYPES(dtype, "linear_backward_loop", [&] {
    linear_backward_impl<scalar_t>(a, mask, reverse, states, g_states, da, db, dh0);
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnlab's fast engine: the per-step forward and backward loops of hand-written BPTT";
  // the GIL is released: the two directions of a bidirectional level run on two threads at once
  m.def("forward_loop", &forward_loop, py::call_guard<py::gil_scoped_release>(),
        "forward loop: fills states, cells, gates, extra in place");
  m.def("backward_loop", &backward_loop, py::call_guard<py::gil_scoped_release>(),
        "backward loop: fills da, dhn, dh0, dc0 in place");
  m.def("lstm_forward_loop", &lstm_forward_loop, py::call_guard<py::gil_scoped_release>(),
        "the LSTM's variants (peepholes, coupled, recurrent dropout, layer norm, zoneout): forward loop, fills "
        "states, cells, gates (and layer norm's saved values, zoneout's c_pre)");
  m.def("lstm_backward_loop", &lstm_backward_loop, py::call_guard<py::gil_scoped_release>(),
        "the LSTM's variants: backward loop, fills da, dh0, dc0 (and layer norm's dhh and gradients) in place");
  m.def("gru_forward_loop", &gru_forward_loop, py::call_guard<py::gil_scoped_release>(),
        "the GRU's variants (recurrent dropout, layer norm, zoneout): forward loop, fills states, gates, extra "
        "(and layer norm's saved values) in place");
  m.def("linear_forward_loop", &linear_forward_loop, py::call_guard<py::gil_scoped_release>(),
        "h_t = a_t h_{t-1} + b_t (minGRU, minLSTM): forward loop, fills states in place");
  m.def("linear_backward_loop", &linear_backward_loop, py::call_guard<py::gil_scoped_release>(),
        "the backward loop of linear_forward_loop: fills da, db, dh0 in place");
  m.def("gru_backward_loop", &gru_backward_loop, py::call_guard<py::gil_scoped_release>(),
        "the GRU's variants: backward loop, fills da, dhn, dh0 (and layer norm's dhh and gradients) in place");
}
