// The recurrent engine's products on ATen's brgemm (oneDNN's micro-kernels, at::native::cpublas::brgemm): W laid out
// once per call, multiplied by every step. PackedW below says where each form runs and what it measured.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "blas.h"
#include "transpose.h"

namespace rnnlab {

// W (K, N) laid out once per call in blocks of NB columns (the last one narrower) for ATen's brgemm, then multiplied by
// every step (and by the bf16 mode's GEMMs over T·B rows, ops.cpp's mm16_packed). Block j starts at j·K·NB numbers
// and holds rows [0, K) with row stride ld(width):
// - float32 (BlockedF32): rows dense (ld = width); oneDNN's float32 micro-kernel (is_vnni = false). Where MKL's SGEMM
//   is not tuned for the CPU: on the AMD EPYC host (Zen 4, AVX-512, no AMX) MKL takes its generic code path and one
//   thread's product at a step's shapes ran 0.44-0.82x MKL's time, 96-117 GFLOP/s against 42-95 ((M, N, K) = (4, 256,
//   64) to (128, 2048, 512), benchmarks/bench_f32_products.py). On by default on AVX-512 CPUs that are not Intel's (where
//   MKL runs its own AVX-512 kernels); RNNLAB_BRGEMM_F32=1 / 0 forces it, RNNLAB_PACK=1 (MKL's packed form wherever a
//   loop can run it) turns it off.
// - bf16 (PackedBf16): rows in pairs, (K/2, ld, 2) with ld rounded up to 16 and the padding zero, the "VNNI" layout;
//   ATen packs it where the CPU has AMX, rnnlab itself where it has AVX-512-BF16 only (ATen packs only for AMX).
//   MKL's bf16 GEMM (cblas_gemm_bf16bf16f32) has no packed form here, so every step's call re-packs all of W_hh: on
//   the Intel host (AMX) one thread's product went 798 -> 321 us at (128, 2048, 512), 137 -> 50 at (64, 1024, 512),
//   10.5 -> 6.6 at (16, 512, 128); on the AMD EPYC host it ran 218-233 GFLOP/s against MKL's bf16 GEMM's 69-90 at
//   (16, 512, 128) to (128, 2048, 512). RNNLAB_BRGEMM=0 turns it off.
// A product over rows [k0, k0 + kn) and columns [col, col + width) reads whole blocks (covers(): col on a block's edge,
// width to a block's edge or the end; bf16: k0 and kn even, or kn to the end), else the caller runs BLAS on W itself.
// Each thread releases the AMX tile state when done, because MKL's own AMX kernels configure the tiles in between.
template <typename E>
class PackedW {
 public:
  static constexpr bool vnni = std::is_same_v<E, bf16_t>;
  static constexpr int64_t NB = 64;    // columns a block: 64 measured faster than 32 at every shape but B = 8 (bf16, AMX)
  static constexpr int64_t MR = 128;   // rows of A a thread takes through its blocks at a time (the input chunks)
  static constexpr int64_t KC = 1024;  // the depth one call multiplies over (even: bf16 rows stay in pairs)

  // bf16: whether ATen packs for this CPU (AMX)
  static bool aten_packs() {
    static const bool can = at::native::cpublas::could_pack(at::kBFloat16);
    return can;
  }
  // whether the products run here (the variables are read at every call, as the other routes' are)
  static bool available() {
    static const bool cpu = [] {
      __builtin_cpu_init();
      if constexpr (vnni) return aten_packs() || __builtin_cpu_supports("avx512bf16") != 0;
      return __builtin_cpu_supports("avx512f") != 0 && !__builtin_cpu_is("intel");
    }();
    auto env = [](const char* name, const char* value) {
      const char* v = std::getenv(name);
      return v != nullptr && std::strcmp(v, value) == 0;
    };
    if constexpr (vnni) return cpu && !env("RNNLAB_BRGEMM", "0");
    if (env("RNNLAB_BRGEMM_F32", "1")) return true;
    if (env("RNNLAB_BRGEMM_F32", "0")) return false;
    return cpu && !env("RNNLAB_PACK", "1");
  }
  static bool packable(int64_t K, int64_t N) { return K > 0 && N > 0 && (!vnni || K % 2 == 0); }
  // W (K, N) with row stride ldw, laid out where the products run (available, packable), else null: the caller's
  // products then run BLAS on W itself; ``transposed``: W is given as Wᵀ (N, K), dense (a weight as torch stores it:
  // W_ih for the input projection x · W_ihᵀ)
  static std::shared_ptr<const PackedW> make(int64_t K, int64_t N, const E* W, int64_t ldw, bool transposed = false) {
    if (!W || !available() || !packable(K, N)) return nullptr;
    if (!transposed) return std::make_shared<const PackedW>(K, N, W, ldw);
    std::vector<E> dense(K * N);
    if constexpr (vnni) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) dense[k * N + n] = W[n * K + k];
    } else {
      transpose(N, K, W, dense.data());
    }
    return std::make_shared<const PackedW>(K, N, dense.data(), N);
  }

  // the loops' products run here so far (rnnlab::brgemm_products, brgemm_f32_products: the tests and the bench see
  // that it ran)
  static std::atomic<int64_t>& products() {
    static std::atomic<int64_t> n{0};
    return n;
  }

  PackedW(int64_t K, int64_t N, const E* W, int64_t ldw) : K_(K), N_(N) {
    buf_.assign(K * (N / NB * NB + (N % NB ? ld(N % NB) : 0)), E(0));
    for (int64_t c = 0; c < N; c += NB) {
      const int64_t w = std::min(NB, N - c);
      E* out = buf_.data() + c * K;
      if constexpr (!vnni) {
        for (int64_t k = 0; k < K; ++k) std::memcpy(out + k * w, W + k * ldw + c, w * sizeof(E));
      } else if (aten_packs()) {
        at::native::cpublas::pack(K, w, ldw, ld(w), at::kBFloat16, at::kBFloat16, W + c, out);
      } else {  // the same layout by hand: rows in pairs, the padding columns zero
        for (int64_t k = 0; k < K; k += 2) {
          const E* r0 = W + k * ldw + c;
          const E* r1 = k + 1 < K ? r0 + ldw : nullptr;
          E* o = out + k * ld(w);
          for (int64_t j = 0; j < w; ++j) o[2 * j] = r0[j], o[2 * j + 1] = r1 ? r1[j] : E(0);
        }
      }
    }
  }

  bool covers(int64_t k0, int64_t kn, int64_t col, int64_t width) const {
    const bool rows = vnni ? k0 % 2 == 0 && (kn % 2 == 0 || k0 + kn == K_) : k0 >= 0;
    return rows && k0 + kn <= K_ && col % NB == 0 && (width % NB == 0 || col + width == N_) && col + width <= N_ &&
           kn > 0 && width > 0;
  }

  // C (M, width) = A (M, kn) · W[k0 : k0 + kn, col : col + width] (+ C where add), C's row stride ldc; the column
  // blocks split between ``threads`` threads of ATen's pool (one inside a parallel region); each thread takes A MR
  // rows at a time through its blocks, so those rows stay in its cache, and a long depth (the weights' gradients:
  // T·B) KC at a time. ``count``: whether it counts among products(), the loops' (ops.cpp's GEMMs over T·B rows do not)
  void product(int64_t M, const E* A, int64_t lda, int64_t k0, int64_t kn, int64_t col, int64_t width, bool add,
               float* C, int64_t ldc, int64_t threads, bool count = true) const {
    if (count) products().fetch_add(1, std::memory_order_relaxed);
    const int64_t first = col / NB, last = (col + width + NB - 1) / NB;
    auto blocks = [&](int64_t j0, int64_t j1) {
      for (int64_t r = 0; r < M; r += MR) {
        const int64_t m = std::min(MR, M - r);
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t c = j * NB, w = std::min(NB, N_ - c);
          for (int64_t kk = 0; kk < kn; kk += KC)
            at::native::cpublas::brgemm(m, w, std::min(KC, kn - kk), lda, ld(w), ldc, add || kk > 0,
                                        aten(A + r * lda + kk), aten(buf_.data() + c * K_ + (k0 + kk) * ld(w)),
                                        C + r * ldc + (c - col), vnni);
        }
      }
      if constexpr (vnni) at::native::cpublas::brgemm_release(true);
    };
    if (threads > 1 && last - first > 1 && !at::in_parallel_region())
      at::parallel_for(first, last, (last - first + threads - 1) / threads, blocks);
    else
      blocks(first, last);
  }

 private:
  static int64_t ld(int64_t w) { return vnni ? (w + 15) / 16 * 16 : w; }
  static auto aten(const E* p) {
    if constexpr (vnni)
      return reinterpret_cast<const at::BFloat16*>(p);
    else
      return p;
  }
  int64_t K_, N_;
  std::vector<E> buf_;
};

using BlockedF32 = PackedW<float>;
using PackedBf16 = PackedW<bf16_t>;

}  // namespace rnnlab
