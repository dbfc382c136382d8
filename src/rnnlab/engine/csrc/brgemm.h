// The bf16 mode's per-step recurrent GEMMs on W_hh packed once per call: ATen's brgemm (oneDNN's AMX micro-kernel,
// at::native::cpublas::brgemm) on W_hh in the pair-interleaved ("VNNI") layout AMX reads.
//
// MKL's bf16 GEMM (cblas_gemm_bf16bf16f32) has no packed form here, so every step's call re-packs all of W_hh
// before it multiplies (its copy_down kernels were a tenth of a bf16 LSTM inference profile), and at a step's shapes it
// reached 84-491 GFLOP/s on one thread. The same products on W_hh packed once, in blocks of 64 columns, ran at
// 164-1447 GFLOP/s on one thread (Intel Xeon with AMX; (M, N, K) = (128, 2048, 512): 798 → 321 µs, (64, 1024, 512):
// 137 → 50 µs, (16, 512, 128): 10.5 → 6.6 µs, (8, 1024, 512): 100 → 51 µs, 30 in blocks of 32).
//
// W (K, N) is packed in blocks of NB columns (the last one narrower), block j at j·K·NB numbers, each block's rows in
// pairs: (K/2, width, 2), its row stride (width) rounded up to 16 as oneDNN's packing asks. A product over rows
// [k0, k0 + kn) and columns [col, col + width) then reads whole blocks from row k0 on: covers() says when the
// ranges allow that (K, k0, kn even; col on a block's edge; width to a block's edge or the end), else the caller runs
// MKL on the unpacked copy. A product's blocks are split between threads where asked; each thread releases the AMX
// tile state when done, because MKL's own AMX kernels (the input projection's) configure the tiles in between.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "blas.h"

namespace rnnlab {

// The float32 per-step products on W blocked once per call, through the same brgemm (oneDNN's float32 micro-kernel,
// at::native::cpublas::brgemm with is_vnni = false), where MKL's SGEMM is not tuned for the CPU.
//
// On the AMD EPYC host (Zen 4, AVX-512, no AMX) MKL takes its generic code path, and one thread's product at a step's
// shapes reached 66-90 GFLOP/s; the same products on W copied once into blocks of 64 columns ran 113-116 GFLOP/s
// ((M, N, K) = (64, 2048, 512): 1657 -> 1161 us, (16, 512, 128): 31.5 -> 18.5, (4, 256, 64): 3.2 -> 1.4; min of 30
// calls, benchmarks/bench_brgemm.py --f32). On Intel CPUs MKL runs its own AVX-512 kernels, so there the products stay
// MKL's unless RNNLAB_BRGEMM_F32=1 asks for these; RNNLAB_BRGEMM_F32=0 never runs them (the tests compare the two).
//
// W (K, N) is copied in blocks of NB columns (the last one narrower), block j at j·K·NB numbers, each (K, width) dense;
// a product over rows [k0, k0 + kn) and columns [col, col + width) reads whole blocks (covers(): col on a block's
// edge, width to a block's edge or the end), else the caller runs BLAS on W itself.
class BlockedF32 {
 public:
  static constexpr int64_t NB = 64;

  // whether loops run these products: RNNLAB_BRGEMM_F32=1 / 0 forces it; by default on CPUs with AVX-512 that are not
  // Intel's (where MKL's SGEMM takes its generic path). RNNLAB_PACK=1, MKL's packed form wherever a loop can run it,
  // turns them off too. The variables are read at every call, as the other routes' are.
  static bool wanted() {
    static const bool cpu = [] {
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && !__builtin_cpu_is("intel");
    }();
    const char* env = std::getenv("RNNLAB_BRGEMM_F32");
    if (env && std::strcmp(env, "1") == 0) return true;
    if (env && std::strcmp(env, "0") == 0) return false;
    const char* pack = std::getenv("RNNLAB_PACK");
    return cpu && !(pack && std::strcmp(pack, "1") == 0);
  }
  // W (K, N), row stride ldw, blocked where wanted (else null: the caller's products then run BLAS on W itself);
  // ``transposed``: W is given as Wᵀ (N, K) with row stride ldw (a weight as torch stores it: W_ih for x · W_ihᵀ)
  static std::shared_ptr<const BlockedF32> make(int64_t K, int64_t N, const float* W, int64_t ldw,
                                                bool transposed = false) {
    return wanted() && K > 0 && N > 0 ? std::make_shared<const BlockedF32>(K, N, W, ldw, transposed) : nullptr;
  }
  // products run here so far (rnnlab::brgemm_f32_products: the tests and the bench see that it ran)
  static std::atomic<int64_t>& products() {
    static std::atomic<int64_t> n{0};
    return n;
  }

  BlockedF32(int64_t K, int64_t N, const float* W, int64_t ldw, bool transposed = false) : K_(K), N_(N), buf_(K * N) {
    for (int64_t c = 0; c < N; c += NB) {
      const int64_t w = std::min(NB, N - c);
      float* out = buf_.data() + c * K;
      if (!transposed) {
        for (int64_t k = 0; k < K; ++k) std::memcpy(out + k * w, W + k * ldw + c, w * sizeof(float));
      } else {
        for (int64_t j = 0; j < w; ++j)
          for (int64_t k = 0; k < K; ++k) out[k * w + j] = W[(c + j) * ldw + k];
      }
    }
  }

  bool covers(int64_t k0, int64_t kn, int64_t col, int64_t width) const {
    return col % NB == 0 && (width % NB == 0 || col + width == N_) && col + width <= N_ && k0 + kn <= K_ && kn > 0 &&
           width > 0 && k0 >= 0;
  }

  // C (M, width) = A (M, kn) · W[k0 : k0 + kn, col : col + width] (+ C where add), C's row stride ldc; the column
  // blocks split between ``threads`` threads of ATen's pool (one inside a parallel region). Past MR rows (the input
  // projection's chunks) each thread takes A MR rows at a time through its blocks, so those rows stay in its cache.
  static constexpr int64_t MR = 128;
  void product(int64_t M, const float* A, int64_t lda, int64_t k0, int64_t kn, int64_t col, int64_t width, bool add,
               float* C, int64_t ldc, int64_t threads) const {
    products().fetch_add(1, std::memory_order_relaxed);
    const int64_t first = col / NB, last = (col + width + NB - 1) / NB;
    auto blocks = [&](int64_t j0, int64_t j1) {
      for (int64_t r = 0; r < M; r += MR) {
        const int64_t m = std::min(MR, M - r);
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t c = j * NB, w = std::min(NB, N_ - c);
          at::native::cpublas::brgemm(m, w, kn, lda, w, ldc, add, A + r * lda, buf_.data() + c * K_ + k0 * w,
                                      C + r * ldc + (c - col), false);
        }
      }
    };
    if (threads > 1 && last - first > 1 && !at::in_parallel_region())
      at::parallel_for(first, last, (last - first + threads - 1) / threads, blocks);
    else
      blocks(first, last);
  }

 private:
  int64_t K_, N_;
  std::vector<float> buf_;
};

class PackedBf16 {
 public:
  static constexpr int64_t NB = 64;  // columns a block: 64 measured faster than 32 at every shape above but B = 8
  static constexpr int64_t KC = 1024;  // the depth one brgemm call multiplies over (even: rows stay in pairs)

  // whether the products run here: oneDNN packs bf16 for this CPU (AMX), or the CPU has AVX-512-BF16, where brgemm's
  // bf16 kernel runs on blocks this class packs itself (ATen packs only for AMX); and RNNLAB_BRGEMM is not 0. On the
  // AMD EPYC host (Zen 4, no AMX) one thread's product ran 218-233 GFLOP/s against MKL's bf16 GEMM's 69-90 and the
  // float32 brgemm's 105-116 ((M, N, K) = (16, 512, 128) to (128, 2048, 512))
  static bool aten_packs() {
    static const bool can = at::native::cpublas::could_pack(at::kBFloat16);
    return can;
  }
  static bool available() {
    static const bool cpu = [] {
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512bf16") != 0;
    }();
    const char* env = std::getenv("RNNLAB_BRGEMM");
    return (aten_packs() || cpu) && !(env && std::strcmp(env, "0") == 0);
  }
  static bool packable(int64_t K, int64_t N) { return K > 0 && N > 0 && K % 2 == 0; }
  // W (K, N), dense, packed where the products run here (available, K even), else null: the caller's products then
  // run MKL on W itself
  static std::shared_ptr<const PackedBf16> make(int64_t K, int64_t N, const bf16_t* W) {
    return available() && packable(K, N) ? std::make_shared<const PackedBf16>(K, N, W, N) : nullptr;
  }
  // the same for W given as Wᵀ (N, K), dense (a weight as torch stores it: W_ih for the input projection x · W_ihᵀ)
  static std::shared_ptr<const PackedBf16> make_transposed(int64_t K, int64_t N, const bf16_t* Wt) {
    if (!available() || !packable(K, N)) return nullptr;
    std::vector<bf16_t> W(K * N);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) W[k * N + n] = Wt[n * K + k];
    return std::make_shared<const PackedBf16>(K, N, W.data(), N);
  }

  // products run here so far (rnnlab::brgemm_products: the tests and the bench see that it ran)
  static std::atomic<int64_t>& products() {
    static std::atomic<int64_t> n{0};
    return n;
  }

  // W (K, N), row stride ldw (callers check packable first)
  PackedBf16(int64_t K, int64_t N, const bf16_t* W, int64_t ldw) : K_(K), N_(N) {
    buf_.assign(K * (N / NB * NB + (N % NB ? ld(N % NB) : 0)), bf16_t(0));
    for (int64_t c = 0; c < N; c += NB) {
      const int64_t w = std::min(NB, N - c);
      if (aten_packs()) {
        at::native::cpublas::pack(K, w, ldw, ld(w), at::kBFloat16, at::kBFloat16, W + c, buf_.data() + c * K);
      } else {  // the same layout by hand: rows in pairs, (K/2, ld(w), 2), the padding columns zero
        bf16_t* out = buf_.data() + c * K;
        for (int64_t k = 0; k < K; k += 2) {
          const bf16_t* r0 = W + k * ldw + c;
          const bf16_t* r1 = k + 1 < K ? r0 + ldw : nullptr;
          bf16_t* o = out + k * ld(w);
          for (int64_t j = 0; j < w; ++j) o[2 * j] = r0[j], o[2 * j + 1] = r1 ? r1[j] : bf16_t(0);
        }
      }
    }
  }

  bool covers(int64_t k0, int64_t kn, int64_t col, int64_t width) const {
    return k0 % 2 == 0 && (kn % 2 == 0 || k0 + kn == K_) && k0 + kn <= K_ && col % NB == 0 &&
           (width % NB == 0 || col + width == N_) && col + width <= N_ && kn > 0 && width > 0;
  }

  // C (M, width) = A (M, kn) · W[k0 : k0 + kn, col : col + width] (+ C where add), C's row stride ldc; the column
  // blocks split between ``threads`` threads of ATen's pool (one inside a parallel region)
  // (``count``: whether it counts among products(), the loops' products; ops.cpp's GEMMs over T·B rows do not)
  void product(int64_t M, const bf16_t* A, int64_t lda, int64_t k0, int64_t kn, int64_t col, int64_t width, bool add,
               float* C, int64_t ldc, int64_t threads, bool count = true) const {
    if (count) products().fetch_add(1, std::memory_order_relaxed);
    const int64_t first = col / NB, last = (col + width + NB - 1) / NB;
    auto blocks = [&](int64_t j0, int64_t j1) {
      for (int64_t r = 0; r < M; r += BlockedF32::MR) {  // the input projection's chunks: MR rows at a time
        const int64_t m = std::min(BlockedF32::MR, M - r);
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t c = j * NB, w = std::min(NB, N_ - c);
          for (int64_t kk = 0; kk < kn; kk += KC) {  // a long depth (the weights' gradients: T·B) in chunks of KC
            at::native::cpublas::brgemm(m, w, std::min(KC, kn - kk), lda, ld(w), ldc, add || kk > 0,
                                        reinterpret_cast<const at::BFloat16*>(A + r * lda + kk),
                                        reinterpret_cast<const at::BFloat16*>(buf_.data() + c * K_ + (k0 + kk) * ld(w)),
                                        C + r * ldc + (c - col), true);
          }
        }
      }
      at::native::cpublas::brgemm_release(true);
    };
    if (threads > 1 && last - first > 1 && !at::in_parallel_region())
      at::parallel_for(first, last, (last - first + threads - 1) / threads, blocks);
    else
      blocks(first, last);
  }

 private:
  static int64_t ld(int64_t w) { return (w + 15) / 16 * 16; }
  int64_t K_, N_;
  std::vector<bf16_t> buf_;
};

}  // namespace rnnlab
