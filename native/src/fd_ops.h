// Plain fd functions: eventfd, eventfdWrite/Read, memfdCreate, closeFd, dupFd.
#pragma once
#include <napi.h>

namespace vfio_native {
void InitFdOps(Napi::Env env, Napi::Object exports);
}  // namespace vfio_native
