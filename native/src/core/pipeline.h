// One load: chunk files (or bytes already in the pool) → pool region → optionally GPU memory.
// Reader threads take fixed-size pieces in chunk order, read each with one large pread (O_DIRECT
// where the file system takes it, buffered otherwise) straight into the pool, checksum the piece
// in the same thread while it is hot, and hand it to the copier, so a chunk travels to the GPU
// while the next is read. The last piece of a chunk joins the pieces' CRCs and checks the index's.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "device.h"
#include "pool.h"
#include "status.h"

namespace thaw {

class Copier;

enum class IoMode {
  kAuto,      // O_DIRECT, unless most of the file is already in the page cache
  kDirect,    // O_DIRECT wherever the file system takes it
  kBuffered,  // the page cache
};

struct ChunkPlan {
  std::string path;          // empty: the bytes are already in the pool (copy only)
  uint64_t file_offset = 0;  // where the bytes start in the file
  uint64_t length = 0;
  uint64_t pool_offset = 0;  // where they go in the pool (absolute offset in the pool)
  bool verify = false;
  uint32_t expected_crc = 0;  // CRC-32C over the `length` bytes
  uint64_t device_offset = 0;  // where they go in the device buffer, if any
};

struct PipelineOptions {
  unsigned threads = 0;           // 0: one per core, at least 4, at most 32
  uint64_t piece_bytes = 16 << 20;  // a multiple of 4096
  IoMode io = IoMode::kAuto;
  int streams = 4;                // CUDA streams for the copies
  bool checksum = false;          // compute every chunk's CRC-32C, even with none to check
};

struct ChunkOutcome {
  std::string io;  // "direct", "buffered" or "memory"
  uint32_t crc = 0;
  bool verified = false;
};

struct PipelineResult {
  uint64_t bytes = 0;
  double seconds = 0;       // wall time of the whole load
  uint64_t read_bytes = 0;  // bytes read from files (0 for copy-only)
  double read_seconds = 0;  // from the start to the last piece read and checksummed
  uint64_t copy_bytes = 0;  // bytes copied to the device
  double copy_seconds = 0;  // from the first copy issued to the last finished
  unsigned threads = 0;
  int streams = 0;
  std::vector<ChunkOutcome> chunks;
};

struct PipelineProgress {
  uint64_t total_bytes = 0;
  uint64_t read_bytes = 0;    // landed in the pool (and checksummed, where asked)
  uint64_t copied_bytes = 0;  // finished on the device
  uint64_t chunks_total = 0;
  uint64_t chunks_done = 0;   // read and verified
};

class Pipeline {
 public:
  // `device` may be null (no GPU copy). The pipeline keeps pool and device alive while it runs,
  // and from construction until Run returns holds every pool region its chunks touch busy, so
  // none can be released and handed out again while its threads read into it or copy from it.
  Pipeline(std::shared_ptr<Pool> pool, std::shared_ptr<DeviceBuffer> device,
           std::vector<ChunkPlan> chunks, PipelineOptions options);
  ~Pipeline();

  // Blocks until every chunk is in place, or the first failure or cancellation; in every case
  // no thread and no copy is left running when it returns.
  Status Run(PipelineResult* result);
  // Stops reading and drops copies not yet issued; Run returns once those in flight finish.
  void Cancel();
  PipelineProgress Progress();

 private:
  struct Piece {
    uint32_t chunk;
    uint64_t offset;  // inside the chunk
    uint64_t length;
  };
  struct Chunk {
    ChunkPlan plan;
    int fd_direct = -1;
    int fd_buffered = -1;
    bool tail_room = false;  // the pool has room to round the last read up to 4096
    std::atomic<bool> fell_back{false};
    std::atomic<uint32_t> remaining{0};
    std::vector<uint32_t> piece_crcs;
    uint32_t first_piece = 0;
    ChunkOutcome outcome;
  };

  Status Validate();
  Status OpenFiles();
  void CloseFiles();
  void Worker();
  Status ReadPiece(Chunk& chunk, const Piece& piece, uint8_t* dst);
  void FinishChunk(uint32_t index);
  void Fail(Status s);
  void ReleaseResources();
  bool Stopped() const { return cancelled_.load(std::memory_order_relaxed); }

  std::shared_ptr<Pool> pool_;
  std::vector<uint64_t> leases_;  // pool regions held busy (one per chunk), returned by ReleaseResources
  Status lease_error_;            // a chunk outside the pool's allocated regions
  std::shared_ptr<DeviceBuffer> device_;
  std::vector<std::unique_ptr<Chunk>> chunks_;
  std::vector<Piece> pieces_;
  PipelineOptions options_;
  std::mutex copier_mu_;            // guards copier_ against Progress() / Cancel() from JS
  std::unique_ptr<Copier> copier_;
  Copier* copier_raw_ = nullptr;    // the run's own threads use this, without the lock
  uint64_t copied_final_ = 0;       // bytes copied, once the copier is gone

  std::atomic<size_t> next_piece_{0};
  std::atomic<bool> cancelled_{false};
  std::atomic<uint64_t> read_bytes_{0};
  std::atomic<uint64_t> chunks_done_{0};
  uint64_t total_bytes_ = 0;
  std::chrono::steady_clock::time_point start_{};
  std::mutex mu_;
  Status error_;  // the first failure
  bool user_cancelled_ = false;
  std::chrono::steady_clock::time_point last_read_{};
};

}  // namespace thaw
