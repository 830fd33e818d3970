// File space and writeback on libuv's thread pool: fallocate(2) to punch
// holes / zero ranges, sync_file_range(2) to start writeback early (Node's fs
// has neither). See native/types.ts for the JS contract.
#pragma once
#include <napi.h>

namespace vfio_native {
/** Registers fallocate, fallocateSync, startWriteback, FALLOC_PUNCH_HOLE and FALLOC_ZERO_RANGE (see native/types.ts).
 */
void InitFallocate(Napi::Env env, Napi::Object exports);
}  // namespace vfio_native
