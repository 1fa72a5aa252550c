#include "status_napi.h"

#include <cmath>

namespace thaw {

Napi::Error StatusToError(Napi::Env env, const Status& s) {
  Napi::Error error = s.kind == Status::Kind::kInvalid ? Napi::Error(Napi::TypeError::New(env, s.message))
                                                       : Napi::Error::New(env, s.message);
  Napi::Object obj = error.Value();
  obj.Set("kind", StatusKindName(s.kind));
  if (!s.path.empty()) obj.Set("path", s.path);
  if (s.offset >= 0) obj.Set("offset", static_cast<double>(s.offset));
  if (s.sys_errno != 0) {
    obj.Set("errno", s.sys_errno);
    obj.Set("code", ErrnoName(s.sys_errno));
  }
  if (!s.syscall.empty()) obj.Set("syscall", s.syscall);
  if (s.chunk >= 0) obj.Set("chunk", static_cast<double>(s.chunk));
  if (s.kind == Status::Kind::kChecksum) {
    obj.Set("expected", static_cast<double>(s.expected));
    obj.Set("actual", static_cast<double>(s.actual));
  }
  if (s.cuda_error != 0) obj.Set("cudaError", s.cuda_error);
  return error;
}

uint64_t ToUint(const Napi::Value& value, const char* what) {
  if (!value.IsNumber()) {
    throw Napi::TypeError::New(value.Env(), std::string(what) + " must be a number");
  }
  double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) {
    throw Napi::RangeError::New(value.Env(),
                                std::string(what) + " must be a non-negative safe integer");
  }
  return static_cast<uint64_t>(d);
}

uint64_t GetUint(const Napi::Object& obj, const char* key) { return ToUint(obj.Get(key), key); }

uint64_t GetUintOr(const Napi::Object& obj, const char* key, uint64_t fallback) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined()) return fallback;
  return ToUint(v, key);
}

std::string GetStringOr(const Napi::Object& obj, const char* key, const std::string& fallback) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsString()) throw Napi::TypeError::New(obj.Env(), std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace thaw
