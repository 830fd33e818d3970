// fallocate(2) on libuv's thread pool: punch holes / zero ranges in a file
// (Node's fs has no fallocate). See native/index.ts for the JS contract.
#pragma once
#include <napi.h>

namespace vfio_native {
/** Registers fallocate, fallocateSync, FALLOC_PUNCH_HOLE and FALLOC_ZERO_RANGE (see native/index.ts). */
void InitFallocate(Napi::Env env, Napi::Object exports);
}  // namespace vfio_native
