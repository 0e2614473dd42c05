// The room sessions' frame reader (fast_read.hpp): which frames it takes
// itself, which it leaves to websocketpp (everything websocketpp rejects or
// handles in another way), and the unmasked payloads.

#include "fast_read.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

using namespace dclcomms::ws;

namespace {

constexpr size_t kCap = 16384;  // websocketpp's read buffer
constexpr size_t kMax = 4096;   // a connection's message limit

// A client frame as RFC 6455 5.2 lays it out; len_form forces the length's
// encoding (7, 16 or 64 bits; 0: the minimal one).
std::vector<uint8_t> frame(const std::string& payload, uint8_t b0 = 0x82, bool masked = true,
                           int len_form = 0, uint32_t key = 0x11223344u) {
  std::vector<uint8_t> out{b0};
  const uint64_t n = payload.size();
  if (len_form == 0) len_form = n < 126 ? 7 : n <= 0xFFFF ? 16 : 64;
  const uint8_t mask_bit = masked ? 0x80 : 0;
  if (len_form == 7) {
    out.push_back(mask_bit | static_cast<uint8_t>(n));
  } else if (len_form == 16) {
    out.push_back(mask_bit | 126);
    out.push_back(static_cast<uint8_t>(n >> 8));
    out.push_back(static_cast<uint8_t>(n));
  } else {
    out.push_back(mask_bit | 127);
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  }
  const uint8_t k[4] = {static_cast<uint8_t>(key >> 24), static_cast<uint8_t>(key >> 16),
                        static_cast<uint8_t>(key >> 8), static_cast<uint8_t>(key)};
  if (masked) out.insert(out.end(), k, k + 4);
  for (size_t i = 0; i < payload.size(); ++i) {
    out.push_back(static_cast<uint8_t>(payload[i]) ^ (masked ? k[i % 4] : 0));
  }
  return out;
}

PlainFrame parse(const std::vector<uint8_t>& f, size_t n = SIZE_MAX) {
  return parse_plain_frame(f.data(), std::min(n, f.size()), kMax, kCap);
}

}  // namespace

TEST(FastRead, WholeBinaryFramesOfEveryLengthFormAreTakenAndUnmasked) {
  std::mt19937 rng(7);
  for (size_t n : {0, 1, 7, 8, 9, 100, 125, 126, 127, 1000, 4096}) {
    std::string payload(n, '\0');
    for (char& c : payload) c = static_cast<char>(rng());
    auto f = frame(payload, 0x82, true, 0, static_cast<uint32_t>(rng()));
    PlainFrame p = parse(f);
    ASSERT_EQ(p.kind, PlainFrame::Binary) << n;
    EXPECT_EQ(p.header + p.payload, f.size());
    EXPECT_EQ(unmask_payload(f.data(), p), payload) << n;
  }
}

TEST(FastRead, PongsAreTaken) {
  auto f = frame("abc", 0x8A);
  EXPECT_EQ(parse(f).kind, PlainFrame::Pong);
  EXPECT_EQ(parse(frame("", 0x8A)).kind, PlainFrame::Pong);
}

TEST(FastRead, PartsOfAPlainFrameAreIncomplete) {
  auto f = frame(std::string(300, 'x'));  // 16-bit length: 8 header bytes
  for (size_t n = 0; n < f.size(); ++n) EXPECT_EQ(parse(f, n).kind, PlainFrame::Incomplete) << n;
  EXPECT_EQ(parse(f).kind, PlainFrame::Binary);
}

TEST(FastRead, EverythingElseIsLeftToWebsocketpp) {
  // Text, ping, close, continuation, a fragment's first frame, reserved
  // bits, unknown opcodes.
  for (uint8_t b0 : {0x81, 0x89, 0x88, 0x80, 0x02, 0x01, 0x0A, 0xC2, 0xA2, 0x92, 0x83, 0x8B}) {
    EXPECT_EQ(parse(frame("abc", b0)).kind, PlainFrame::Other) << int(b0);
  }
  // Unmasked client frames (websocketpp closes 1002).
  EXPECT_EQ(parse(frame("abc", 0x82, false)).kind, PlainFrame::Other);
  EXPECT_EQ(parse(frame("abc", 0x8A, false)).kind, PlainFrame::Other);
  // Lengths not minimally encoded.
  EXPECT_EQ(parse(frame("abc", 0x82, true, 16)).kind, PlainFrame::Other);
  EXPECT_EQ(parse(frame(std::string(200, 'x'), 0x82, true, 64)).kind, PlainFrame::Other);
  // A pong over 125 bytes.
  EXPECT_EQ(parse(frame(std::string(126, 'x'), 0x8A)).kind, PlainFrame::Other);
  // Over the connection's message limit (1009), even before its payload came.
  auto big = frame(std::string(kMax + 1, 'x'));
  EXPECT_EQ(parse(big).kind, PlainFrame::Other);
  EXPECT_EQ(parse(big, 4).kind, PlainFrame::Other);
  EXPECT_EQ(parse(frame(std::string(kMax, 'x'))).kind, PlainFrame::Binary);
  // A 64-bit length with the top bit set.
  std::vector<uint8_t> huge{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
  EXPECT_EQ(parse(huge).kind, PlainFrame::Other);
}

TEST(FastRead, AFrameThatNeverFitsTheReadBufferIsLeftToWebsocketpp) {
  auto f = frame(std::string(kCap, 'x'));
  EXPECT_EQ(parse_plain_frame(f.data(), 10, SIZE_MAX, kCap).kind, PlainFrame::Other);
  auto g = frame(std::string(kCap - 8, 'x'));  // 16-bit length: exactly the buffer
  EXPECT_EQ(parse_plain_frame(g.data(), g.size(), SIZE_MAX, kCap).kind, PlainFrame::Binary);
  EXPECT_EQ(parse_plain_frame(g.data(), 10, SIZE_MAX, kCap).kind, PlainFrame::Incomplete);
}
