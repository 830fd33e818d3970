// Channel: a connected vfio-user stream socket polled on the env's libuv loop.
// Receives with recvmsg(MSG_CMSG_CLOEXEC), frames messages natively (16-byte
// header, u32 size at byte 4) and delivers each message plus its fds to JS via
// MakeCallback; sends with sendmsg(SCM_RIGHTS), queueing what the socket does
// not take.
//
// Staging buffers (their JS half is native/staged-channel.ts): a message that
// fits the `receiveStaging` ArrayBuffer is copied there and onMessage gets its
// length (a number); the JS side copies it out before anything else runs. That
// saves the native Buffer creation (ArrayBuffer + SetPrototype) per message,
// the costliest part of a small round trip. A larger message arrives as a
// fresh Buffer. fds are `undefined` if none came. Likewise `sendStaging`:
// sendStaged(length, fds) sends its first `length` bytes (the JS side copied
// the message there), which spares V8 materializing the ArrayBuffer of a small
// on-heap Uint8Array (and the typed-array checks). send() and sendStaged()
// return the bytes still queued (0 when the kernel took everything).
#pragma once
#include <napi.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "poll_handle.h"
#include "send_queue.h"

namespace vfio_native {

struct AddonData;

class Channel : public Napi::ObjectWrap<Channel> {
 public:
  static Napi::Function Define(Napi::Env env);
  /** openChannel(fd, {maxMessageSize, maxFds, receiveStaging, sendStaging}, onMessage, onClose) */
  static Napi::Value Open(const Napi::CallbackInfo& info);
  explicit Channel(const Napi::CallbackInfo& info);
  ~Channel() override;

 private:
  /** fds that one recvmsg returned, with the stream offset just past its last byte. */
  struct FdGroup {
    uint64_t end;
    std::vector<int> fds;
  };

  // JS-facing members.
  Napi::Value Send(const Napi::CallbackInfo& info);
  /** sendStaged(length, fds?): send the first `length` bytes of the send staging buffer. */
  Napi::Value SendStaged(const Napi::CallbackInfo& info);
  /** send() after its message argument: fds are info[1]; returns the bytes still queued. */
  Napi::Value SendBytes(const Napi::CallbackInfo& info, Bytes bytes);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value PendingBytes(const Napi::CallbackInfo& info);
  Napi::Value Fd(const Napi::CallbackInfo& info);
  Napi::Value Closed(const Napi::CallbackInfo& info);

  static void OnPoll(void* self, int status, int events);
  static void OnEnvCleanup(void* self);
  void ReadAvailable();
  /** Frames and delivers what the buffer holds; false if the channel got closed meanwhile. */
  bool DeliverBuffered();
  /** Delivers one message with the fds of every group ending at or before msg_end. */
  bool Deliver(const uint8_t* data, size_t length, uint64_t msg_end);
  /** Makes room for at least `need` bytes from start_ (and some free space at the end). */
  bool Reserve(size_t need);
  void CloseFdGroupsEndingBy(uint64_t end);
  void WriteQueued();
  void UpdatePoll();
  /** Closes everything, then calls onClose(reason) (once). */
  void Fail(const std::string& reason);
  /** Closes socket, poll, queued and undelivered fds; no JS calls. */
  void ReleaseResources();
  /** ReleaseResources + drop JS references (no onClose). */
  void Shutdown();

  int fd_ = -1;
  bool closed_ = false;
  bool reading_ = true;  // false after a header with size < 16
  bool dispatching_ = false;
  size_t max_message_size_ = 0;
  size_t max_fds_ = 0;
  PollHandle poll_;
  AddonData* addon_ = nullptr;
  bool cleanup_hook_ = false;
  bool referenced_ = false;  // Ref() held while open

  // Receive buffer: bytes [start_, end_) of buf_ are received, not yet framed;
  // buf_[start_] is stream offset pos_.
  uint8_t* buf_ = nullptr;
  size_t cap_ = 0;
  size_t start_ = 0;
  size_t end_ = 0;
  uint64_t pos_ = 0;
  uint64_t received_ = 0;      // stream offset just past the last received byte
  uint64_t delivered_ = 0;     // messages delivered so far
  uint64_t discard_left_ = 0;  // body bytes of an oversize message still to drop
  uint64_t discard_end_ = 0;   // stream offset where that message ends
  std::deque<FdGroup> fd_groups_;
  std::unique_ptr<uint64_t[]> control_;  // recvmsg control buffer (8-byte aligned)
  size_t control_len_ = 0;

  SendQueue queue_;
  Napi::FunctionReference on_message_;
  Napi::FunctionReference on_close_;
  std::unique_ptr<Napi::AsyncContext> context_;
  // Receive staging buffer (see the top of this file): a JS ArrayBuffer kept
  // alive by rx_staging_ref_; its backing store never moves.
  Napi::Reference<Napi::ArrayBuffer> rx_staging_ref_;
  uint8_t* rx_staging_ = nullptr;
  size_t rx_staging_len_ = 0;
  // Send staging buffer, likewise.
  Napi::Reference<Napi::ArrayBuffer> tx_staging_ref_;
  uint8_t* tx_staging_ = nullptr;
  size_t tx_staging_len_ = 0;
  Napi::Object recv_;  // valid during OnPoll only
};

}  // namespace vfio_native
