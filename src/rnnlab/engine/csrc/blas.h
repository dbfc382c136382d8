// The GEMMs of the loops: BLAS called directly on raw row-major buffers (no tensor per step).
#pragma once

#include <cstdint>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*);
// MKL (torch's BLAS here): the calling thread's BLAS thread count; weak, so another BLAS still links
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
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
