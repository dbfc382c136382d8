// The GEMMs of the loops: BLAS called directly on raw row-major buffers (no tensor per step).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include <immintrin.h>
#include <unistd.h>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*);
// MKL (torch's BLAS here): the calling thread's BLAS thread count; weak, so another BLAS still links
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
// MKL's packed GEMM (CBLAS enums as ints: row major 101, no transpose 111, packed 151, B matrix 162)
size_t cblas_sgemm_pack_get_size(int, int, int, int) __attribute__((weak));
void cblas_sgemm_pack(int, int, int, int, int, int, float, const float*, int, float*) __attribute__((weak));
void cblas_sgemm_compute(int, int, int, int, int, int, const float*, int, const float*, int, float, float*, int)
    __attribute__((weak));
// MKL's bf16 GEMM (row-major flag 101, no-transpose 111, transpose 112): bf16 operands, float32 accumulation
// and output; weak, so another BLAS still links (and the operators then never run their bf16 mode)
void cblas_gemm_bf16bf16f32(int layout, int transa, int transb, int m, int n, int k, float alpha, const uint16_t* a,
                            int lda, const uint16_t* b, int ldb, float beta, float* c, int ldc) __attribute__((weak));
}

namespace rnnlab {

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

// row-major C (M, N) = A (M, K) · B (K, N) + beta · C, with row strides lda, ldb, ldc;
// BLAS is column-major, so it computes Cᵀ = Bᵀ · Aᵀ.
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C,
          int64_t ldc) {
  const char no = 'N';
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const T one = 1;
  blas(&no, &no, &n, &m, &k, &one, B, &lb, A, &la, &beta, C, &lc);
}

// row-major C (M, N) = A (M, K) · Bᵀ + beta · C, B (N, K) with row stride ldb (a weight as torch stores it)
template <typename T>
void gemm_t(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C,
            int64_t ldc) {
  const char no = 'N', tr = 'T';
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const T one = 1;
  blas(&tr, &no, &n, &m, &k, &one, B, &lb, A, &la, &beta, C, &lc);
}

// a core's L2 in bytes, as the loops' rules read it (sysconf; 1 MB where the system does not say)
inline int64_t l2_bytes() {
  static const int64_t bytes = [] {
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? int64_t(v) : int64_t(1) << 20;
  }();
  return bytes;
}

// A recurrent weight packed once per call into MKL's internal layout, then reused by every step's GEMM
// (cblas_sgemm_pack / cblas_sgemm_compute): row-major C (M, N) = A (M, K) · Bw (K, N) + beta · C, Bw packed.
// ``wanted()`` says whether a loop uses it; ``on()`` whether this one was packed.
template <typename T>
class PackedB {
 public:
  // pack Bw (K, N), row stride ldb, for products with M rows (callers check ``wanted()`` first)
  void pack(int64_t M, int64_t N, int64_t K, const T* Bw, int64_t ldb) {
    if constexpr (std::is_same_v<T, float>) {
      buf_.assign(cblas_sgemm_pack_get_size(162, int(M), int(N), int(K)) / sizeof(float) + 1, 0.f);
      cblas_sgemm_pack(101, 162, 111, int(M), int(N), int(K), 1.f, Bw, int(ldb), buf_.data());
      M_ = M, N_ = N, K_ = K;
      packs().fetch_add(1, std::memory_order_relaxed);
    }
  }
  bool on() const { return !buf_.empty(); }
  // weights packed so far in this process (rnnlab::sgemm_packs: the tests see the rule's choice)
  static std::atomic<int64_t>& packs() {
    static std::atomic<int64_t> n{0};
    return n;
  }
  int64_t width() const { return N_; }
  int64_t depth() const { return K_; }
  // C (M, N) = A (M, K) · Bw + beta · C
  void product(const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm_compute(101, 111, 151, int(M_), int(N_), int(K_), A, int(lda), buf_.data(), int(N_), beta, C,
                          int(ldc));
  }
  // Whether a loop packs its recurrent weight: where the block of it one thread multiplies by every step
  // (``bytes_per_thread``) is larger than a core's L2 (l2_bytes). There every step's GEMM reads the block from L3 or
  // memory whatever the layout, and MKL's unpacked GEMM also copies it into its panels each step, which the packed
  // form does once per call. RNNLAB_PACK=1 packs wherever the loop can, RNNLAB_PACK=0 never. Measured with 2
  // threads, min and median of interleaved calls, packed / unpacked:
  // - inside the L2 it does not pay: a batch-1 LSTM's inference 0.34 → 0.86 ms, (100, 32, 64, 128) training
  //   14.9 → 16.3 ms; with W_hh 1536 × 512 (3 MB over two BLAS threads) within ±5 % at (50, 128, 256, 512); the
  //   LSTM's inference split by unit at H = 512 (each part's block 2 MB, this L2) 0.94-0.95 at B = 8-16 but
  //   1.05-1.10 at B = 24-32;
  // - past it (H = 1024, each part's block 8 MB): LSTM inference 0.84-0.83 at (50, 32, 512, 1024) and
  //   0.79-0.76 at (20, 128, 1024, 1024) (which brings it level with torch's oneDNN kernel), training 0.85-0.89 (LSTM)
  //   and 0.90-0.99 (GRU) at (20, 64, 512, 1024);
  // - at the L2 (a block of exactly a core's L2) in training, whose steps also stream the saved gates and states
  //   through the cache: the LSTM at H = 512 on one loop (W_hh 4 MB over two BLAS threads, 2 MB each) 0.93-0.97 (min)
  //   and 0.91-0.94 (median) at (50, 128, 256, 512) over two A/Bs of 8 interleaved steps, 0.94 and 0.87 at B = 32,
  //   0.86 and 0.93 at B = 64 (1.03 and 0.99 with ∂x as well at B = 128; with this rule in place, against
  //   RNNLAB_PACK=0, 1.01 and 0.92): a few per cent in the medians, within the host's noise in the minima; so
  //   ``training`` loops pack from a block of the L2's size on. Below it training does not gain: the GRU there (1.5 MB
  //   a thread) 1.04 and 0.99, the LSTM at (100, 64, 256, 256) split by row (1 MB a thread) 1.01 and 1.04.
  static bool wanted(int64_t bytes_per_thread, bool training = false) {
    if constexpr (!std::is_same_v<T, float>) return false;
    if (!(cblas_sgemm_pack_get_size && cblas_sgemm_pack && cblas_sgemm_compute)) return false;
    const char* env = std::getenv("RNNLAB_PACK");
    if (env && std::strcmp(env, "1") == 0) return true;
    if (env && std::strcmp(env, "0") == 0) return false;
    return training ? bytes_per_thread >= l2_bytes() : bytes_per_thread > l2_bytes();
  }
 private:
  std::vector<float> buf_;
  int64_t M_ = 0, N_ = 0, K_ = 0;
};

// ---- bf16: the operators' mixed-precision mode (ops.cpp's use_bf16 says when it runs) ----
// a bf16 number is the upper half of a float32's bits: 8 significant bits, the float32 exponent range
using bf16_t = uint16_t;

inline bool have_gemm_bf16() { return cblas_gemm_bf16bf16f32 != nullptr; }

// float32 -> bf16, round to nearest even (NaN stays NaN)
inline bf16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16_t>(u >> 16);
}

// rows (rows, cols) of a row-major float32 matrix with row stride ld -> a dense bf16 (rows, cols); the
// vector form (VCVTNEPS2BF16, round to nearest even) runs only where the CPU has AVX-512-BF16, which the
// bf16 mode requires (ops.cpp's bf16_kernel)
__attribute__((target("avx512f,avx512bf16,avx512vl"))) inline void to_bf16_rows(int64_t rows, int64_t cols,
                                                                                  const float* in, int64_t ld,
                                                                                  bf16_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = in + r * ld;
    bf16_t* dst = out + r * cols;
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j)));
    for (; j < cols; ++j) dst[j] = to_bf16(src[j]);
  }
}

// row-major C (M, N) = op(A) · op(B) + beta · C: A is (M, K), or (K, M) when ta; B is (K, N), or (N, K) when tb;
// bf16 operands, float32 accumulation into float32 C
inline void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const bf16_t* A, int64_t lda,
                      const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_gemm_bf16bf16f32(101, ta ? 112 : 111, tb ? 112 : 111, static_cast<int>(M), static_cast<int>(N),
                         static_cast<int>(K), 1.0f, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta, C,
                         static_cast<int>(ldc));
}

// the per-step GEMMs of a small layer are a few µs: on a busy machine, waking a second BLAS thread
// for each can cost more than the GEMM, so the driver says how many threads the loop's GEMMs get
class BlasThreads {
 public:
  explicit BlasThreads(int64_t n)
      : old_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(static_cast<int>(n)) : 0) {}
  ~BlasThreads() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(old_);
  }
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;

 private:
  int old_;
};

}  // namespace rnnlab
