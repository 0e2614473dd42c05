// write_frames (wire_frame.hpp) on a real non-blocking socket pair: the bytes
// a reader gets, one syscall for small frames copied together, the gather for
// big ones, and where a write into a full socket stops.

#include "wire_frame.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

using namespace dclcomms::ws;

namespace {

struct Pair {
  int w = -1, r = -1;
  explicit Pair(int sndbuf = 0) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    w = sv[0];
    r = sv[1];
    ::fcntl(w, F_SETFL, ::fcntl(w, F_GETFL) | O_NONBLOCK);
    ::fcntl(r, F_SETFL, ::fcntl(r, F_GETFL) | O_NONBLOCK);
    if (sndbuf > 0) ::setsockopt(w, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  }
  ~Pair() {
    if (w >= 0) ::close(w);
    if (r >= 0) ::close(r);
  }
  std::string drain() {
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(r, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
};

std::string wire_of(const std::vector<std::shared_ptr<const WireFrame>>& frames, size_t from = 0) {
  std::string out;
  for (size_t i = from; i < frames.size(); ++i) frames[i]->append_wire(out, 0);
  return out;
}

std::vector<const WireFrame*> ptrs(const std::vector<std::shared_ptr<const WireFrame>>& frames) {
  std::vector<const WireFrame*> out;
  for (const auto& f : frames) out.push_back(f.get());
  return out;
}

std::vector<std::shared_ptr<const WireFrame>> frames_of(size_t n, size_t size, bool tail = false) {
  std::vector<std::shared_ptr<const WireFrame>> out;
  auto shared = std::make_shared<const std::string>(37, 't');
  for (size_t i = 0; i < n; ++i) {
    std::string payload(size, static_cast<char>('a' + i % 26));
    out.push_back(
        std::make_shared<const WireFrame>(std::move(payload), 2, tail ? shared : nullptr));
  }
  return out;
}

}  // namespace

TEST(WireFrame, SmallFramesGoOutCopiedInOneSend) {
  Pair p;
  auto frames = frames_of(19, 100);  // a 10 x 20 room round: ~2 KB
  auto v = ptrs(frames);
  WriteEnd e = write_frames(p.w, v.data(), v.size());
  EXPECT_EQ(e.frame, v.size());
  EXPECT_FALSE(e.full);
  EXPECT_FALSE(e.broken);
  EXPECT_EQ(e.syscalls, 1u);
  EXPECT_EQ(p.drain(), wire_of(frames));
}

TEST(WireFrame, BigFramesAndTailsAreGathered) {
  Pair p;
  // Over kCopyWriteMax in all: sendmsg with the parts (header, payload, tail).
  auto frames = frames_of(4, 5000, true);
  auto v = ptrs(frames);
  WriteEnd e = write_frames(p.w, v.data(), v.size());
  EXPECT_EQ(e.frame, v.size());
  EXPECT_EQ(e.syscalls, 1u);
  EXPECT_EQ(p.drain(), wire_of(frames));
  // Small frames with a shared tail: copied, tail included.
  auto small = frames_of(3, 20, true);
  auto s = ptrs(small);
  e = write_frames(p.w, s.data(), s.size());
  EXPECT_EQ(e.frame, s.size());
  EXPECT_EQ(e.syscalls, 1u);
  EXPECT_EQ(p.drain(), wire_of(small));
  // One frame (and an empty list) writes as before.
  e = write_frames(p.w, s.data(), 1);
  EXPECT_EQ(e.frame, 1u);
  EXPECT_EQ(p.drain(), std::string(small[0]->header()) + std::string(small[0]->payload()) +
                           std::string(small[0]->tail()));
  e = write_frames(p.w, s.data(), 0);
  EXPECT_EQ(e.frame, 0u);
  EXPECT_EQ(e.syscalls, 0u);
}

// A full send buffer: the write stops at a frame and offset, the reader has
// exactly the bytes before that point, and the rest follows from there.
TEST(WireFrame, FullSocketStopsWhereTheBytesEnd) {
  for (size_t size : {100u, 700u, 6000u}) {  // copied (<= 16 KiB per call) and gathered
    SCOPED_TRACE(size);
    Pair p(4096);
    auto frames = frames_of(size < 1000 ? 150 : 40, size);
    auto v = ptrs(frames);
    const std::string all = wire_of(frames);
    std::string got;
    size_t from = 0, skip = 0;
    int full = 0;
    for (int round = 0; round < 10000 && from < v.size(); ++round) {
      // Write what is left, as the server would after handing the rest over.
      std::string first;
      v[from]->append_wire(first, skip);
      WriteEnd e;
      if (skip == 0) {
        e = write_frames(p.w, v.data() + from, v.size() - from);
      } else {  // the partial first frame goes out on its own
        ssize_t r = ::send(p.w, first.data(), first.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
          ASSERT_EQ(errno, EAGAIN);
          e.frame = 0;
          e.skip = 0;
          e.full = true;
        } else if (static_cast<size_t>(r) < first.size()) {
          e.frame = 0;
          e.skip = static_cast<size_t>(r);
          e.full = true;
        } else {
          e.frame = 1;
        }
        if (e.frame == 0) e.skip += skip;
      }
      ASSERT_FALSE(e.broken);
      got += p.drain();
      // What the reader holds ends exactly where write_frames says it stopped.
      size_t end = 0;
      for (size_t i = 0; i < from + e.frame; ++i) end += v[i]->wire_size();
      if (e.frame < v.size() - from && e.full) end += e.skip;
      if (e.full) {
        ++full;
        ASSERT_EQ(got.size(), end);
        skip = e.skip;
      } else {
        if (skip == 0) {
          ASSERT_EQ(e.frame, v.size() - from);
        }
        ASSERT_EQ(got.size(), end);
        skip = 0;
      }
      from += e.frame;
    }
    EXPECT_EQ(got, all);
    EXPECT_GT(full, 0);  // the small buffer did fill
  }
}

TEST(WireFrame, BrokenConnectionIsReported) {
  Pair p;
  ::close(p.r);
  p.r = -1;
  auto frames = frames_of(5, 100);
  auto v = ptrs(frames);
  WriteEnd e = write_frames(p.w, v.data(), v.size());  // EPIPE, no SIGPIPE
  EXPECT_TRUE(e.broken);
  EXPECT_FALSE(e.full);
  auto big = frames_of(1, 20000);
  auto b = ptrs(big);
  e = write_frames(p.w, b.data(), b.size());
  EXPECT_TRUE(e.broken);
}
