// Per-environment state of the addon (one per Node env: main thread or Worker).
#pragma once
#include <napi.h>

#include <unordered_set>

namespace vfio_native {

struct AddonData {
  Napi::FunctionReference channel_ctor;
  Napi::FunctionReference mapping_ctor;
  Napi::FunctionReference watcher_ctor;
  /** fds owned and polled by open channels: closeFd refuses them (EBUSY). */
  std::unordered_set<int> busy_fds;

  static AddonData* Get(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

}  // namespace vfio_native
