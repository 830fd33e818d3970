// A uv_poll_t on the env's own libuv loop, owned by a C++ object.
// The handle memory outlives its owner until libuv's close callback runs, so
// the owner may be destroyed at any time after Close().
#pragma once
#include <napi.h>
#include <uv.h>

namespace vfio_native {

class PollHandle {
 public:
  using Callback = void (*)(void* owner, int status, int events);

  PollHandle() = default;
  ~PollHandle() { Close(); }
  PollHandle(const PollHandle&) = delete;
  PollHandle& operator=(const PollHandle&) = delete;

  /** uv_poll_init on the env's loop; returns 0 or a negative libuv error. */
  int Init(napi_env env, int fd, Callback cb, void* owner);
  /** uv_poll_start with `events` (0 stops polling). Returns 0 or a negative libuv error. */
  int Set(int events);
  /** uv_close; afterwards the fd may be closed. Idempotent. */
  void Close();

 private:
  static void OnPoll(uv_poll_t* handle, int status, int events);
  uv_poll_t* handle_ = nullptr;
  Callback cb_ = nullptr;
  void* owner_ = nullptr;
  int events_ = 0;
};

}  // namespace vfio_native
