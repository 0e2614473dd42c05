// The non-blocking write of a connection's frames (wire_frame.hpp).

#include "wire_frame.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace dclcomms::ws {

namespace {

// Maps `written` bytes from frame `from` on to where the write stopped.
WriteEnd stopped_at(const WireFrame* const* frames, size_t from, size_t written) {
  WriteEnd e;
  e.frame = from;
  while (written >= frames[e.frame]->wire_size()) {
    written -= frames[e.frame]->wire_size();
    ++e.frame;
  }
  e.skip = written;
  e.full = true;
  return e;
}

// Ends `e` where a send of `bytes` (frames from `from` on) stopped, given its result `r`
// (errno set when negative): an error, or a short write. False when all `bytes` went out.
bool send_stopped(WriteEnd& e, const WireFrame* const* frames, size_t from, ssize_t r,
                  size_t bytes) {
  if (r < 0) {
    e.frame = from;
    e.skip = 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      e.full = true;
    } else {
      e.broken = true;
    }
    return true;
  }
  if (static_cast<size_t>(r) < bytes) {
    size_t syscalls = e.syscalls;
    e = stopped_at(frames, from, static_cast<size_t>(r));
    e.syscalls = syscalls;
    return true;
  }
  return false;
}

WriteEnd write_copied(int fd, const WireFrame* const* frames, size_t n, size_t total) {
  WriteEnd e;
  thread_local std::vector<char> buf;
  if (buf.size() < total) buf.resize(kCopyWriteMax);
  char* p = buf.data();
  for (size_t j = 0; j < n; ++j) {
    for (std::string_view part : frames[j]->parts()) {
      if (part.empty()) continue;
      std::memcpy(p, part.data(), part.size());
      p += part.size();
    }
  }
  ssize_t r;
  do {
    r = ::send(fd, buf.data(), total, MSG_NOSIGNAL | MSG_DONTWAIT);
    ++e.syscalls;
  } while (r < 0 && errno == EINTR);
  if (send_stopped(e, frames, 0, r, total)) return e;
  e.frame = n;
  return e;
}

}  // namespace

WriteEnd write_frames(int fd, const WireFrame* const* frames, size_t n) {
  WriteEnd e;
  if (n == 0) return e;
  if (n > 1) {
    size_t total = 0;
    for (size_t j = 0; j < n && total <= kCopyWriteMax; ++j) total += frames[j]->wire_size();
    if (total <= kCopyWriteMax) return write_copied(fd, frames, n, total);
  }
  constexpr size_t kIov = 128;  // up to three per frame: header, payload, tail
  iovec iov[kIov];
  size_t i = 0;  // the first frame not yet written
  while (i < n) {
    size_t m = 0, k = 0, bytes = 0;
    for (; k + WireFrame::kParts <= kIov && i + m < n; ++m) {
      const WireFrame& w = *frames[i + m];
      for (std::string_view part : w.parts()) {
        if (part.empty()) continue;
        iov[k].iov_base = const_cast<char*>(part.data());
        iov[k].iov_len = part.size();
        ++k;
      }
      bytes += w.wire_size();
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = k;
    ssize_t r = ::sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    ++e.syscalls;
    if (r < 0 && errno == EINTR) continue;
    if (send_stopped(e, frames, i, r, bytes)) return e;
    i += m;
  }
  e.frame = n;
  return e;
}

}  // namespace dclcomms::ws
