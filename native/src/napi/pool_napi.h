// JS face of the pinned pool: createPool(options) -> Promise<Pool>.
#pragma once
#include <napi.h>

#include <map>
#include <memory>
#include <vector>

#include "../core/pool.h"

namespace thaw {

class PoolWrap : public Napi::ObjectWrap<PoolWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit PoolWrap(const Napi::CallbackInfo& info);  // only from createPool
  ~PoolWrap() override;

  // Null once disposed.
  std::shared_ptr<Pool> pool() const { return pool_; }
  static PoolWrap* Unwrap(const Napi::Value& value);  // throws TypeError when not a live pool

 private:
  Napi::Value Allocate(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Buffer(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Pool& Live(Napi::Env env);
  void DetachViews(uint64_t region);

  std::shared_ptr<Pool> pool_;
  // External ArrayBuffers handed out, by region start; detached when the region is released.
  std::map<uint64_t, std::vector<Napi::Reference<Napi::ArrayBuffer>>> views_;
  int64_t reported_ = 0;  // bytes reported to V8 with AdjustExternalMemory
};

// createPool({ bytes, prefaultThreads, pin: "auto"|"cuda"|"mlock"|"none", device, name })
Napi::Value CreatePool(const Napi::CallbackInfo& info);

}  // namespace thaw
