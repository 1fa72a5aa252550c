#include "copier.h"

#include "device.h"

namespace thaw {
namespace {
constexpr unsigned kEventBlockingSync = 1;  // cudaEventBlockingSync: wait without spinning
}  // namespace

std::unique_ptr<Copier> Copier::Create(int device, int streams, Status* status) {
  if (*status = RequireCuda(); !status->ok()) return nullptr;
  std::unique_ptr<Copier> c(new Copier());
  c->api_ = &cuda::GetRuntime().api;
  c->device_ = device;
  if (cuda::Error err = c->api_->SetDevice(device); err != cuda::kSuccess) {
    *status = CudaError("cudaSetDevice(" + std::to_string(device) + ")", err);
    return nullptr;
  }
  for (int i = 0; i < std::max(1, streams); i++) {
    cuda::Stream s = nullptr;
    if (cuda::Error err = c->api_->StreamCreateWithFlags(&s, cuda::kStreamNonBlocking);
        err != cuda::kSuccess) {
      *status = CudaError("cudaStreamCreateWithFlags", err);
      return nullptr;  // the destructor destroys the streams made so far
    }
    c->streams_.push_back(s);
  }
  c->issuer_ = std::thread([p = c.get()] { p->IssueLoop(); });
  c->completer_ = std::thread([p = c.get()] { p->CompleteLoop(); });
  *status = Status::Ok();
  return c;
}

Copier::~Copier() {
  if (!finished_ && (issuer_.joinable() || completer_.joinable())) {
    Cancel();
    Finish();
  }
  if (api_ != nullptr) {
    api_->SetDevice(device_);
    for (cuda::Stream s : streams_) api_->StreamDestroy(s);
  }
}

void Copier::Submit(uint8_t* device_dst, const uint8_t* host_src, uint64_t length) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || cancelled_ || !error_.ok()) return;
    queue_.push_back({device_dst, host_src, length});
  }
  queue_cv_.notify_one();
}

void Copier::Cancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    queue_.clear();
  }
  queue_cv_.notify_all();
}

void Copier::Fail(Status s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_.ok()) error_ = std::move(s);
  queue_.clear();
}

void Copier::IssueLoop() {
  api_->SetDevice(device_);  // the current device is per thread
  size_t next_stream = 0;
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      queue_cv_.wait(lock, [this] { return !queue_.empty() || closed_ || cancelled_; });
      if (queue_.empty()) break;  // closed or cancelled, and nothing left to issue
      item = queue_.front();
      queue_.pop_front();
      if (!any_issued_) {
        any_issued_ = true;
        first_issue_ = std::chrono::steady_clock::now();
      }
    }
    cuda::Stream stream = streams_[next_stream++ % streams_.size()];
    cuda::Error err =
        api_->MemcpyAsync(item.dst, item.src, item.length, cuda::kMemcpyHostToDevice, stream);
    if (err != cuda::kSuccess) {
      Fail(CudaError("cudaMemcpyAsync (host to device, " + std::to_string(item.length) + " bytes)",
                     err));
      break;
    }
    cuda::Event event = nullptr;
    err = api_->EventCreateWithFlags(&event, cuda::kEventDisableTiming | kEventBlockingSync);
    if (err == cuda::kSuccess) err = api_->EventRecord(event, stream);
    if (err != cuda::kSuccess) {
      if (event != nullptr) api_->EventDestroy(event);
      Fail(CudaError("cudaEventRecord", err));
      break;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back({event, item.length});
    }
    pending_cv_.notify_one();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    issue_done_ = true;
  }
  pending_cv_.notify_all();
}

void Copier::CompleteLoop() {
  api_->SetDevice(device_);
  for (;;) {
    Pending p;
    {
      std::unique_lock<std::mutex> lock(mu_);
      pending_cv_.wait(lock, [this] { return !pending_.empty() || issue_done_; });
      if (pending_.empty()) break;
      p = pending_.front();
      pending_.pop_front();
    }
    cuda::Error err = api_->EventSynchronize(p.event);
    api_->EventDestroy(p.event);
    if (err != cuda::kSuccess) {
      Fail(CudaError("cudaEventSynchronize", err));
      continue;  // keep draining the events already recorded
    }
    bytes_done_.fetch_add(p.length, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mu_);
    last_done_ = std::chrono::steady_clock::now();
  }
}

Status Copier::Finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  queue_cv_.notify_all();
  if (issuer_.joinable()) issuer_.join();
  if (completer_.joinable()) completer_.join();
  api_->SetDevice(device_);
  for (cuda::Stream s : streams_) {
    cuda::Error err = api_->StreamSynchronize(s);
    if (err != cuda::kSuccess) Fail(CudaError("cudaStreamSynchronize", err));
  }
  finished_ = true;
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

double Copier::seconds() const {
  if (!any_issued_) return 0;
  return std::chrono::duration<double>(last_done_ - first_issue_).count();
}

}  // namespace thaw
