#include "checksum_napi.h"

#include "../core/crc32c.h"

namespace thaw {
namespace {

class Crc32cWorker : public Napi::AsyncWorker {
 public:
  Crc32cWorker(Napi::Env env, Napi::Uint8Array data, uint32_t crc)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        data_ref_(Napi::Persistent(data)),  // keeps the bytes alive while the worker reads them
        bytes_(data.Data()),
        length_(data.ByteLength()),
        crc_(crc) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override { crc_ = Crc32c(crc_, bytes_, length_); }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), crc_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Uint8Array> data_ref_;
  const uint8_t* bytes_;
  size_t length_;
  uint32_t crc_;
};

}  // namespace

Napi::Value Crc32cAsync(const Napi::CallbackInfo& info) {
  auto data = info[0].As<Napi::Uint8Array>();
  auto crc = info[1].As<Napi::Number>().Uint32Value();
  auto* worker = new Crc32cWorker(info.Env(), data, crc);
  auto promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Crc32cSync(const Napi::CallbackInfo& info) {
  auto data = info[0].As<Napi::Uint8Array>();
  auto crc = info[1].As<Napi::Number>().Uint32Value();
  return Napi::Number::New(info.Env(), Crc32c(crc, data.Data(), data.ByteLength()));
}

Napi::Value Crc32cCombineJs(const Napi::CallbackInfo& info) {
  auto a = info[0].As<Napi::Number>().Uint32Value();
  auto b = info[1].As<Napi::Number>().Uint32Value();
  auto len = static_cast<uint64_t>(info[2].As<Napi::Number>().DoubleValue());
  return Napi::Number::New(info.Env(), Crc32cCombine(a, b, len));
}

}  // namespace thaw
