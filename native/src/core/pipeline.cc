#include "pipeline.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "copier.h"
#include "crc32c.h"

namespace thaw {
namespace {

constexpr uint64_t kBlock = 4096;

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::max(0.0, std::chrono::duration<double>(b - a).count());
}

// Fraction of [offset, offset + length) of the file that sits in the page cache.
double ResidentFraction(int fd, uint64_t offset, uint64_t length) {
  if (length == 0) return 1.0;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  const uint64_t span = RoundUp(offset + length, page) - start;
  void* map = mmap(nullptr, span, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(start));
  if (map == MAP_FAILED) return 0.0;
  std::vector<unsigned char> vec(span / page);
  double fraction = 0.0;
  if (mincore(map, span, vec.data()) == 0) {
    size_t resident = 0;
    for (unsigned char v : vec) resident += v & 1;
    fraction = static_cast<double>(resident) / static_cast<double>(vec.size());
  }
  munmap(map, span);
  return fraction;
}

// THAW_NO_DIRECT_IO=1 makes every O_DIRECT open count as refused: tests of the buffered
// fallback on kernels whose tmpfs takes O_DIRECT, and an escape hatch for odd file systems.
bool DirectIoRefused() {
  const char* v = std::getenv("THAW_NO_DIRECT_IO");
  return v != nullptr && v[0] == '1';
}

}  // namespace

Pipeline::Pipeline(std::shared_ptr<Pool> pool, std::shared_ptr<DeviceBuffer> device,
                   std::vector<ChunkPlan> chunks, PipelineOptions options)
    : pool_(std::move(pool)), device_(std::move(device)), options_(options) {
  options_.piece_bytes = std::max<uint64_t>(kBlock, RoundUp(options_.piece_bytes, kBlock));
  for (auto& plan : chunks) {
    auto c = std::make_unique<Chunk>();
    c->plan = std::move(plan);
    total_bytes_ += c->plan.length;
    chunks_.push_back(std::move(c));
  }
  // Taken here, on the caller's thread, so the regions are held from the moment the load exists.
  for (size_t i = 0; pool_ != nullptr && i < chunks_.size(); i++) {
    const ChunkPlan& p = chunks_[i]->plan;
    uint64_t region = 0;
    if (!pool_->Acquire(p.pool_offset, p.length, &region)) {
      lease_error_ = Status::Make(Status::Kind::kInvalid,
                                  "chunk " + std::to_string(i) + " (pool offset " +
                                      std::to_string(p.pool_offset) + ", " + std::to_string(p.length) +
                                      " bytes) lies outside the pool's allocated regions");
      lease_error_.chunk = static_cast<int64_t>(i);
      break;
    }
    leases_.push_back(region);
  }
}

Pipeline::~Pipeline() {
  CloseFiles();
  ReleaseResources();  // a load that never ran still lets go of its regions
}

PipelineProgress Pipeline::Progress() {
  PipelineProgress p;
  p.total_bytes = total_bytes_;
  p.read_bytes = read_bytes_.load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(copier_mu_);
    p.copied_bytes = copier_ != nullptr ? copier_->bytes_done() : copied_final_;
  }
  p.chunks_total = chunks_.size();
  p.chunks_done = chunks_done_.load(std::memory_order_relaxed);
  return p;
}

void Pipeline::Cancel() {
  cancelled_.store(true, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(copier_mu_);
  if (copier_ != nullptr) copier_->Cancel();
}

void Pipeline::Fail(Status s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = std::move(s);
  }
  Cancel();
}

Status Pipeline::Validate() {
  if (pool_ == nullptr) return Status::Make(Status::Kind::kInvalid, "the pool is gone");
  if (!lease_error_.ok()) return lease_error_;
  for (size_t i = 0; i < chunks_.size(); i++) {
    Chunk& c = *chunks_[i];
    const ChunkPlan& p = c.plan;
    c.tail_room = pool_->Covers(p.pool_offset, RoundUp(p.length, kBlock));
    if (device_ != nullptr &&
        (p.device_offset > device_->size() || p.length > device_->size() - p.device_offset)) {
      Status s = Status::Make(Status::Kind::kInvalid,
                              "chunk " + std::to_string(i) + " (device offset " +
                                  std::to_string(p.device_offset) + ", " +
                                  std::to_string(p.length) + " bytes) lies outside the " +
                                  std::to_string(device_->size()) + "-byte device buffer");
      s.chunk = static_cast<int64_t>(i);
      return s;
    }
  }
  return Status::Ok();
}

Status Pipeline::OpenFiles() {
  for (size_t i = 0; i < chunks_.size(); i++) {
    Chunk& c = *chunks_[i];
    const ChunkPlan& p = c.plan;
    if (p.path.empty()) {
      c.outcome.io = "memory";
      continue;
    }
    c.fd_buffered = open(p.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (c.fd_buffered < 0) {
      Status s = IoError("open", p.path, -1, errno);
      s.chunk = static_cast<int64_t>(i);
      return s;
    }
    struct stat st;
    if (fstat(c.fd_buffered, &st) != 0) {
      Status s = IoError("fstat", p.path, -1, errno);
      s.chunk = static_cast<int64_t>(i);
      return s;
    }
    if (static_cast<uint64_t>(st.st_size) < p.file_offset + p.length) {
      Status s = Status::Make(Status::Kind::kIo,
                              p.path + " holds " + std::to_string(st.st_size) +
                                  " bytes, fewer than the " +
                                  std::to_string(p.file_offset + p.length) + " expected");
      s.path = p.path;
      s.offset = st.st_size;
      s.chunk = static_cast<int64_t>(i);
      return s;
    }
    posix_fadvise(c.fd_buffered, static_cast<off_t>(p.file_offset),
                  static_cast<off_t>(p.length), POSIX_FADV_SEQUENTIAL);
    c.outcome.io = "buffered";
    if (options_.io == IoMode::kBuffered) continue;
    if (options_.io == IoMode::kAuto &&
        ResidentFraction(c.fd_buffered, p.file_offset, p.length) >= 0.5) {
      continue;  // mostly in the page cache: copying from it beats going to the disk
    }
    c.fd_direct = DirectIoRefused() ? -1 : open(p.path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (c.fd_direct >= 0) c.outcome.io = "direct";
    // EINVAL: the file system takes no O_DIRECT (tmpfs before Linux 6.6, some FUSE and network
    // file systems); the buffered descriptor serves.
  }
  return Status::Ok();
}

void Pipeline::CloseFiles() {
  for (auto& c : chunks_) {
    if (c->fd_direct >= 0) close(c->fd_direct);
    if (c->fd_buffered >= 0) close(c->fd_buffered);
    c->fd_direct = c->fd_buffered = -1;
  }
}

Status Pipeline::ReadPiece(Chunk& c, const Piece& piece, uint8_t* dst) {
  const ChunkPlan& p = c.plan;
  const uint64_t file_offset = p.file_offset + piece.offset;
  const bool last = piece.offset + piece.length == p.length;
  bool direct = c.fd_direct >= 0 && !c.fell_back.load(std::memory_order_relaxed) &&
                file_offset % kBlock == 0 && reinterpret_cast<uintptr_t>(dst) % kBlock == 0 &&
                (piece.length % kBlock == 0 || (last && c.tail_room));
  uint64_t want = direct ? RoundUp(piece.length, kBlock) : piece.length;
  uint64_t done = 0;
  while (done < piece.length) {
    if (Stopped()) return Status::Ok();  // the caller sees the cancellation
    const int fd = direct ? c.fd_direct : c.fd_buffered;
    ssize_t n = pread(fd, dst + done, want - done, static_cast<off_t>(file_offset + done));
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (direct && err == EINVAL) {  // O_DIRECT refused for this range: go buffered
        c.fell_back.store(true, std::memory_order_relaxed);
        direct = false;
        want = piece.length;
        continue;
      }
      return IoError("pread", p.path, static_cast<int64_t>(file_offset + done), err);
    }
    if (n == 0) {
      if (direct) {  // a short O_DIRECT read at the end; let a buffered read say what is left
        direct = false;
        want = piece.length;
        continue;
      }
      Status s = Status::Make(Status::Kind::kIo, "pread " + p.path + " at offset " +
                                                     std::to_string(file_offset + done) +
                                                     ": unexpected end of file");
      s.path = p.path;
      s.offset = static_cast<int64_t>(file_offset + done);
      s.syscall = "pread";
      return s;
    }
    done += static_cast<uint64_t>(n);
    if (direct && done % kBlock != 0 && done < piece.length) {
      direct = false;  // the file ended inside a block; finish (and fail) buffered
      want = piece.length;
    }
  }
  if (last && c.tail_room && piece.length % kBlock != 0) {
    // Keep the region's padding zero whatever an over-read left there.
    std::memset(dst + piece.length, 0, RoundUp(piece.length, kBlock) - piece.length);
  }
  return Status::Ok();
}

void Pipeline::FinishChunk(uint32_t index) {
  Chunk& c = *chunks_[index];
  if (c.fell_back.load(std::memory_order_relaxed) && c.outcome.io == "direct") {
    c.outcome.io = "buffered";
  }
  if (c.plan.verify || options_.checksum) {
    uint32_t crc = 0;
    uint64_t offset = 0;
    for (uint32_t k = 0; k < c.piece_crcs.size(); k++) {
      const uint64_t len = std::min(options_.piece_bytes, c.plan.length - offset);
      crc = Crc32cCombine(crc, c.piece_crcs[k], len);
      offset += len;
    }
    c.outcome.crc = crc;
    c.outcome.verified = c.plan.verify;
    if (c.plan.verify && crc != c.plan.expected_crc) {
      char buf[160];
      std::snprintf(buf, sizeof buf, ": CRC-32C is %08x, the index says %08x", crc,
                    c.plan.expected_crc);
      Status s = Status::Make(Status::Kind::kChecksum,
                              "chunk " + std::to_string(index) + " (" +
                                  (c.plan.path.empty() ? "pool" : c.plan.path) + ")" + buf);
      s.path = c.plan.path;
      s.chunk = index;
      s.expected = c.plan.expected_crc;
      s.actual = crc;
      Fail(std::move(s));
      return;
    }
  }
  chunks_done_.fetch_add(1, std::memory_order_relaxed);
}

void Pipeline::Worker() {
  for (;;) {
    if (Stopped()) return;
    const size_t i = next_piece_.fetch_add(1, std::memory_order_relaxed);
    if (i >= pieces_.size()) return;
    const Piece& piece = pieces_[i];
    Chunk& c = *chunks_[piece.chunk];
    uint8_t* dst = pool_->base() + c.plan.pool_offset + piece.offset;
    if (!c.plan.path.empty()) {
      Status s = ReadPiece(c, piece, dst);
      if (!s.ok()) {
        s.chunk = piece.chunk;
        Fail(std::move(s));
        return;
      }
      if (Stopped()) return;
    }
    if (c.plan.verify || options_.checksum) {
      c.piece_crcs[i - c.first_piece] = Crc32c(0, dst, piece.length);
    }
    read_bytes_.fetch_add(piece.length, std::memory_order_relaxed);
    if (copier_raw_ != nullptr) {  // set before the workers start, reset after they end
      copier_raw_->Submit(device_->ptr() + c.plan.device_offset + piece.offset, dst, piece.length);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_read_ = std::chrono::steady_clock::now();
    }
    if (c.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) FinishChunk(piece.chunk);
  }
}

void Pipeline::ReleaseResources() {
  {
    std::lock_guard<std::mutex> lock(copier_mu_);
    if (copier_ != nullptr) copied_final_ = copier_->bytes_done();
    copier_.reset();
    copier_raw_ = nullptr;
  }
  // Every thread has stopped and every copy finished: the regions may be released now.
  for (uint64_t region : leases_) pool_->Unacquire(region);
  leases_.clear();
  pool_.reset();
  device_.reset();
}

Status Pipeline::Run(PipelineResult* result) {
  start_ = std::chrono::steady_clock::now();
  last_read_ = start_;
  if (Status s = Validate(); !s.ok()) {
    ReleaseResources();
    return s;
  }
  if (Status s = OpenFiles(); !s.ok()) {
    CloseFiles();
    ReleaseResources();
    return s;
  }
  for (uint32_t i = 0; i < chunks_.size(); i++) {
    Chunk& c = *chunks_[i];
    c.first_piece = static_cast<uint32_t>(pieces_.size());
    for (uint64_t off = 0; off < c.plan.length; off += options_.piece_bytes) {
      pieces_.push_back({i, off, std::min(options_.piece_bytes, c.plan.length - off)});
    }
    const uint32_t n = static_cast<uint32_t>(pieces_.size()) - c.first_piece;
    c.remaining.store(n);
    c.piece_crcs.assign(n, 0);
    if (n == 0) {  // an empty chunk: its CRC is 0
      if (c.plan.verify && c.plan.expected_crc != 0) {
        FinishChunk(i);
      } else {
        c.outcome.verified = c.plan.verify;
        chunks_done_.fetch_add(1);
      }
    }
  }
  if (device_ != nullptr && total_bytes_ > 0) {
    Status s;
    std::unique_ptr<Copier> copier = Copier::Create(device_->device(), options_.streams, &s);
    if (!s.ok()) {
      CloseFiles();
      ReleaseResources();
      return s;
    }
    std::lock_guard<std::mutex> lock(copier_mu_);
    copier_ = std::move(copier);
    copier_raw_ = copier_.get();
  }

  unsigned threads = options_.threads;
  if (threads == 0) {
    threads = std::clamp(std::thread::hardware_concurrency(), 4u, 32u);
    bool direct = false;
    for (auto& c : chunks_) direct |= c->fd_direct >= 0;
    if (direct) threads = std::max(threads, 16u);  // O_DIRECT waits on the disk: keep it busy
  }
  bool reads = false;
  for (auto& c : chunks_) reads |= !c->plan.path.empty();
  if (!reads && device_ != nullptr) {
    bool verify = options_.checksum;
    for (auto& c : chunks_) verify |= c->plan.verify;
    if (!verify) threads = 1;  // copy only: one thread hands pieces to the copier
  }
  threads = static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(threads, pieces_.size())));
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (unsigned t = 0; t < threads; t++) workers.emplace_back([this] { Worker(); });
  for (auto& w : workers) w.join();
  const auto read_end = last_read_;

  Status copy_status;
  double copy_seconds = 0;
  int streams = 0;
  if (copier_raw_ != nullptr) {
    if (Stopped()) copier_raw_->Cancel();
    copy_status = copier_raw_->Finish();  // waits for every issued copy, even after a failure
    if (!copy_status.ok()) Fail(copy_status);
    copy_seconds = copier_raw_->seconds();
    streams = copier_raw_->streams();
  }
  CloseFiles();
  const auto end = std::chrono::steady_clock::now();
  ReleaseResources();  // streams, pool and device references go now, not when JS collects the job

  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.ok()) return error_;
  }
  if (Stopped()) return Status::Make(Status::Kind::kCancelled, "the load was cancelled");

  result->bytes = total_bytes_;
  result->seconds = Seconds(start_, end);
  result->read_bytes = reads ? read_bytes_.load() : 0;
  result->read_seconds = reads ? Seconds(start_, read_end) : 0;
  result->copy_bytes = copied_final_;
  result->copy_seconds = copy_seconds;
  result->threads = threads;
  result->streams = streams;
  for (auto& c : chunks_) result->chunks.push_back(c->outcome);
  return Status::Ok();
}

}  // namespace thaw
