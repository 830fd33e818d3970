#include "channel.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "addon_data.h"
#include "args.h"
#include "errors.h"
#include "sockets.h"

namespace vfio_native {

namespace {
constexpr size_t kHeaderSize = 16;
constexpr size_t kInitialBuffer = 64 * 1024;
constexpr size_t kShrinkAbove = 1024 * 1024;
constexpr uint64_t kMaxMessageSizeLimit = 1ULL << 30;
constexpr uint64_t kMaxFdsLimit = 253;  // SCM_MAX_FD
constexpr int kMaxReadsPerWake = 16;

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}
}  // namespace

Napi::Function Channel::Define(Napi::Env env) {
  return DefineClass(env, "Channel",
                     {
                         InstanceMethod<&Channel::Send>("send"),
                         InstanceMethod<&Channel::SendStaged>("sendStaged"),
                         InstanceMethod<&Channel::Close>("close"),
                         InstanceAccessor<&Channel::PendingBytes>("pendingBytes"),
                         InstanceAccessor<&Channel::Fd>("fd"),
                         InstanceAccessor<&Channel::Closed>("closed"),

                     });
}

Channel::Channel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Channel>(info) {}

Channel::~Channel() {
  ReleaseResources();
  if (cleanup_hook_) napi_remove_env_cleanup_hook(Env(), OnEnvCleanup, this);
  free(buf_);
}

Napi::Value Channel::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  if (!info[1].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object options = info[1].As<Napi::Object>();
  uint64_t max_message_size =
      ToUint(env, options.Get("maxMessageSize"), "options.maxMessageSize", kHeaderSize, kMaxMessageSizeLimit);
  uint64_t max_fds = ToUint(env, options.Get("maxFds"), "options.maxFds", 0, kMaxFdsLimit);
  Napi::Value rx_staging = options.Get("receiveStaging");
  if (!rx_staging.IsArrayBuffer() || rx_staging.As<Napi::ArrayBuffer>().ByteLength() < kHeaderSize) {
    throw Napi::TypeError::New(env, "options.receiveStaging must be an ArrayBuffer of at least 16 bytes");
  }
  Napi::Value tx_staging = options.Get("sendStaging");
  if (!tx_staging.IsArrayBuffer() || tx_staging.As<Napi::ArrayBuffer>().ByteLength() == 0) {
    throw Napi::TypeError::New(env, "options.sendStaging must be a non-empty ArrayBuffer");
  }
  Napi::Function on_message = ArgFunction(info, 2, "onMessage");
  Napi::Function on_close = ArgFunction(info, 3, "onClose");

  struct stat st;
  if (fstat(fd, &st) < 0) ThrowErrno(env, errno, "fstat", "fd " + std::to_string(fd));
  if (!S_ISSOCK(st.st_mode)) ThrowErrno(env, ENOTSOCK, "openChannel", "fd " + std::to_string(fd) + " is not a socket");
  int err = MakeNonBlockingCloexec(fd);
  if (err != 0) ThrowErrno(env, err, "fcntl");

  AddonData* addon = AddonData::Get(env);
  Napi::Object obj = addon->channel_ctor.New({});
  Channel* self = Unwrap(obj);
  self->max_message_size_ = max_message_size;
  self->max_fds_ = max_fds;
  self->cap_ = kInitialBuffer;
  self->buf_ = static_cast<uint8_t*>(malloc(self->cap_));
  if (self->buf_ == nullptr) ThrowErrno(env, ENOMEM, "malloc");
  if (max_fds > 0) {
    self->control_len_ = CMSG_SPACE(max_fds * sizeof(int));
    self->control_.reset(new uint64_t[(self->control_len_ + 7) / 8]);
  }
  int r = self->poll_.Init(env, fd, OnPoll, self);
  if (r == 0) r = self->poll_.Set(UV_READABLE);
  if (r != 0) {
    self->poll_.Close();
    ThrowErrno(env, -r, "uv_poll_start", "fd " + std::to_string(fd));  // the fd stays the caller's
  }
  // From here on the channel owns the fd.
  self->fd_ = fd;
  self->addon_ = addon;
  addon->busy_fds.insert(fd);
  Napi::ArrayBuffer rx = rx_staging.As<Napi::ArrayBuffer>();
  self->rx_staging_ref_ = Napi::Persistent(rx);
  self->rx_staging_ = static_cast<uint8_t*>(rx.Data());
  self->rx_staging_len_ = rx.ByteLength();
  Napi::ArrayBuffer tx = tx_staging.As<Napi::ArrayBuffer>();
  self->tx_staging_ref_ = Napi::Persistent(tx);
  self->tx_staging_ = static_cast<uint8_t*>(tx.Data());
  self->tx_staging_len_ = tx.ByteLength();
  self->on_message_ = Napi::Persistent(on_message);
  self->on_close_ = Napi::Persistent(on_close);
  self->context_ = std::make_unique<Napi::AsyncContext>(env, "VfioUserChannel", obj);
  napi_add_env_cleanup_hook(env, OnEnvCleanup, self);
  self->cleanup_hook_ = true;
  self->Ref();
  self->referenced_ = true;  // alive while open
  return obj;
}

// ---- JS members -------------------------------------------------------------

Napi::Value Channel::Send(const Napi::CallbackInfo& info) { return SendBytes(info, ArgBytes(info, 0, "message")); }

Napi::Value Channel::SendStaged(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) ThrowErrno(env, EPIPE, "send", "channel is closed");  // the staging buffer is released by then
  size_t length = static_cast<size_t>(ToUint(env, info[0], "length", 0, tx_staging_len_));
  return SendBytes(info, Bytes{tx_staging_, length});
}

Napi::Value Channel::SendBytes(const Napi::CallbackInfo& info, Bytes bytes) {
  Napi::Env env = info.Env();
  std::vector<int> fds = ArgFdArray(info, 1, "fds", kMaxFdsLimit);
  if (closed_) ThrowErrno(env, EPIPE, "send", "channel is closed");
  if (bytes.length == 0) {
    if (!fds.empty()) ThrowErrno(env, EINVAL, "send", "fds need at least one byte to ride on");
    return Napi::Number::New(env, static_cast<double>(queue_.pending_bytes()));
  }
  size_t sent = 0;
  if (queue_.empty()) {
    struct iovec iov = {const_cast<uint8_t*>(bytes.data), bytes.length};
    ssize_t n = SendWithFds(fd_, &iov, 1, fds.data(), fds.size());
    if (n < 0 && n != -EAGAIN && n != -EWOULDBLOCK) ThrowErrno(env, static_cast<int>(-n), "sendmsg");
    if (n == static_cast<ssize_t>(bytes.length)) return Napi::Number::New(env, 0);
    if (n > 0) {
      sent = static_cast<size_t>(n);
      fds.clear();  // they went with the first chunk
    }
  }
  // Queue the rest; borrowed fds are dup'ed since the caller may close them now.
  std::vector<int> owned;
  owned.reserve(fds.size());
  for (int fd : fds) {
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
      int err = errno;
      CloseAll(owned);
      ThrowErrno(env, err, "dup", "fd " + std::to_string(fd));
    }
    owned.push_back(copy);
  }
  queue_.Push(bytes.data + sent, bytes.length - sent, std::move(owned));
  UpdatePoll();
  return Napi::Number::New(env, static_cast<double>(queue_.pending_bytes()));
}

Napi::Value Channel::Close(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

Napi::Value Channel::PendingBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(queue_.pending_bytes()));
}

Napi::Value Channel::Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value Channel::Closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), closed_); }

// ---- lifecycle ----------------------------------------------------------------

void Channel::ReleaseResources() {
  poll_.Close();
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  for (FdGroup& g : fd_groups_) CloseAll(g.fds);
  fd_groups_.clear();
  queue_.Clear();
}

void Channel::OnEnvCleanup(void* self) {
  auto* c = static_cast<Channel*>(self);
  c->cleanup_hook_ = false;
  c->closed_ = true;
  c->ReleaseResources();
}

void Channel::Shutdown() {
  if (closed_) return;
  closed_ = true;
  if (addon_ != nullptr && fd_ >= 0) addon_->busy_fds.erase(fd_);
  ReleaseResources();
  if (!dispatching_ && buf_ != nullptr) {
    free(buf_);
    buf_ = nullptr;
    cap_ = start_ = end_ = 0;
  }
  if (cleanup_hook_) {
    napi_remove_env_cleanup_hook(Env(), OnEnvCleanup, this);
    cleanup_hook_ = false;
  }
  on_message_.Reset();
  on_close_.Reset();
  rx_staging_ref_.Reset();
  rx_staging_ = nullptr;
  rx_staging_len_ = 0;
  tx_staging_ref_.Reset();
  tx_staging_ = nullptr;
  tx_staging_len_ = 0;
  if (referenced_) {
    referenced_ = false;
    Unref();
  }
}

void Channel::Fail(const std::string& reason) {
  if (closed_) return;
  Napi::Object recv = recv_.IsEmpty() ? Value() : recv_;
  Napi::FunctionReference on_close = std::move(on_close_);
  Shutdown();
  if (on_close.IsEmpty() || recv.IsEmpty()) return;
  try {
    on_close.MakeCallback(recv, {Napi::String::New(Env(), reason)}, *context_);
  } catch (const Napi::Error& e) {
    ReportCallbackError(Env(), e);
  }
}

void Channel::UpdatePoll() {
  if (closed_) return;
  int events = (reading_ ? UV_READABLE : 0) | (queue_.empty() ? 0 : UV_WRITABLE);
  int r = poll_.Set(events);
  if (r != 0) Fail(Reason(-r, "uv_poll_start failed"));
}

// ---- event loop -------------------------------------------------------------

void Channel::OnPoll(void* self, int status, int events) {
  auto* c = static_cast<Channel*>(self);
  Napi::HandleScope scope(c->Env());
  c->recv_ = c->Value();  // keeps the wrapper alive even if a callback closes us
  if (status < 0) {
    // libuv reports a socket error (POLLERR) as EBADF: deliver what can still
    // be read, then name the real cause (ECONNRESET, EPIPE...) from SO_ERROR.
    if (status == UV_EBADF && !c->closed_ && c->reading_) c->ReadAvailable();
    if (!c->closed_) {
      int err = -status;
      int so_error = 0;
      socklen_t len = sizeof so_error;
      if (status == UV_EBADF && getsockopt(c->fd_, SOL_SOCKET, SO_ERROR, &so_error, &len) == 0 && so_error != 0) {
        err = so_error;
      }
      c->Fail(Reason(err, err == -status ? "poll failed" : "socket error"));
    }
  } else {
    // Read first: messages the peer sent before hanging up are delivered
    // before a send error could close the channel.
    if ((events & (UV_READABLE | UV_DISCONNECT)) && !c->closed_ && c->reading_) c->ReadAvailable();
    if ((events & UV_WRITABLE) && !c->closed_) c->WriteQueued();
  }
  c->recv_ = Napi::Object();
  if (c->closed_ && c->buf_ != nullptr) {
    free(c->buf_);
    c->buf_ = nullptr;
    c->cap_ = c->start_ = c->end_ = 0;
  }
}

void Channel::WriteQueued() {
  int err = queue_.Flush(fd_);
  if (err != 0 && err != EAGAIN) {
    Fail(Reason(err, "sendmsg failed"));
    return;
  }
  UpdatePoll();
}

bool Channel::Reserve(size_t need) {
  if (start_ == end_) start_ = end_ = 0;
  if (cap_ - start_ >= need && end_ < cap_) return true;
  if (start_ > 0) {
    memmove(buf_, buf_ + start_, end_ - start_);
    end_ -= start_;
    start_ = 0;
  }
  if (cap_ >= need && end_ < cap_) return true;
  size_t want = std::max(need, cap_ + kInitialBuffer);
  want = (want + 4095) & ~static_cast<size_t>(4095);
  auto* grown = static_cast<uint8_t*>(realloc(buf_, want));
  if (grown == nullptr) return false;
  buf_ = grown;
  cap_ = want;
  return true;
}

void Channel::ReadAvailable() {
  // A bounded number of full reads per wake-up, so a flooding peer cannot
  // starve the rest of the event loop (the level-triggered poll comes back).
  for (int reads = 0; reads < kMaxReadsPerWake && !closed_ && reading_; reads++) {
    // Room for the whole pending message if its header is in (it fits: size <= max).
    size_t need = kHeaderSize;
    if (discard_left_ == 0 && end_ - start_ >= kHeaderSize) {
      uint32_t size;
      memcpy(&size, buf_ + start_ + 4, sizeof size);
      need = std::max<size_t>(size, kHeaderSize);
    }
    if (!Reserve(need)) {
      Fail(Reason(ENOMEM, "cannot grow the receive buffer"));
      return;
    }
    if (start_ == end_ && cap_ > kShrinkAbove) {
      auto* small = static_cast<uint8_t*>(realloc(buf_, kInitialBuffer));
      if (small != nullptr) {
        buf_ = small;
        cap_ = kInitialBuffer;
      }
    }
    size_t room = cap_ - end_;
    struct iovec iov = {buf_ + end_, room};
    msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (control_len_ > 0) {
      msg.msg_control = control_.get();
      msg.msg_controllen = control_len_;
    }
    ssize_t n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) {
        reads--;
        continue;
      }
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      Fail(Reason(err, "recvmsg failed"));
      return;
    }
    std::vector<int> fds;
    if (msg.msg_controllen > 0) {
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char* p = CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
          int fd;
          memcpy(&fd, p + i * sizeof(int), sizeof fd);
          fds.push_back(fd);
        }
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) || fds.size() > max_fds_) {
      size_t got = fds.size();
      CloseAll(fds);
      Fail(Reason(EFAULT, "peer sent more fds than the " + std::to_string(max_fds_) +
                              " allowed per message (received " + std::to_string(got) +
                              (msg.msg_flags & MSG_CTRUNC ? ", truncated)" : ")")));
      return;
    }
    if (n == 0) {
      CloseAll(fds);
      Fail("EOF");
      return;
    }
    end_ += static_cast<size_t>(n);
    received_ += static_cast<uint64_t>(n);
    // The kernel ends a recvmsg right after the data that carried fds, so
    // they belong to the message holding the last byte received here.
    if (!fds.empty()) fd_groups_.push_back(FdGroup{received_, std::move(fds)});
    uint64_t delivered_before = delivered_;
    dispatching_ = true;
    bool open = DeliverBuffered();
    dispatching_ = false;
    if (!open) return;
    // What is left belongs to the message still arriving: a peer must not make
    // us hold more fds than one message may carry (fd exhaustion).
    size_t held = 0;
    for (const FdGroup& g : fd_groups_) held += g.fds.size();
    if (held > max_fds_) {
      Fail(Reason(EFAULT, "peer sent more than " + std::to_string(max_fds_) + " fds for one message"));
      return;
    }
    // A short read drained the socket; the level-triggered poll reports more.
    // Except: if it completed a message, its handler has most likely answered,
    // and a peer on the same CPU (woken by that reply) has often sent its next
    // request already. Reading again picks that up without a trip through the
    // event loop (epoll_wait and a loop turn); if nothing is there it costs one
    // recvmsg (EAGAIN). kMaxReadsPerWake still bounds the loop.
    if (static_cast<size_t>(n) < room && delivered_ == delivered_before) return;
  }
}

void Channel::CloseFdGroupsEndingBy(uint64_t end) {
  while (!fd_groups_.empty() && fd_groups_.front().end <= end) {
    CloseAll(fd_groups_.front().fds);
    fd_groups_.pop_front();
  }
}

bool Channel::DeliverBuffered() {
  while (!closed_ && reading_) {
    size_t avail = end_ - start_;
    if (discard_left_ > 0) {
      size_t drop = static_cast<size_t>(std::min<uint64_t>(avail, discard_left_));
      start_ += drop;
      pos_ += drop;
      discard_left_ -= drop;
      CloseFdGroupsEndingBy(discard_end_);  // fds of the dropped body
      if (discard_left_ > 0) return true;
      continue;
    }
    if (avail < kHeaderSize) return true;
    const uint8_t* p = buf_ + start_;
    uint32_t size;
    memcpy(&size, p + 4, sizeof size);
    uint64_t msg_start = pos_;
    if (size < kHeaderSize) {
      // Cannot re-frame the stream: hand over the header and stop reading.
      uint8_t header[kHeaderSize];
      memcpy(header, p, kHeaderSize);
      start_ += kHeaderSize;
      pos_ += kHeaderSize;
      reading_ = false;
      UpdatePoll();
      if (closed_) return false;
      Deliver(header, kHeaderSize, msg_start + kHeaderSize);
      return !closed_;
    }
    if (size > max_message_size_) {
      uint8_t header[kHeaderSize];
      memcpy(header, p, kHeaderSize);
      start_ += kHeaderSize;
      pos_ += kHeaderSize;
      discard_left_ = size - kHeaderSize;
      discard_end_ = msg_start + size;
      if (!Deliver(header, kHeaderSize, discard_end_)) return false;
      continue;
    }
    if (avail < size) return true;
    start_ += size;
    pos_ += size;
    if (!Deliver(p, size, msg_start + size)) return false;
  }
  return !closed_;
}

bool Channel::Deliver(const uint8_t* data, size_t length, uint64_t msg_end) {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  delivered_++;
  Napi::Value message;
  if (length <= rx_staging_len_) {
    memcpy(rx_staging_, data, length);
    message = Napi::Number::New(env, static_cast<double>(length));
  } else {
    message = Napi::Buffer<uint8_t>::Copy(env, data, length);
  }
  size_t count = 0;
  for (const FdGroup& g : fd_groups_) {
    if (g.end > msg_end) break;
    count += g.fds.size();
  }
  Napi::Value fds_value;
  if (count == 0) {
    fds_value = env.Undefined();  // the JS side supplies a fresh []
  } else {
    Napi::Array fds = Napi::Array::New(env, count);
    uint32_t k = 0;
    while (!fd_groups_.empty() && fd_groups_.front().end <= msg_end) {
      for (int fd : fd_groups_.front().fds) fds.Set(k++, Napi::Number::New(env, fd));
      fd_groups_.pop_front();
    }
    fds_value = fds;
  }
  try {
    on_message_.MakeCallback(recv_, {message, fds_value}, *context_);
  } catch (const Napi::Error& e) {
    ReportCallbackError(env, e);
  }
  return !closed_;
}

}  // namespace vfio_native
