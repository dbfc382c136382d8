"""The float32 per-step product's rate on this CPU, on one thread: MKL's SGEMM (what the loops call through BLAS) against
ATen's float32 brgemm (oneDNN's micro-kernel) on W copied once into blocks of 64 columns, the route csrc/brgemm.h's
BlockedF32 takes where ``RNNLAB_BRGEMM_F32`` is on (by default: CPUs with AVX-512 that are not Intel's).

Each shape (M, N, K) is one step's product: M rows of the batch (or of an input chunk), N = the gate columns, K = the
depth (H for W_hhᵀ, X for W_ihᵀ). Reported: the best of ``reps`` calls in µs and as GFLOP/s (2 flops a multiply-add).
It compiles a small extension at run time (torch.utils.cpp_extension, g++), so it needs no build of rnnlab's own; it
prints a markdown table. Usage: ``python benchmarks/bench_f32_products.py [reps]``.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from torch.utils.cpp_extension import load_inline

SOURCE = r"""
#include <ATen/native/CPUBlas.h>
#include <algorithm>
#include <chrono>
#include <vector>

extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                       const int*, const float*, const int*, const float*, float*, const int*);

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// best seconds of `reps` calls: [MKL's SGEMM on row-major W (K, N), brgemm on W in (K, 64) column blocks]
std::vector<double> time_products(int64_t M, int64_t N, int64_t K, int64_t reps) {
  std::vector<float> A(M * K), W(K * N), blocked(K * N), C(M * N);
  for (int64_t i = 0; i < M * K; ++i) A[i] = 0.01f * float(i % 7);
  for (int64_t i = 0; i < K * N; ++i) W[i] = 0.02f * float(i % 5);
  const int64_t NB = 64;
  for (int64_t c = 0; c < N; c += NB) {
    const int64_t w = std::min(NB, N - c);
    for (int64_t k = 0; k < K; ++k) std::copy(W.begin() + k * N + c, W.begin() + k * N + c + w, blocked.begin() + c * K + k * w);
  }
  const char no = 'N';
  const int m = int(M), n = int(N), k = int(K);
  const float one = 1.f, zero = 0.f;
  double mkl = 1e30, brgemm = 1e30;
  for (int64_t r = 0; r < reps; ++r) {
    double t = now();
    sgemm_(&no, &no, &n, &m, &k, &one, W.data(), &n, A.data(), &k, &zero, C.data(), &n);  // row-major C = A W
    mkl = std::min(mkl, now() - t);
    t = now();
    for (int64_t c = 0; c < N; c += NB) {
      const int64_t w = std::min(NB, N - c);
      at::native::cpublas::brgemm(M, w, K, K, w, N, false, A.data(), blocked.data() + c * K, C.data() + c, false);
    }
    brgemm = std::min(brgemm, now() - t);
  }
  return {mkl, brgemm};
}
"""

SHAPES = ((4, 256, 64), (16, 512, 128), (32, 1024, 256), (64, 1024, 256), (64, 2048, 512), (128, 2048, 512),
          (64, 2048, 256))


def main(reps: int = 30) -> None:
    torch.set_num_threads(1)
    mod = load_inline("rnnlab_bench_f32_products", cpp_sources=SOURCE, functions=["time_products"],
                      extra_cflags=["-O2"], build_directory=tempfile.mkdtemp())
    print("| M, N, K | MKL SGEMM µs | GFLOP/s | brgemm, blocked W µs | GFLOP/s | brgemm / MKL |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for M, N, K in SHAPES:
        mkl, brg = mod.time_products(M, N, K, reps)
        flops = 2.0 * M * N * K
        print(f"| {M}, {N}, {K} | {mkl * 1e6:.1f} | {flops / mkl / 1e9:.0f} | {brg * 1e6:.1f} | {flops / brg / 1e9:.0f} "
              f"| {brg / mkl:.2f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
