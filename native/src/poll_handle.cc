#include "poll_handle.h"

namespace vfio_native {

int PollHandle::Init(napi_env env, int fd, Callback cb, void* owner) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) return UV_EINVAL;
  auto* handle = new uv_poll_t;
  int r = uv_poll_init(loop, handle, fd);  // also rejects fds epoll cannot watch
  if (r != 0) {
    delete handle;
    return r;
  }
  handle->data = this;
  handle_ = handle;
  cb_ = cb;
  owner_ = owner;
  return 0;
}

int PollHandle::Set(int events) {
  if (handle_ == nullptr) return UV_EBADF;
  if (events == events_) return 0;
  int r = events == 0 ? uv_poll_stop(handle_) : uv_poll_start(handle_, events, OnPoll);
  if (r == 0) events_ = events;
  return r;
}

void PollHandle::Close() {
  if (handle_ == nullptr) return;
  handle_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  handle_ = nullptr;
  events_ = 0;
}

void PollHandle::OnPoll(uv_poll_t* handle, int status, int events) {
  auto* self = static_cast<PollHandle*>(handle->data);
  if (self == nullptr) return;
  self->cb_(self->owner_, status, events);
}

}  // namespace vfio_native
