// The pinned host pool: one memfd-backed mapping, allocated and pre-faulted once, pinned
// (registered with CUDA when a GPU is present, mlock'ed otherwise, best effort), handed out
// in 4096-aligned regions by a first-fit allocator that coalesces on release.
// Another process maps the same pages through path() ("/proc/<pid>/fd/<n>") at a region's offset.
// A region that native threads are reading into or copying out of is busy (Acquire/Unacquire):
// releasing it then only marks it, and it rejoins the free extents when its last user lets go,
// so it can never be handed out again while a load still writes into it.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "status.h"

namespace thaw {

constexpr uint64_t kPoolAlignment = 4096;

enum class PinRequest { kAuto, kCuda, kMlock, kNone };
enum class Pinning { kNone, kMlock, kCuda };
const char* PinningName(Pinning pinning);

struct PoolOptions {
  uint64_t bytes = 0;             // rounded up to kPoolAlignment
  unsigned prefault_threads = 0;  // 0: one per core (at most 32)
  PinRequest pin = PinRequest::kAuto;
  int cuda_device = 0;            // device made current for cudaHostRegister
  std::string name = "thaw-pool";  // memfd name (shows in /proc/<pid>/fd)
};

struct PoolStats {
  uint64_t bytes = 0;
  uint64_t used = 0;  // allocated regions plus released ones still busy
  uint64_t free = 0;
  uint64_t largest_free = 0;
  uint64_t regions = 0;    // allocated (not released)
  uint64_t releasing = 0;  // released while busy: free once their loads end
  uint64_t free_extents = 0;
};

enum class ReleaseResult {
  kReleased,  // back among the free extents
  kDeferred,  // busy: it goes back when its last user lets go
  kUnknown,   // no allocated region starts at that offset
};

class Pool {
 public:
  // Creates, maps, pre-faults and pins the pool; null and `status` set on failure.
  static std::unique_ptr<Pool> Create(const PoolOptions& options, Status* status);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }
  std::string path() const;  // "/proc/<pid>/fd/<fd>"
  Pinning pinning() const { return pinning_; }
  const std::string& pinning_detail() const { return pinning_detail_; }
  bool huge_pages() const { return huge_pages_; }
  double prefault_seconds() const { return prefault_seconds_; }
  double pin_seconds() const { return pin_seconds_; }
  unsigned prefault_threads() const { return prefault_threads_; }

  // First fit; `bytes` rounded up to kPoolAlignment. False when no extent is large enough.
  bool Allocate(uint64_t bytes, uint64_t* offset, uint64_t* length);
  // Returns a region (at once, or once it is no longer busy); `length` is its length.
  ReleaseResult Release(uint64_t offset, uint64_t* length);
  // Marks the allocated region holding [offset, offset + length) busy and sets `region` to its
  // start; false when no one allocated region covers the range. Pair each success with Unacquire.
  bool Acquire(uint64_t offset, uint64_t length, uint64_t* region);
  void Unacquire(uint64_t region);
  // True when [offset, offset + length) lies inside one allocated region.
  bool Covers(uint64_t offset, uint64_t length);
  // The allocated region that holds `offset`; false when none does.
  bool RegionOf(uint64_t offset, uint64_t* start, uint64_t* length);
  PoolStats Stats();

 private:
  Pool() = default;
  void Prefault(unsigned threads);
  void Pin(const PoolOptions& options);

  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  Pinning pinning_ = Pinning::kNone;
  std::string pinning_detail_;
  bool huge_pages_ = false;
  double prefault_seconds_ = 0;
  double pin_seconds_ = 0;
  unsigned prefault_threads_ = 0;

  struct Region {
    uint64_t length = 0;
    uint32_t busy = 0;       // loads reading into it or copying out of it
    bool releasing = false;  // released while busy
  };
  bool FindLocked(uint64_t offset, std::map<uint64_t, Region>::iterator* found);
  void FreeLocked(std::map<uint64_t, Region>::iterator it);

  std::mutex mu_;
  std::map<uint64_t, uint64_t> free_;  // offset -> length
  std::map<uint64_t, Region> used_;    // offset -> region
};

}  // namespace thaw
