// The operators' large tensors (a training step's states, gates, cell states, ∂a, ∂x) come from a cache of blocks that
// earlier tensors freed, instead of straight from malloc.
//
// glibc serves a block of 32 MB or more (and, until its threshold has grown, one of 128 KB or more) with a fresh mmap
// and gives it back to the kernel when freed, so each call's first touch of each of its pages is a page fault. On the
// 2-core Intel host a training step of the LSTM at (50, 128, 256, 512) took 28,214 faults (torch.nn's 44,565); with
// this cache 1,511, and the step 0.88-0.90 of its time without (min and median of interleaved steps). The workspace
// (workspace.h) already keeps the loops' scratch; this keeps the tensors the operators return, which live on in
// autograd's saved values until backward frees them.
//
// BlockPool is a c10::Allocator: a tensor made with pooled_empty() below is an ordinary CPU tensor (resizable; its
// storage frees through the pool, from any thread). Blocks of MIN_BYTES or more are cached when freed, up to 1 GB in
// all (RNNLAB_POOL_MB sets the bound, read at each request; 0 turns the cache off and frees what it holds), and the
// next request of a size it fits (at most twice its size) takes the smallest such block. Smaller requests, and
// requests while the cache is off, go to torch's own CPU allocator.
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <pthread.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

namespace rnnlab {

class BlockPool final : public c10::Allocator {
 public:
  static constexpr size_t MIN_BYTES = size_t(1) << 20;
  static constexpr size_t ALIGN = 64;

  // the process's pool, never destroyed (tensors may outlive static destructors)
  static BlockPool& get() {
    static BlockPool* pool = new BlockPool();
    return *pool;
  }

  c10::DataPtr allocate(size_t n) override {
    if (n < MIN_BYTES) return c10::GetCPUAllocator()->allocate(n);
    const size_t bound = keep();
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      trim(bound);  // (a lowered bound gives back what the cache holds over it)
      if (bound == 0) return c10::GetCPUAllocator()->allocate(n);
      auto it = free_.lower_bound(n);
      if (it != free_.end() && it->first <= 2 * n) {
        p = it->second;
        cached_ -= it->first;
        sizes_[p] = it->first;
        free_.erase(it);
      }
    }
    if (!p) {
      if (posix_memalign(&p, ALIGN, n) != 0 || !p) throw std::bad_alloc();
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[p] = n;
    }
    return {p, p, &BlockPool::release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &BlockPool::release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // bytes held for reuse now (the tests read it through rnnlab::pool_bytes)
  size_t cached() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  // a process forked while another thread holds the lock (in allocate or release) would find it held forever:
  // the lock is taken around fork and released on both sides, as glibc does for its own
  BlockPool() {
    pthread_atfork([] { get().mu_.lock(); }, [] { get().mu_.unlock(); }, [] { get().mu_.unlock(); });
  }
  // the bound on cached bytes, read at each request (so that a process can turn the cache off and on)
  static size_t keep() {
    const char* env = std::getenv("RNNLAB_POOL_MB");
    return env ? size_t(std::max(0L, std::strtol(env, nullptr, 10))) << 20 : size_t(1) << 30;
  }
  static void release(void* p) {
    BlockPool& pool = get();
    const size_t bound = keep();
    std::lock_guard<std::mutex> lock(pool.mu_);
    auto it = pool.sizes_.find(p);
    const size_t n = it->second;
    pool.sizes_.erase(it);
    // keep it within the bound: the largest cached blocks go first, then this one if it still does not fit
    pool.trim(bound > n ? bound - n : 0);
    if (pool.cached_ + n > bound) return std::free(p);
    pool.free_.emplace(n, p);
    pool.cached_ += n;
  }

  // free the largest cached blocks until at most ``bound`` bytes stay (the caller holds mu_)
  void trim(size_t bound) {
    while (cached_ > bound) {
      auto big = std::prev(free_.end());
      cached_ -= big->first;
      std::free(big->second);
      free_.erase(big);
    }
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;  // cached blocks by size
  std::map<void*, size_t> sizes_;      // the size of every block handed out
  size_t cached_ = 0;
};

// at::empty from the pool: an uninitialised CPU tensor of ``options``' dtype
inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::detail::empty_generic(sizes, &BlockPool::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), c10::nullopt);
}

}  // namespace rnnlab
