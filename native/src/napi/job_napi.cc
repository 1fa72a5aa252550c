#include "job_napi.h"

#include "addon_data.h"
#include "cuda_napi.h"
#include "pool_napi.h"
#include "status_napi.h"

namespace thaw {
namespace {

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, std::shared_ptr<Pipeline> pipeline, Napi::Object job,
             Napi::Value pool, Napi::Value device)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        pipeline_(std::move(pipeline)),
        job_ref_(Napi::Persistent(job)),
        pool_ref_(Napi::Persistent(pool.As<Napi::Object>())) {
    if (device.IsObject()) device_ref_ = Napi::Persistent(device.As<Napi::Object>());
  }
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    status_ = pipeline_->Run(&result_);
    if (!status_.ok()) SetError(status_.message);
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("bytes", static_cast<double>(result_.bytes));
    out.Set("seconds", result_.seconds);
    out.Set("readBytes", static_cast<double>(result_.read_bytes));
    out.Set("readSeconds", result_.read_seconds);
    out.Set("copyBytes", static_cast<double>(result_.copy_bytes));
    out.Set("copySeconds", result_.copy_seconds);
    out.Set("threads", result_.threads);
    out.Set("streams", result_.streams);
    Napi::Array chunks = Napi::Array::New(env, result_.chunks.size());
    for (size_t i = 0; i < result_.chunks.size(); i++) {
      const ChunkOutcome& c = result_.chunks[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("io", c.io);
      o.Set("crc32c", static_cast<double>(c.crc));
      o.Set("verified", c.verified);
      chunks.Set(i, o);
    }
    out.Set("chunks", chunks);
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error&) override { deferred_.Reject(StatusToError(Env(), status_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Pipeline> pipeline_;
  // The JS objects whose memory the threads touch stay alive while they run.
  Napi::ObjectReference job_ref_, pool_ref_, device_ref_;
  Status status_;
  PipelineResult result_;
};

}  // namespace

Napi::Function JobWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeJob",
                     {
                         InstanceMethod<&JobWrap::Progress>("progress"),
                         InstanceMethod<&JobWrap::Cancel>("cancel"),
                     });
}

JobWrap::JobWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JobWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeJob is made by startLoad()");
  }
  pipeline_ = *info[0].As<Napi::External<std::shared_ptr<Pipeline>>>().Data();
}

Napi::Value JobWrap::Progress(const Napi::CallbackInfo& info) {
  PipelineProgress p = pipeline_->Progress();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("totalBytes", static_cast<double>(p.total_bytes));
  out.Set("readBytes", static_cast<double>(p.read_bytes));
  out.Set("copiedBytes", static_cast<double>(p.copied_bytes));
  out.Set("chunksTotal", static_cast<double>(p.chunks_total));
  out.Set("chunksDone", static_cast<double>(p.chunks_done));
  return out;
}

Napi::Value JobWrap::Cancel(const Napi::CallbackInfo& info) {
  pipeline_->Cancel();
  return info.Env().Undefined();
}

Napi::Value StartLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  PoolWrap* pool = PoolWrap::Unwrap(info[0]);
  std::shared_ptr<DeviceBuffer> device;
  if (!info[1].IsNull() && !info[1].IsUndefined()) device = DeviceWrap::Unwrap(info[1])->buffer();
  if (!info[2].IsArray()) throw Napi::TypeError::New(env, "chunks must be an array");
  Napi::Array list = info[2].As<Napi::Array>();
  std::vector<ChunkPlan> chunks;
  chunks.reserve(list.Length());
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "each chunk must be an object");
    Napi::Object o = v.As<Napi::Object>();
    ChunkPlan p;
    p.path = GetStringOr(o, "path", "");
    p.file_offset = GetUintOr(o, "fileOffset", 0);
    p.length = GetUint(o, "length");
    p.pool_offset = GetUint(o, "poolOffset");
    p.device_offset = GetUintOr(o, "deviceOffset", 0);
    Napi::Value crc = o.Get("crc32c");
    if (!crc.IsUndefined() && !crc.IsNull()) {
      uint64_t c = ToUint(crc, "crc32c");
      if (c > 0xffffffffu) throw Napi::RangeError::New(env, "crc32c must fit in 32 bits");
      p.verify = true;
      p.expected_crc = static_cast<uint32_t>(c);
    }
    chunks.push_back(std::move(p));
  }
  PipelineOptions options;
  if (info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    options.threads = static_cast<unsigned>(GetUintOr(o, "threads", 0));
    options.piece_bytes = GetUintOr(o, "pieceBytes", options.piece_bytes);
    options.streams = static_cast<int>(GetUintOr(o, "streams", 4));
    Napi::Value checksum = o.Get("checksum");
    options.checksum = checksum.IsBoolean() && checksum.As<Napi::Boolean>().Value();
    std::string io = GetStringOr(o, "io", "auto");
    if (io == "auto") options.io = IoMode::kAuto;
    else if (io == "direct") options.io = IoMode::kDirect;
    else if (io == "buffered") options.io = IoMode::kBuffered;
    else throw Napi::RangeError::New(env, "io must be auto, direct or buffered");
  }
  auto pipeline = std::make_shared<Pipeline>(pool->pool(), device, std::move(chunks), options);
  auto external = Napi::External<std::shared_ptr<Pipeline>>::New(env, &pipeline);
  Napi::Object job = GetAddonData(env).job_ctor.New({external});
  auto* worker = new LoadWorker(env, pipeline, job, info[0], info[1]);
  job.Set("promise", worker->Promise());
  worker->Queue();
  return job;
}

}  // namespace thaw
