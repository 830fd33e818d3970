// Outgoing bytes the kernel has not taken yet, in message order. A message's
// fds (dup'ed: the caller's copies are borrowed) ride on the sendmsg that
// carries its first byte, and that sendmsg carries no bytes of any other
// message, so the receiver can attach them to the right message.
#pragma once
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

namespace vfio_native {

class SendQueue {
 public:
  ~SendQueue() { Clear(); }
  bool empty() const { return entries_.empty(); }
  size_t pending_bytes() const { return pending_; }
  /** Copies data; takes ownership of fds (closed when sent or cleared). */
  void Push(const uint8_t* data, size_t length, std::vector<int> fds);
  /**
   * Writes as much as the socket takes. Returns 0 when the queue is empty,
   * EAGAIN when the socket is full, or another errno on a fatal error.
   */
  int Flush(int sock);
  /** Drops everything, closing queued fds. */
  void Clear();

 private:
  struct Entry {
    std::unique_ptr<uint8_t[]> data;
    size_t length = 0;
    size_t offset = 0;
    std::vector<int> fds;  // owned; sent with the first byte
  };
  std::deque<Entry> entries_;
  size_t pending_ = 0;
};

/** One sendmsg(MSG_NOSIGNAL|MSG_DONTWAIT) with fds as SCM_RIGHTS; retries EINTR. Returns bytes or -errno. */
ssize_t SendWithFds(int sock, const struct iovec* iov, size_t iovcnt, const int* fds, size_t nfds);

}  // namespace vfio_native
