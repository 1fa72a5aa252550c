// Per-environment data of the addon: the constructors of its wrapped classes.
#pragma once
#include <napi.h>

namespace thaw {

struct AddonData {
  Napi::FunctionReference pool_ctor;
  Napi::FunctionReference job_ctor;
  Napi::FunctionReference device_ctor;
};

inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace thaw
