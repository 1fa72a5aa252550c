#include "pool_napi.h"

#include "addon_data.h"
#include "status_napi.h"

namespace thaw {
namespace {

class CreatePoolWorker : public Napi::AsyncWorker {
 public:
  CreatePoolWorker(Napi::Env env, PoolOptions options)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), options_(options) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    std::unique_ptr<Pool> pool = Pool::Create(options_, &status_);
    if (!status_.ok()) {
      SetError(status_.message);
      return;
    }
    pool_ = std::move(pool);
  }
  void OnOK() override {
    Napi::Env env = Env();
    auto external = Napi::External<std::shared_ptr<Pool>>::New(env, &pool_);
    deferred_.Resolve(GetAddonData(env).pool_ctor.New({external}));
  }
  void OnError(const Napi::Error&) override {
    deferred_.Reject(StatusToError(Env(), status_).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  PoolOptions options_;
  Status status_;
  std::shared_ptr<Pool> pool_;
};

void FreeViewHint(Napi::Env, void*, std::shared_ptr<Pool>* hint) { delete hint; }

}  // namespace

Napi::Function PoolWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativePool",
                     {
                         InstanceMethod<&PoolWrap::Allocate>("allocate"),
                         InstanceMethod<&PoolWrap::Release>("release"),
                         InstanceMethod<&PoolWrap::Buffer>("buffer"),
                         InstanceMethod<&PoolWrap::Stats>("stats"),
                         InstanceMethod<&PoolWrap::Info>("info"),
                         InstanceMethod<&PoolWrap::Dispose>("dispose"),
                     });
}

PoolWrap::PoolWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PoolWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativePool is made by createPool()");
  }
  pool_ = *info[0].As<Napi::External<std::shared_ptr<Pool>>>().Data();
  reported_ = static_cast<int64_t>(pool_->size());
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), reported_);
}

PoolWrap::~PoolWrap() {
  // Finalizer: the safety net when dispose() was never called. Views handed out keep the
  // mapping alive through their own reference until they are collected.
  if (pool_ != nullptr) {
    Napi::MemoryManagement::AdjustExternalMemory(Env(), -reported_);
    pool_.reset();
  }
}

PoolWrap* PoolWrap::Unwrap(const Napi::Value& value) {
  if (!value.IsObject()) throw Napi::TypeError::New(value.Env(), "expected a NativePool");
  Napi::Object obj = value.As<Napi::Object>();
  Napi::FunctionReference& ctor = GetAddonData(value.Env()).pool_ctor;
  if (!obj.InstanceOf(ctor.Value())) throw Napi::TypeError::New(value.Env(), "expected a NativePool");
  PoolWrap* wrap = Napi::ObjectWrap<PoolWrap>::Unwrap(obj);
  if (wrap->pool_ == nullptr) throw Napi::Error::New(value.Env(), "the pool has been disposed");
  return wrap;
}

Pool& PoolWrap::Live(Napi::Env env) {
  if (pool_ == nullptr) throw Napi::Error::New(env, "the pool has been disposed");
  return *pool_;
}

Napi::Value PoolWrap::Allocate(const Napi::CallbackInfo& info) {
  Pool& pool = Live(info.Env());
  uint64_t bytes = ToUint(info[0], "bytes");
  uint64_t offset = 0, length = 0;
  if (bytes == 0 || !pool.Allocate(bytes, &offset, &length)) return info.Env().Null();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("offset", static_cast<double>(offset));
  out.Set("length", static_cast<double>(length));
  return out;
}

void PoolWrap::DetachViews(uint64_t region) {
  auto it = views_.find(region);
  if (it == views_.end()) return;
  for (auto& ref : it->second) {
    if (!ref.IsEmpty()) {
      Napi::ArrayBuffer buffer = ref.Value();
      if (!buffer.IsDetached()) buffer.Detach();
    }
  }
  views_.erase(it);
}

Napi::Value PoolWrap::Release(const Napi::CallbackInfo& info) {
  Pool& pool = Live(info.Env());
  uint64_t offset = ToUint(info[0], "offset");
  uint64_t length = 0;
  // A region a load still reads into is returned once the load ends (kDeferred): never sooner.
  if (pool.Release(offset, &length) == ReleaseResult::kUnknown) {
    throw Napi::RangeError::New(info.Env(),
                                "no region starts at pool offset " + std::to_string(offset));
  }
  DetachViews(offset);  // JS views of a returned region become empty, never stale
  return Napi::Number::New(info.Env(), static_cast<double>(length));
}

Napi::Value PoolWrap::Buffer(const Napi::CallbackInfo& info) {
  Pool& pool = Live(info.Env());
  uint64_t offset = ToUint(info[0], "offset");
  uint64_t length = ToUint(info[1], "length");
  uint64_t start = 0, region_length = 0;
  if (!pool.RegionOf(offset, &start, &region_length) ||
      length > region_length - (offset - start)) {
    throw Napi::RangeError::New(info.Env(), "range is not inside one allocated region");
  }
  auto* hint = new std::shared_ptr<Pool>(pool_);  // the mapping outlives every view
  Napi::ArrayBuffer buffer =
      Napi::ArrayBuffer::New(info.Env(), pool.base() + offset, length, FreeViewHint, hint);
  views_[start].push_back(Napi::Weak(buffer));
  return buffer;
}

Napi::Value PoolWrap::Stats(const Napi::CallbackInfo& info) {
  PoolStats s = Live(info.Env()).Stats();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("bytes", static_cast<double>(s.bytes));
  out.Set("used", static_cast<double>(s.used));
  out.Set("free", static_cast<double>(s.free));
  out.Set("largestFree", static_cast<double>(s.largest_free));
  out.Set("regions", static_cast<double>(s.regions));
  out.Set("releasing", static_cast<double>(s.releasing));
  out.Set("freeExtents", static_cast<double>(s.free_extents));
  return out;
}

Napi::Value PoolWrap::Info(const Napi::CallbackInfo& info) {
  Pool& pool = Live(info.Env());
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("bytes", static_cast<double>(pool.size()));
  out.Set("fd", pool.fd());
  out.Set("path", pool.path());
  out.Set("pinning", PinningName(pool.pinning()));
  out.Set("pinningDetail", pool.pinning_detail());
  out.Set("hugePages", pool.huge_pages());
  out.Set("prefaultSeconds", pool.prefault_seconds());
  out.Set("prefaultThreads", pool.prefault_threads());
  out.Set("pinSeconds", pool.pin_seconds());
  return out;
}

Napi::Value PoolWrap::Dispose(const Napi::CallbackInfo& info) {
  if (pool_ == nullptr) return info.Env().Undefined();
  std::vector<uint64_t> regions;
  for (auto& [start, refs] : views_) regions.push_back(start);
  for (uint64_t start : regions) DetachViews(start);
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -reported_);
  reported_ = 0;
  pool_.reset();  // unmapped now, or when the last running load lets go of it
  return info.Env().Undefined();
}

Napi::Value CreatePool(const Napi::CallbackInfo& info) {
  if (!info[0].IsObject()) throw Napi::TypeError::New(info.Env(), "createPool needs options");
  Napi::Object o = info[0].As<Napi::Object>();
  PoolOptions options;
  options.bytes = GetUint(o, "bytes");
  options.prefault_threads = static_cast<unsigned>(GetUintOr(o, "prefaultThreads", 0));
  options.cuda_device = static_cast<int>(GetUintOr(o, "device", 0));
  options.name = GetStringOr(o, "name", "thaw-pool");
  std::string pin = GetStringOr(o, "pin", "auto");
  if (pin == "auto") options.pin = PinRequest::kAuto;
  else if (pin == "cuda") options.pin = PinRequest::kCuda;
  else if (pin == "mlock") options.pin = PinRequest::kMlock;
  else if (pin == "none") options.pin = PinRequest::kNone;
  else throw Napi::RangeError::New(info.Env(), "pin must be auto, cuda, mlock or none");
  auto* worker = new CreatePoolWorker(info.Env(), options);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace thaw
