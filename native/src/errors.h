// Errors thrown to JS: Error objects carrying `.code` (the errno name, e.g.
// 'EADDRINUSE'), `.errno` (negative, like Node's own) and `.syscall`.
#pragma once
#include <napi.h>

#include <string>

namespace vfio_native {

/** The symbolic name of an errno value ("EINVAL"), or "E<number>" if unknown. */
std::string ErrnoName(int err);

/** An Error with code/errno/syscall set; `detail` is appended to the message. */
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& detail = "");

/** Throws ErrnoError (C++ exception; node-addon-api turns it into a JS throw). */
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& detail = "");

/** "EFAULT: detail" style reason strings for close callbacks. */
std::string Reason(int err, const std::string& detail);

/** Reports an exception thrown by a JS callback that was called from the event loop. */
void ReportCallbackError(Napi::Env env, const Napi::Error& e);

}  // namespace vfio_native
