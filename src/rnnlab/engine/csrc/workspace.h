// The loops' scratch memory: per thread, kept from one call to the next.
//
// A call's buffers (a split part's copies of its W_ih and W_hh rows, the input projection's chunk, the step's GEMM
// output) are megabytes at the larger shapes. Allocated afresh per call, they come back from the kernel as new pages,
// and the first touch of each page is a fault: measured on 2 threads at (100, 64, 256, 256), LSTM inference, 2,700 to
// 6,300 faults per call, about 1 µs each, up to 20 % of the call (nil once malloc was told to keep freed memory). A
// thread's workspace keeps its pages: with it (and inference's two-slot C, driver.h's CellSlots), 0-142 faults per
// call at that shape, the outputs' own included.
//
//   Workspace ws;                  a scope: what it takes is the thread's until the scope ends (scopes nest, LIFO)
//   T* p = ws.take<T>(n);          n numbers, 64-byte aligned, not zeroed
//
// A thread keeps at most KEEP_BYTES between calls (what a larger call took beyond that is freed when its outermost
// scope ends), so a one-off huge layer does not pin its memory for the life of the process.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

namespace rnnlab {

class Arena {
 public:
  static constexpr size_t KEEP_BYTES = size_t(64) << 20;
  static constexpr size_t BLOCK = size_t(4) << 20;
  static constexpr size_t ALIGN = 64;

  struct Mark {
    size_t block, used;
  };
  Mark mark() const { return {cur_, used_}; }
  void release(const Mark& m) {
    cur_ = m.block, used_ = m.used;
    if (--depth_ == 0) trim();
  }
  void enter() { ++depth_; }

  void* take(size_t bytes) {
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (bytes == 0) return nullptr;
    for (;;) {  // the current block, or the next (blocks from the current one's free part on are free)
      if (cur_ == blocks_.size()) blocks_.emplace_back(std::max(bytes, BLOCK)), used_ = 0;
      Block& b = blocks_[cur_];
      if (used_ + bytes <= b.size) break;
      if (used_ == 0) {  // a free block too small: a larger one in its place
        b = Block(std::max(bytes, BLOCK));
        break;
      }
      ++cur_, used_ = 0;
    }
    void* p = blocks_[cur_].data.get() + used_;
    used_ += bytes;
    return p;
  }

  static Arena& mine() {
    thread_local Arena arena;
    return arena;
  }

 private:
  struct Block {
    explicit Block(size_t n) : data(static_cast<char*>(std::aligned_alloc(ALIGN, n))), size(n) {
      if (!data) throw std::bad_alloc();
    }
    struct Free {
      void operator()(char* p) const { std::free(p); }
    };
    std::unique_ptr<char, Free> data;
    size_t size;
  };
  // keep the first blocks up to KEEP_BYTES
  void trim() {
    size_t kept = 0, i = 0;
    for (; i < blocks_.size() && kept + blocks_[i].size <= KEEP_BYTES; ++i) kept += blocks_[i].size;
    blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(i), blocks_.end());
  }
  std::vector<Block> blocks_;
  size_t cur_ = 0, used_ = 0;
  int depth_ = 0;
};

// a scope of the calling thread's arena
class Workspace {
 public:
  Workspace() : arena_(Arena::mine()), mark_(arena_.mark()) { arena_.enter(); }
  ~Workspace() { arena_.release(mark_); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  template <typename T>
  T* take(int64_t n) {
    return static_cast<T*>(arena_.take(static_cast<size_t>(std::max<int64_t>(n, 0)) * sizeof(T)));
  }

 private:
  Arena& arena_;
  Arena::Mark mark_;
};

}  // namespace rnnlab
