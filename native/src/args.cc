#include "args.h"

#include <climits>
#include <cmath>
#include <string>

namespace vfio_native {

namespace {
[[noreturn]] void ThrowType(Napi::Env env, const std::string& msg) {
  Napi::TypeError e = Napi::TypeError::New(env, msg);
  e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
  throw e;
}
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& msg) {
  Napi::RangeError e = Napi::RangeError::New(env, msg);
  e.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  throw e;
}
}  // namespace

uint64_t ToUint(Napi::Env env, Napi::Value v, const char* what, uint64_t min, uint64_t max) {
  if (!v.IsNumber()) ThrowType(env, std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > 9007199254740991.0) {
    ThrowRange(env, std::string(what) + " must be a non-negative safe integer");
  }
  uint64_t u = static_cast<uint64_t>(d);
  if (u < min || u > max) {
    ThrowRange(env, std::string(what) + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return u;
}

uint64_t ArgUint(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t min, uint64_t max) {
  return ToUint(info.Env(), info[i], what, min, max);
}

uint64_t ArgUintOr(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t min, uint64_t max,
                   uint64_t fallback) {
  if (info[i].IsUndefined()) return fallback;
  return ToUint(info.Env(), info[i], what, min, max);
}

int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* what) {
  return static_cast<int>(ToUint(info.Env(), info[i], what, 0, INT_MAX));
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsString()) ThrowType(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Function ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsFunction()) ThrowType(info.Env(), std::string(what) + " must be a function");
  return info[i].As<Napi::Function>();
}

bool ViewBytes(napi_env env, napi_value v, Bytes* out) {
  bool is = false;
  void* data = nullptr;
  size_t length = 0;
  napi_value ab;
  size_t offset = 0;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t count = 0;
    NAPI_THROW_IF_FAILED(env, napi_get_typedarray_info(env, v, &type, &count, &data, &ab, &offset), false);
    size_t elem = 1;
    switch (type) {
      case napi_int16_array:
      case napi_uint16_array:
        elem = 2;
        break;
      case napi_int32_array:
      case napi_uint32_array:
      case napi_float32_array:
        elem = 4;
        break;
      case napi_float64_array:
      case napi_bigint64_array:
      case napi_biguint64_array:
        elem = 8;
        break;
      default:
        elem = 1;
    }
    length = count * elem;
  } else if (napi_is_dataview(env, v, &is) == napi_ok && is) {
    NAPI_THROW_IF_FAILED(env, napi_get_dataview_info(env, v, &length, &data, &ab, &offset), false);
  } else {
    return false;
  }
  *out = Bytes{static_cast<const uint8_t*>(data), data == nullptr ? 0 : length};
  return true;
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Bytes bytes{nullptr, 0};
  if (!ViewBytes(info.Env(), info[i], &bytes)) {
    ThrowType(info.Env(), std::string(what) + " must be a Uint8Array (or another ArrayBufferView)");
  }
  return bytes;
}

std::vector<int> ArgFdArray(const Napi::CallbackInfo& info, size_t i, const char* what, size_t max_count) {
  std::vector<int> fds;
  Napi::Value v = info[i];
  if (v.IsUndefined() || v.IsNull()) return fds;
  if (!v.IsArray()) ThrowType(info.Env(), std::string(what) + " must be an array of fds");
  Napi::Array arr = v.As<Napi::Array>();
  uint32_t n = arr.Length();
  if (n > max_count) {
    ThrowRange(info.Env(), std::string(what) + ": at most " + std::to_string(max_count) + " fds per message");
  }
  fds.reserve(n);
  for (uint32_t k = 0; k < n; k++) {
    fds.push_back(static_cast<int>(ToUint(info.Env(), arr.Get(k), what, 0, INT_MAX)));
  }
  return fds;
}

}  // namespace vfio_native
