// Host-to-device copies on several CUDA streams. Producers (reader threads) Submit() pieces as
// they land in pinned memory; one thread issues cudaMemcpyAsync round-robin over the streams and
// records an event after each, another waits for the events in order and counts finished bytes.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda_api.h"
#include "status.h"

namespace thaw {

class Copier {
 public:
  static std::unique_ptr<Copier> Create(int device, int streams, Status* status);
  ~Copier();
  Copier(const Copier&) = delete;
  Copier& operator=(const Copier&) = delete;

  // Queues one copy; thread-safe. Ignored once the copier failed or was cancelled.
  void Submit(uint8_t* device_dst, const uint8_t* host_src, uint64_t length);
  // Drops copies not yet issued; those already issued still finish (Finish waits for them).
  void Cancel();
  // No more submissions: waits until every issued copy is done; the first CUDA error, if any.
  Status Finish();

  uint64_t bytes_done() const { return bytes_done_.load(std::memory_order_relaxed); }
  // From the first copy issued to the last one finished.
  double seconds() const;
  int streams() const { return static_cast<int>(streams_.size()); }

 private:
  struct Item {
    uint8_t* dst;
    const uint8_t* src;
    uint64_t length;
  };
  struct Pending {
    cuda::Event event;
    uint64_t length;
  };
  Copier() = default;
  void IssueLoop();
  void CompleteLoop();
  void Fail(Status s);

  const cuda::Api* api_ = nullptr;
  int device_ = 0;
  std::vector<cuda::Stream> streams_;

  std::mutex mu_;
  std::condition_variable queue_cv_, pending_cv_;
  std::deque<Item> queue_;
  std::deque<Pending> pending_;
  bool closed_ = false;         // no more Submit
  bool issue_done_ = false;     // the issuing thread has left
  bool cancelled_ = false;
  Status error_;

  std::atomic<uint64_t> bytes_done_{0};
  std::chrono::steady_clock::time_point first_issue_{}, last_done_{};
  bool any_issued_ = false;
  std::thread issuer_, completer_;
  bool finished_ = false;
};

}  // namespace thaw
