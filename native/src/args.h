// Argument validation for functions called from JS. All failures throw
// TypeError/RangeError; nothing here aborts the process.
#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

namespace vfio_native {

/** info[i] as a non-negative int fd (TypeError / RangeError otherwise). */
int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* what);

/** info[i] as an integer in [min, max] (JS number, exact). Uses `fallback` when undefined and has_fallback. */
uint64_t ArgUint(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t min, uint64_t max);
uint64_t ArgUintOr(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t min, uint64_t max,
                   uint64_t fallback);

/** Converts a JS number to an integer in [min, max] or throws. */
uint64_t ToUint(Napi::Env env, Napi::Value v, const char* what, uint64_t min, uint64_t max);

/** info[i] as a string (TypeError otherwise). */
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what);

/** info[i] as a function (TypeError otherwise). */
Napi::Function ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* what);

/** Bytes of any ArrayBufferView (Uint8Array, Buffer, DataView...). */
struct Bytes {
  const uint8_t* data;
  size_t length;
};
Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* what);
/** The bytes of `v` if it is an ArrayBufferView (a detached one is empty); false if it is not one. */
bool ViewBytes(napi_env env, napi_value v, Bytes* out);

/** Optional array of fds (undefined/null means none); at most max_count entries. */
std::vector<int> ArgFdArray(const Napi::CallbackInfo& info, size_t i, const char* what, size_t max_count);

}  // namespace vfio_native
