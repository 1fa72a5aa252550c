// The outcome of a native operation: ok, or what went wrong and where.
#pragma once
#include <cstdint>
#include <string>

namespace thaw {

struct Status {
  enum class Kind {
    kOk,
    kInvalid,    // bad arguments (caught here when the caller's checks missed them)
    kIo,         // a system call on a file failed, or a file was shorter than expected
    kChecksum,   // a chunk's CRC-32C differs from the index
    kCancelled,  // the caller cancelled
    kCuda,       // a CUDA call failed, or CUDA is not available
    kNoMemory,   // the pool or the system ran out of memory
  };

  Kind kind = Kind::kOk;
  std::string message;  // complete, human-readable
  std::string path;     // file involved, if any
  int64_t offset = -1;  // byte offset in that file, if any
  int sys_errno = 0;    // errno of the failed system call, if any
  std::string syscall;  // name of the failed system call, if any
  int64_t chunk = -1;   // chunk index, if any
  uint32_t expected = 0, actual = 0;  // checksums, for kChecksum
  int cuda_error = 0;   // cudaError_t, for kCuda

  bool ok() const { return kind == Kind::kOk; }
  static Status Ok() { return Status(); }
  static Status Make(Kind kind, std::string message) {
    Status s;
    s.kind = kind;
    s.message = std::move(message);
    return s;
  }
};

const char* StatusKindName(Status::Kind kind);

// "pread <path> at offset <n>: <strerror> (EIO)" with the fields filled in.
Status IoError(const std::string& syscall, const std::string& path, int64_t offset, int err);

// Name of an errno value ("EIO"), or "E<n>".
std::string ErrnoName(int err);

}  // namespace thaw
