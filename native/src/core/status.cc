#include "status.h"

#include <cstring>

namespace thaw {

const char* StatusKindName(Status::Kind kind) {
  switch (kind) {
    case Status::Kind::kOk: return "ok";
    case Status::Kind::kInvalid: return "invalid";
    case Status::Kind::kIo: return "io";
    case Status::Kind::kChecksum: return "checksum";
    case Status::Kind::kCancelled: return "cancelled";
    case Status::Kind::kCuda: return "cuda";
    case Status::Kind::kNoMemory: return "no-memory";
  }
  return "unknown";
}

std::string ErrnoName(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* name = strerrorname_np(err)) return name;
#endif
  return "E" + std::to_string(err);
}

Status IoError(const std::string& syscall, const std::string& path, int64_t offset, int err) {
  Status s;
  s.kind = Status::Kind::kIo;
  s.path = path;
  s.offset = offset;
  s.sys_errno = err;
  s.syscall = syscall;
  char buf[256];
  const char* text = strerror_r(err, buf, sizeof buf);  // GNU variant
  s.message = syscall + " " + path;
  if (offset >= 0) s.message += " at offset " + std::to_string(offset);
  s.message += ": " + std::string(text) + " (" + ErrnoName(err) + ")";
  return s;
}

}  // namespace thaw
