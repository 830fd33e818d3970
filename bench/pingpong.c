/*
 * Ping-pong benchmark driver for vfio-user-ts (compiled by bench/pingpong.ts
 * with the system cc into a temp dir).
 *
 *   pingpong echo   <socket>                    raw baseline server: answers
 *       every message with a reply of the same size a vfio-user server would
 *       send (VERSION: echo; REGION_READ: 16-byte echo + count bytes), nothing else.
 *   pingpong client <socket> <iters> <warmup>   negotiates VERSION, then sends
 *       <warmup> + <iters> REGION_READ(region 7, offset 0, count 4) one at a
 *       time and prints {"p50_ns":..,"p99_ns":..,"ops_per_s":..} on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct hdr {
  uint16_t id, cmd;
  uint32_t size, flags, error;
};

static void die(const char* what) {
  perror(what);
  exit(1);
}

static void read_full(int fd, void* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char*)buf + got, n - got);
    if (r == 0) {
      fprintf(stderr, "pingpong: EOF\n");
      exit(2);
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    got += (size_t)r;
  }
}

static void write_full(int fd, const void* buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t w = write(fd, (const char*)buf + put, n - put);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    put += (size_t)w;
  }
}

static struct sockaddr_un addr_of(const char* path) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  strncpy(a.sun_path, path, sizeof a.sun_path - 1);
  return a;
}

static __attribute__((noreturn)) void echo(const char* path) {
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = addr_of(path);
  unlink(path);
  if (l < 0 || bind(l, (struct sockaddr*)&a, sizeof a) < 0 || listen(l, 4) < 0) die("listen");
  printf("ready\n");
  fflush(stdout);
  static char buf[1 << 16];
  for (;;) {
    int c = accept(l, NULL, NULL);
    if (c < 0) die("accept");
    for (;;) {
      struct hdr h;
      ssize_t r = recv(c, &h, sizeof h, MSG_WAITALL);
      if (r != (ssize_t)sizeof h) break;
      size_t body = h.size - sizeof h;
      if (h.size < sizeof h || body > sizeof buf) break;
      read_full(c, buf, body);
      size_t out = body;
      if (h.cmd == 9) out = 16 + *(uint32_t*)(buf + 12); /* REGION_READ: echo + data */
      memset(buf + body, 0, out > body ? out - body : 0);
      h.flags = 1;
      h.size = (uint32_t)(sizeof h + out);
      struct iovec iov[2] = {{&h, sizeof h}, {buf, out}};
      struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
      if (sendmsg(c, &m, 0) < 0) break;
    }
    close(c);
  }
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

static int client(const char* path, long iters, long warmup) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = addr_of(path);
  if (s < 0 || connect(s, (struct sockaddr*)&a, sizeof a) < 0) die("connect");
  static const char caps[] =
      "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,\"pgsizes\":4096,"
      "\"max_dma_maps\":65535,\"write_multiple\":true,\"migration\":{\"pgsize\":4096,\"max_bitmap_size\":268435456}}}";
  char msg[512];
  struct hdr h = {0, 1, (uint32_t)(16 + 4 + sizeof caps), 0, 0};
  memcpy(msg, &h, 16);
  memset(msg + 16, 0, 4);
  memcpy(msg + 20, caps, sizeof caps);
  write_full(s, msg, h.size);
  read_full(s, &h, 16);
  if (h.flags & 0x20) {
    fprintf(stderr, "VERSION refused: errno %u\n", h.error);
    return 1;
  }
  if (h.size < 16 || h.size > sizeof msg) {
    fprintf(stderr, "bad VERSION reply\n");
    return 1;
  }
  read_full(s, msg, h.size - 16);

  uint64_t* lat = malloc(sizeof(uint64_t) * (size_t)iters);
  if (!lat) die("malloc");
  char req[32], rep[36];
  uint64_t start = 0;
  for (long i = 0; i < warmup + iters; i++) {
    struct hdr q = {(uint16_t)(i + 1), 9, 32, 0, 0};
    memcpy(req, &q, 16);
    uint64_t off = 0;
    uint32_t region = 7, count = 4;
    memcpy(req + 16, &off, 8);
    memcpy(req + 24, &region, 4);
    memcpy(req + 28, &count, 4);
    if (i == warmup) start = now_ns();
    uint64_t t0 = now_ns();
    write_full(s, req, sizeof req);
    read_full(s, rep, sizeof rep);
    uint64_t t1 = now_ns();
    struct hdr r;
    memcpy(&r, rep, 16);
    if (r.id != q.id || r.size != 36 || (r.flags & 0x20)) {
      fprintf(stderr, "bad reply id %u size %u flags %x error %u\n", r.id, r.size, r.flags, r.error);
      return 1;
    }
    if (i >= warmup) lat[i - warmup] = t1 - t0;
  }
  uint64_t total = now_ns() - start;
  qsort(lat, (size_t)iters, sizeof lat[0], cmp_u64);
  printf("{\"p50_ns\":%llu,\"p99_ns\":%llu,\"ops_per_s\":%.0f}\n", (unsigned long long)lat[iters / 2],
         (unsigned long long)lat[(iters * 99) / 100], (double)iters * 1e9 / (double)total);
  close(s);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 3 && strcmp(argv[1], "echo") == 0) echo(argv[2]);
  if (argc >= 5 && strcmp(argv[1], "client") == 0) return client(argv[2], atol(argv[3]), atol(argv[4]));
  fprintf(stderr, "usage: pingpong echo <socket> | pingpong client <socket> <iters> <warmup>\n");
  return 64;
}
