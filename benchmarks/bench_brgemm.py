"""The bf16 per-step product's rate on this CPU: ATen's brgemm (oneDNN's AMX micro-kernel, the one csrc/brgemm.h
calls) at the shapes a recurrent step runs, on one thread.

Each shape (M, N, K) is one step's product for one column block: M rows of the batch, N columns of packed W (a block
of gates), K = the product's depth (H, or P + X where x_t and h_{t-1} share one product). A "call" runs ``blocks``
such blocks, each a different packed copy (so W streams through the cache as a step's would), in row chunks of
``chunk`` rows. Reported: multiply-adds × 2 per TSC cycle (best of ``reps`` calls) and the GFLOP/s that makes at the
TSC's rate, measured against the wall clock. It compiles a small extension at run time (torch.utils.cpp_extension, g++), so it needs no build of
rnnlab's own; it prints a markdown table. Usage: ``python benchmarks/bench_brgemm.py [rounds]``.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.utils.cpp_extension import load_inline

SOURCE = r"""
#include <ATen/native/CPUBlas.h>
#include <x86intrin.h>
#include <algorithm>
#include <vector>

// FLOP per TSC cycle of `blocks` packed (K, N) bf16 blocks times an (M, K) bf16 A, in row chunks of `chunk`
double flop_per_cycle(int64_t M, int64_t N, int64_t K, int64_t blocks, int64_t chunk, int64_t reps) {
  using namespace at::native::cpublas;
  TORCH_CHECK(could_pack(at::kBFloat16), "this CPU has no packed bf16 brgemm");
  TORCH_CHECK(K % 2 == 0 && N <= 64 && M > 0 && chunk > 0, "K even, N <= 64");
  const int64_t ldb = (N + 15) / 16 * 16;
  std::vector<at::BFloat16> A(M * K), dense(K * N), packed(blocks * K * ldb);
  for (int64_t i = 0; i < M * K; ++i) A[i] = at::BFloat16(0.01f * float(i % 7));
  for (int64_t i = 0; i < K * N; ++i) dense[i] = at::BFloat16(0.02f * float(i % 5));
  for (int64_t j = 0; j < blocks; ++j)
    pack(K, N, N, ldb, at::kBFloat16, at::kBFloat16, dense.data(), packed.data() + j * K * ldb);
  std::vector<float> C(std::min(M, chunk) * N);
  uint64_t best = ~uint64_t(0);
  for (int64_t r = 0; r < reps; ++r) {
    const uint64_t t0 = __rdtsc();
    for (int64_t q = 0; q < M; q += chunk)
      for (int64_t j = 0; j < blocks; ++j)
        brgemm(std::min(chunk, M - q), N, K, K, ldb, N, false, A.data() + q * K, packed.data() + j * K * ldb,
               C.data(), true);
    best = std::min<uint64_t>(best, __rdtsc() - t0);
  }
  brgemm_release(true);
  return 2.0 * M * N * K * blocks / double(best);
}

// the time-stamp counter, for the Python side to measure its rate
int64_t tsc() { return static_cast<int64_t>(__rdtsc()); }
"""

# (M, N, K, blocks, chunk): a step of the LSTM at (B, H, X) = (128, 512, 256) split over two threads (16 blocks of 64
# columns each), with K = H (W_hh alone) or P + X (x_t and h_{t-1} in one product), at 8 to 256 rows
SHAPES = [(128, 64, 768, 16, 128), (128, 32, 768, 32, 128), (128, 64, 512, 16, 128), (128, 32, 512, 32, 128),
          (8, 64, 768, 16, 8), (32, 64, 768, 16, 32), (256, 64, 768, 16, 256), (128, 64, 768, 16, 32)]


def tsc_hz(ext, seconds: float = 0.2) -> float:
    """The TSC's rate, measured: its ticks over ``seconds`` of the wall clock."""
    t0, c0 = time.perf_counter(), ext.tsc()
    time.sleep(seconds)
    return (ext.tsc() - c0) / (time.perf_counter() - t0)


def main(rounds: int = 3) -> None:
    torch.set_num_threads(1)
    ext = load_inline("rnnlab_bench_brgemm", cpp_sources=SOURCE, functions=["flop_per_cycle", "tsc"],
                      extra_cflags=["-O3"], verbose=False)
    hz = tsc_hz(ext)
    print(f"ATen brgemm, bf16, one thread; FLOP per TSC cycle (TSC {hz / 1e9:.2f} GHz), best of 40 calls; "
          f"{rounds} rounds, min-max\n")
    print("| M × N × K | blocks | row chunk | FLOP / cycle | GFLOP/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    results = {shape: [] for shape in SHAPES}
    for _ in range(rounds):  # rounds interleave the shapes, so a noisy minute touches each
        for shape in SHAPES:
            results[shape].append(ext.flop_per_cycle(*shape, 40))
    for (M, N, K, blocks, chunk), got in results.items():
        lo, hi = min(got), max(got)
        print(f"| {M} × {N} × {K} | {blocks} | {chunk} | {lo:.0f}–{hi:.0f} | {lo * hz / 1e9:.0f}–{hi * hz / 1e9:.0f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
