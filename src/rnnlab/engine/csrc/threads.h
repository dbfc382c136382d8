// The threads the loops run on besides the caller's: a persistent pool, and the barrier a split level's two
// halves meet at once per step (split.h).
#pragma once

#include <immintrin.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace rnnlab {

// Persistent worker threads (a stack's levels above 0, wavefront.h; a level's second half of units, split.h): a
// thread made per call would pay, every call, for its
// first-touch pages and BLAS's per-thread set-up (measured: the whole gain of the overlap at small sizes). One batch
// at a time; grown on demand; remade in a forked child (whose copy has no threads); never joined (it lives as long
// as the process).
class LevelPool {
 public:
  static LevelPool& get() {
    static std::mutex made;
    static LevelPool* pool = nullptr;
    std::lock_guard<std::mutex> lock(made);
    if (!pool || pool->pid_ != getpid()) pool = new LevelPool();  // a forked child's copy is abandoned
    return *pool;
  }
  // job(i) on worker i for i < n while ``here`` runs on the calling thread; returns when all have ended
  template <class Job, class Here>
  void run(int64_t n, Job job, Here here) {
    std::lock_guard<std::mutex> one_batch(batch_);
    std::function<void(int64_t)> work = job;
    {
      std::lock_guard<std::mutex> lock(m_);
      while (static_cast<int64_t>(threads_) < n) {
        std::thread(&LevelPool::loop, this, static_cast<int64_t>(threads_)).detach();
        ++threads_;
      }
      job_ = &work, count_ = n, remaining_ = n, ++generation_;
    }
    wake_.notify_all();
    here();
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }

 private:
  LevelPool() : pid_(getpid()) {}
  void loop(int64_t i) {
    uint64_t seen = 0;
    {
      std::lock_guard<std::mutex> lock(m_);
      seen = generation_ - 1;  // made for the current batch: take part in it
    }
    for (;;) {
      const std::function<void(int64_t)>* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (i >= count_) continue;
        job = job_;
      }
      (*job)(i);  // never throws: each_level's job catches
      {
        std::lock_guard<std::mutex> lock(m_);
        --remaining_;
      }
      done_.notify_all();
    }
  }
  pid_t pid_;
  std::mutex batch_, m_;
  std::condition_variable wake_, done_;
  size_t threads_ = 0;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t count_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
};

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
