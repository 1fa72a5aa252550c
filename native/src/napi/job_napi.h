// JS face of a load: startLoad(pool, device | null, chunks, options) -> NativeJob
// { promise, progress(), cancel() }. The pipeline runs in an AsyncWorker (its own reader and
// copy threads inside); progress() reads counters, cancel() sets a flag the threads check.
#pragma once
#include <napi.h>

#include <memory>

#include "../core/pipeline.h"

namespace thaw {

class JobWrap : public Napi::ObjectWrap<JobWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit JobWrap(const Napi::CallbackInfo& info);  // only from startLoad

 private:
  Napi::Value Progress(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  std::shared_ptr<Pipeline> pipeline_;
};

Napi::Value StartLoad(const Napi::CallbackInfo& info);

}  // namespace thaw
