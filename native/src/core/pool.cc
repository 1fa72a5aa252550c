#include "pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "cuda_api.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace thaw {
namespace {

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// True when the kernel backs madvise(MADV_HUGEPAGE)'d shmem with huge pages.
bool ShmemHugePagesAdvisable() {
  FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
  if (f == nullptr) return false;
  char buf[256] = {0};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string s(buf, n);
  for (const char* mode : {"[always]", "[within_size]", "[advise]", "[force]"}) {
    if (s.find(mode) != std::string::npos) return true;
  }
  return false;
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

const char* PinningName(Pinning pinning) {
  switch (pinning) {
    case Pinning::kCuda: return "cuda";
    case Pinning::kMlock: return "mlock";
    case Pinning::kNone: return "none";
  }
  return "none";
}

std::unique_ptr<Pool> Pool::Create(const PoolOptions& options, Status* status) {
  if (options.bytes == 0) {
    *status = Status::Make(Status::Kind::kInvalid, "pool size must be positive");
    return nullptr;
  }
  std::unique_ptr<Pool> pool(new Pool());
  pool->size_ = RoundUp(options.bytes, kPoolAlignment);

  pool->fd_ = memfd_create(options.name.c_str(), MFD_CLOEXEC);
  if (pool->fd_ < 0) {
    *status = IoError("memfd_create", options.name, -1, errno);
    return nullptr;
  }
  if (ftruncate(pool->fd_, static_cast<off_t>(pool->size_)) != 0) {
    *status = IoError("ftruncate", pool->path(), -1, errno);
    return nullptr;
  }
  void* base = mmap(nullptr, pool->size_, PROT_READ | PROT_WRITE, MAP_SHARED, pool->fd_, 0);
  if (base == MAP_FAILED) {
    *status = IoError("mmap", pool->path(), -1, errno);
    return nullptr;
  }
  pool->base_ = static_cast<uint8_t*>(base);
  // Huge pages for shmem only where the system allows them for madvised ranges.
  pool->huge_pages_ =
      madvise(base, pool->size_, MADV_HUGEPAGE) == 0 && ShmemHugePagesAdvisable();

  unsigned threads = options.prefault_threads;
  if (threads == 0) threads = std::clamp(std::thread::hardware_concurrency(), 1u, 32u);
  pool->Prefault(threads);
  if (pool->prefault_seconds_ < 0) {  // MADV_POPULATE_WRITE found no memory
    *status = Status::Make(Status::Kind::kNoMemory,
                           "could not pre-fault the pool (" + std::to_string(pool->size_) +
                               " bytes): out of memory");
    return nullptr;
  }
  pool->Pin(options);
  if (options.pin == PinRequest::kCuda && pool->pinning_ != Pinning::kCuda) {
    *status = Status::Make(Status::Kind::kCuda, "pool pinning with CUDA was asked for but " +
                                                    pool->pinning_detail_);
    return nullptr;
  }
  pool->free_[0] = pool->size_;
  *status = Status::Ok();
  return pool;
}

void Pool::Prefault(unsigned threads) {
  auto t0 = std::chrono::steady_clock::now();
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  threads = static_cast<unsigned>(std::min<uint64_t>(threads, std::max<uint64_t>(1, size_ >> 26)));
  prefault_threads_ = threads;
  const uint64_t slice = RoundUp((size_ + threads - 1) / threads, 2 << 20);
  std::vector<std::thread> workers;
  std::vector<int> failed(threads, 0);
  for (unsigned i = 0; i < threads; i++) {
    workers.emplace_back([this, i, slice, page, &failed] {
      uint64_t begin = i * slice;
      uint64_t end = std::min(size_, begin + slice);
      if (begin >= end) return;
      // One system call populates the slice; where the kernel lacks it, touch each page.
      if (madvise(base_ + begin, end - begin, MADV_POPULATE_WRITE) == 0) return;
      if (errno == ENOMEM || errno == EFAULT) {
        failed[i] = 1;
        return;
      }
      for (uint64_t off = begin; off < end; off += page) {
        *reinterpret_cast<volatile uint8_t*>(base_ + off) = 0;
      }
    });
  }
  for (auto& w : workers) w.join();
  prefault_seconds_ = Since(t0);
  for (int f : failed) {
    if (f) prefault_seconds_ = -1;
  }
}

void Pool::Pin(const PoolOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  if (options.pin == PinRequest::kNone) {
    pinning_detail_ = "pinning not requested";
    return;
  }
  if (options.pin == PinRequest::kAuto || options.pin == PinRequest::kCuda) {
    const cuda::Runtime& rt = cuda::GetRuntime();
    if (rt.available) {
      cuda::Error err = rt.api.SetDevice(options.cuda_device);
      if (err == cuda::kSuccess) {
        err = rt.api.HostRegister(base_, size_, cuda::kHostRegisterPortable);
      }
      if (err == cuda::kSuccess) {
        pinning_ = Pinning::kCuda;
        pinning_detail_ = "registered with CUDA (cudaHostRegister, portable)";
        pin_seconds_ = Since(t0);
        return;
      }
      pinning_detail_ = "cudaHostRegister failed: " + cuda::ErrorText(err);
    } else {
      pinning_detail_ = "CUDA is not available (" + rt.reason + ")";
    }
    if (options.pin == PinRequest::kCuda) return;
  }
  if (mlock(base_, size_) == 0) {
    pinning_ = Pinning::kMlock;
    pinning_detail_ = (pinning_detail_.empty() ? "" : pinning_detail_ + "; ") + "locked with mlock";
  } else {
    int err = errno;
    pinning_detail_ = (pinning_detail_.empty() ? "" : pinning_detail_ + "; ") +
                      "mlock failed: " + std::strerror(err) + " (" + ErrnoName(err) +
                      "; raise `ulimit -l`)";
  }
  pin_seconds_ = Since(t0);
}

Pool::~Pool() {
  if (base_ != nullptr) {
    if (pinning_ == Pinning::kCuda) {
      cuda::GetRuntime().api.HostUnregister(base_);
    } else if (pinning_ == Pinning::kMlock) {
      munlock(base_, size_);
    }
    munmap(base_, size_);
  }
  if (fd_ >= 0) close(fd_);
}

std::string Pool::path() const {
  return "/proc/" + std::to_string(getpid()) + "/fd/" + std::to_string(fd_);
}

bool Pool::Allocate(uint64_t bytes, uint64_t* offset, uint64_t* length) {
  if (bytes == 0) return false;
  const uint64_t want = RoundUp(bytes, kPoolAlignment);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < want) continue;
    const uint64_t at = it->first;
    const uint64_t rest = it->second - want;
    free_.erase(it);
    if (rest > 0) free_[at + want] = rest;
    used_[at] = Region{want};
    *offset = at;
    *length = want;
    return true;
  }
  return false;
}

ReleaseResult Pool::Release(uint64_t offset, uint64_t* length) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = used_.find(offset);
  if (it == used_.end() || it->second.releasing) return ReleaseResult::kUnknown;
  *length = it->second.length;
  if (it->second.busy > 0) {
    it->second.releasing = true;
    return ReleaseResult::kDeferred;
  }
  FreeLocked(it);
  return ReleaseResult::kReleased;
}

bool Pool::Acquire(uint64_t offset, uint64_t length, uint64_t* region) {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<uint64_t, Region>::iterator it;
  if (!FindLocked(offset, &it) || length > it->second.length - (offset - it->first)) return false;
  it->second.busy++;
  *region = it->first;
  return true;
}

void Pool::Unacquire(uint64_t region) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = used_.find(region);
  if (it == used_.end() || it->second.busy == 0) return;
  if (--it->second.busy == 0 && it->second.releasing) FreeLocked(it);
}

// The allocated (not releasing) region holding `offset`.
bool Pool::FindLocked(uint64_t offset, std::map<uint64_t, Region>::iterator* found) {
  auto it = used_.upper_bound(offset);
  if (it == used_.begin()) return false;
  --it;
  if (offset - it->first >= it->second.length || it->second.releasing) return false;
  *found = it;
  return true;
}

// Moves a region to the free extents, joined with its free neighbours.
void Pool::FreeLocked(std::map<uint64_t, Region>::iterator it) {
  uint64_t at = it->first;
  uint64_t len = it->second.length;
  used_.erase(it);
  auto next = free_.lower_bound(at);
  if (next != free_.end() && next->first == at + len) {  // join the extent after
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {  // join the extent before
    auto prev = std::prev(next);
    if (prev->first + prev->second == at) {
      prev->second += len;
      return;
    }
  }
  free_[at] = len;
}

bool Pool::Covers(uint64_t offset, uint64_t length) {
  uint64_t start = 0, len = 0;
  if (!RegionOf(offset, &start, &len)) return false;
  return length <= len - (offset - start);
}

bool Pool::RegionOf(uint64_t offset, uint64_t* start, uint64_t* length) {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<uint64_t, Region>::iterator it;
  if (!FindLocked(offset, &it)) return false;
  *start = it->first;
  *length = it->second.length;
  return true;
}

PoolStats Pool::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  PoolStats s;
  s.bytes = size_;
  for (const auto& [at, region] : used_) {
    s.used += region.length;
    if (region.releasing) s.releasing++;
    else s.regions++;
  }
  for (const auto& [at, len] : free_) {
    s.free += len;
    s.largest_free = std::max(s.largest_free, len);
  }
  s.free_extents = free_.size();
  return s;
}

}  // namespace thaw
