// The threads the loops run on besides the caller's: OpenMP's team (run_team, and run_jobs for jobs that may throw),
// and the barrier a split level's two parts meet at once per step (split.h).
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

#include "blas.h"

namespace rnnlab {

// job(0) … job(n-1) at once, one per thread of an OpenMP team: the threads torch's and MKL's parallel work already runs
// on, so no thread of ours competes for a core with an OpenMP worker still spinning after torch's last parallel op (a
// pool thread of our own did: split training steps ran 1.3-2.5x slower, until OMP_WAIT_POLICY=passive). False, with
// none run, when the team has fewer than n threads (called inside another parallel region, or OpenMP refused them).
// ``job`` must not throw (an exception cannot leave an OpenMP region).
template <class Job>
bool run_team(int64_t n, Job job) {
  if (omp_in_parallel()) return false;
  bool whole = true;
#pragma omp parallel num_threads(static_cast<int>(n))
  {
    if (omp_get_num_threads() < n)
      whole = false;
    else
      job(static_cast<int64_t>(omp_get_thread_num()));
  }
  return whole;
}
// job(0) … job(n-1) at once on run_team, each with its BLAS calls on one thread. An exception in a job is kept and
// ``failed()`` is called (so that the others stop waiting on it: StepBarrier::fail, Progress::fail); after every
// thread has ended the first is rethrown. False, with none run, where no team of n came (the caller then runs the
// work its own way).
template <class Job, class Failed>
bool run_jobs(int64_t n, Job job, Failed failed) {
  std::vector<std::exception_ptr> errors(n);
  const bool ran = run_team(n, [&](int64_t i) {
    try {
      BlasThreads one(1);
      job(i);
    } catch (...) {
      errors[i] = std::current_exception();
      failed();
    }
  });
  for (const auto& error : errors)
    if (error) std::rethrow_exception(error);
  return ran;
}

// n threads meeting once per time step. A step is tens of µs, so a waiting thread spins (with PAUSE) rather than
// sleep on a mutex; after a while it yields its core, so that a machine with fewer free cores than threads still
// makes progress. ``fail()`` releases every waiter for good: a thread that failed never leaves the other waiting.
class StepBarrier {
 public:
  explicit StepBarrier(int n) : n_(n) {}
  // false once any thread has called fail()
  bool wait() {
    const uint32_t gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.store(gen + 1, std::memory_order_release);
    } else {
      for (int64_t spins = 0; gen_.load(std::memory_order_acquire) == gen; ++spins) {
        if (failed_.load(std::memory_order_relaxed)) return false;
        if (spins < 4096)
          _mm_pause();
        else
          std::this_thread::yield();
      }
    }
    return !failed_.load(std::memory_order_relaxed);
  }
  void fail() { failed_.store(true, std::memory_order_relaxed); }

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<uint32_t> gen_{0};
  std::atomic<bool> failed_{false};
};

}  // namespace rnnlab
