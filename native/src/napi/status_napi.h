// Turns a core Status into a JS Error whose properties say what failed and where.
#pragma once
#include <napi.h>

#include "../core/status.h"

namespace thaw {

// Error with message, and `kind` ("io", "checksum", "cancelled", "cuda", "invalid",
// "no-memory"), plus where known: path, offset, errno, code (errno name), syscall, chunk,
// expected / actual (checksums), cudaError.
Napi::Error StatusToError(Napi::Env env, const Status& status);

// Reads a non-negative integer property (a JS number); throws TypeError when absent or wrong.
uint64_t GetUint(const Napi::Object& obj, const char* key);
uint64_t GetUintOr(const Napi::Object& obj, const char* key, uint64_t fallback);
std::string GetStringOr(const Napi::Object& obj, const char* key, const std::string& fallback);
uint64_t ToUint(const Napi::Value& value, const char* what);

}  // namespace thaw
