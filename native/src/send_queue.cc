#include "send_queue.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vfio_native {

namespace {
constexpr size_t kMaxFdsPerSend = 253;  // SCM_MAX_FD
constexpr size_t kMaxIov = 64;
}  // namespace

ssize_t SendWithFds(int sock, const struct iovec* iov, size_t iovcnt, const int* fds, size_t nfds) {
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerSend * sizeof(int))];
  msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = const_cast<struct iovec*>(iov);
  msg.msg_iovlen = iovcnt;
  if (nfds > 0) {
    if (nfds > kMaxFdsPerSend) return -EINVAL;
    memset(control, 0, CMSG_SPACE(nfds * sizeof(int)));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
  }
  for (;;) {
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

void SendQueue::Push(const uint8_t* data, size_t length, std::vector<int> fds) {
  Entry e;
  e.data.reset(new uint8_t[length]);
  memcpy(e.data.get(), data, length);
  e.length = length;
  e.fds = std::move(fds);
  pending_ += length;
  entries_.push_back(std::move(e));
}

int SendQueue::Flush(int sock) {
  while (!entries_.empty()) {
    struct iovec iov[kMaxIov];
    size_t iovcnt = 0;
    Entry& first = entries_.front();
    bool with_fds = first.offset == 0 && !first.fds.empty();
    iov[iovcnt++] = {first.data.get() + first.offset, first.length - first.offset};
    if (!with_fds) {
      for (size_t i = 1; i < entries_.size() && iovcnt < kMaxIov; i++) {
        Entry& e = entries_[i];
        if (!e.fds.empty()) break;  // its fds must start a sendmsg of their own
        iov[iovcnt++] = {e.data.get(), e.length};
      }
    }
    ssize_t n = SendWithFds(sock, iov, iovcnt, with_fds ? first.fds.data() : nullptr, with_fds ? first.fds.size() : 0);
    if (n < 0) return (n == -EAGAIN || n == -EWOULDBLOCK) ? EAGAIN : static_cast<int>(-n);
    if (with_fds && n > 0) {
      for (int fd : first.fds) close(fd);
      first.fds.clear();
    }
    size_t left = static_cast<size_t>(n);
    pending_ -= left;
    while (left > 0) {
      Entry& e = entries_.front();
      size_t take = e.length - e.offset;
      if (left < take) {
        e.offset += left;
        break;
      }
      left -= take;
      entries_.pop_front();
    }
    if (n == 0) return EAGAIN;
  }
  return 0;
}

void SendQueue::Clear() {
  for (Entry& e : entries_) {
    for (int fd : e.fds) close(fd);
  }
  entries_.clear();
  pending_ = 0;
}

}  // namespace vfio_native
