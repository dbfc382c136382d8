"""What the LSTM's forward pointwise pass costs per unit on this CPU, and whether its arithmetic or its memory
traffic sets that cost.

The pass is csrc/cells/lstm.h's ``gates`` for the plain LSTM: for each unit, the four pre-activations summed from
x_t W_ihᵀ, the bias and h_{t-1} W_hhᵀ, three σ and two tanh (pointwise.h's exact act:: functions, a division in
each), C_t and h_t, and the four activated gates stored. It is compiled here from the same header, with the engine's
flags (-O3 -ffast-math, the kernel cloned for AVX-512 / AVX2 / baseline and picked at run time) and timed on one
thread, over T = 50 steps of B rows and H = 512 units, in two forms:

* ``gates``: the pass as the engine runs it;
* ``memory``: the same loads and stores with the activations left out (each pre-activation stored as it is): what
  moving the pass's data costs alone.

and with two data layouts: ``one step`` (the step's input and gate rows reused every step: they stay in cache, as
in inference, where the gates are not kept) and ``T steps`` (a fresh slot of x_t W_ihᵀ read and of gates written
every step, as a training forward keeps them). Reported: TSC cycles per unit (best of ``reps``), and the TSC's rate.
It compiles a small extension at run time (torch.utils.cpp_extension, g++) and prints a markdown table. Usage:
``python benchmarks/bench_gates.py [reps]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load_inline

import rnnlab.engine

CSRC = Path(rnnlab.engine.__file__).parent / "csrc"

SOURCE = r"""
#include "pointwise.h"
#include <x86intrin.h>
#include <algorithm>
#include <vector>

namespace act = rnnlab::act;

// one step of B rows: csrc/cells/lstm.h's plain gates (MEMORY: the activations left out)
template <bool MEMORY>
RNNLAB_KERNEL void step(int64_t B, int64_t H, const float* xp, const float* xb, const float* hh, const float* c_prev,
                        float* gate, float* c, float* h) {
  for (int64_t b = 0; b < B; ++b) {
    const float* __restrict x_ = xp + b * 4 * H;
    const float* __restrict hh_ = hh + b * 4 * H;
    const float* __restrict cp = c_prev + b * H;
    float* __restrict g_ = gate + b * 4 * H;
    float* __restrict c_ = c + b * H;
    float* __restrict h_ = h + b * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const float af = x_[j] + xb[j] + hh_[j], ai = x_[H + j] + xb[H + j] + hh_[H + j];
      const float ag = x_[2 * H + j] + xb[2 * H + j] + hh_[2 * H + j];
      const float ao = x_[3 * H + j] + xb[3 * H + j] + hh_[3 * H + j];
      const float f = MEMORY ? af : act::sigmoid(af), i = MEMORY ? ai : act::sigmoid(ai);
      const float g = MEMORY ? ag : act::tanh(ag);
      const float cn = f * cp[j] + i * g;
      const float o = MEMORY ? ao : act::sigmoid(ao);
      g_[j] = f, g_[H + j] = i, g_[2 * H + j] = g, g_[3 * H + j] = o;
      c_[j] = cn;
      h_[j] = o * (MEMORY ? cn : act::tanh(cn));
    }
  }
}

// TSC cycles per unit (best of reps) of T steps; slots: 1 (one step's xp and gates reused) or T (a slot each)
double cycles_per_unit(int64_t B, int64_t H, int64_t T, int64_t slots, bool memory, int64_t reps) {
  const int64_t G = 4 * H;
  std::vector<float> xp(slots * B * G), xb(G, 0.1f), hh(B * G), gate(slots * B * G), cells((T + 1) * B * H, 0.5f),
      states((T + 1) * B * H);
  for (size_t k = 0; k < xp.size(); ++k) xp[k] = 0.05f * float(k % 97) - 2.4f;
  for (size_t k = 0; k < hh.size(); ++k) hh[k] = 0.03f * float(k % 89) - 1.3f;
  uint64_t best = ~uint64_t(0);
  for (int64_t r = 0; r < reps; ++r) {
    const uint64_t t0 = __rdtsc();
    for (int64_t t = 0; t < T; ++t) {
      const int64_t s = t % slots;
      (memory ? step<true> : step<false>)(B, H, xp.data() + s * B * G, xb.data(), hh.data(), cells.data() + t * B * H,
                                          gate.data() + s * B * G, cells.data() + (t + 1) * B * H,
                                          states.data() + (t + 1) * B * H);
    }
    best = std::min<uint64_t>(best, __rdtsc() - t0);
  }
  return double(best) / double(T * B * H);
}

int64_t tsc() { return static_cast<int64_t>(__rdtsc()); }
"""


def tsc_ghz(module) -> float:
    t0, c0 = time.perf_counter(), module.tsc()
    time.sleep(0.2)
    return (module.tsc() - c0) / (time.perf_counter() - t0) / 1e9


def main(reps: int = 7) -> None:
    torch.set_num_threads(1)
    module = load_inline("rnnlab_bench_gates", cpp_sources=SOURCE, functions=["cycles_per_unit", "tsc"],
                         extra_cflags=["-O3", "-ffast-math", "-fopenmp", "-std=c++20", f"-I{CSRC}"],
                         extra_ldflags=["-fopenmp"], verbose=False)
    T, H = 50, 512
    print(f"LSTM forward pointwise pass, H = {H}, T = {T}, one thread; TSC {tsc_ghz(module):.2f} GHz; "
          f"cycles per unit, best of {reps}\n")
    print("| B | one step: gates | one step: memory | T steps: gates | T steps: memory |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for B in (8, 32, 128):
        cells = [module.cycles_per_unit(B, H, T, slots, memory, reps) for slots in (1, T) for memory in (False, True)]
        print(f"| {B} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
