#include "errors.h"

#include <cerrno>
#include <cstring>

namespace vfio_native {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "E" + std::to_string(err);
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  std::string message = std::string(syscall) + " failed: " + strerror(err) + " (" + ErrnoName(err) + ")";
  if (!detail.empty()) message += ": " + detail;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, ErrnoName(err)));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  throw ErrnoError(env, err, syscall, detail);
}

std::string Reason(int err, const std::string& detail) { return ErrnoName(err) + ": " + detail; }

void ReportCallbackError(Napi::Env env, const Napi::Error& e) {
  // Same path as an exception thrown by any event-loop callback in JS:
  // process 'uncaughtException', or exit if nobody listens.
  napi_fatal_exception(env, e.Value());
}

}  // namespace vfio_native
