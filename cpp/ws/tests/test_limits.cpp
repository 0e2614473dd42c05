#include "dclcomms/ws/limits.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

using namespace dclcomms::ws;

TEST(Limits, Address) {
  EXPECT_TRUE(is_valid_address("0x" + std::string(40, 'a')));
  EXPECT_TRUE(is_valid_address("0xAbCdEf0123456789abcdef0123456789ABCDEF01"));
  EXPECT_FALSE(is_valid_address("0X" + std::string(40, 'a')));
  EXPECT_FALSE(is_valid_address("0x" + std::string(39, 'a')));
  EXPECT_FALSE(is_valid_address("0x" + std::string(41, 'a')));
  EXPECT_FALSE(is_valid_address("0x" + std::string(39, 'a') + "g"));
  EXPECT_FALSE(is_valid_address(""));
  EXPECT_EQ(to_lower_ascii("0xABcd"), "0xabcd");
}

TEST(Limits, RoomId) {
  EXPECT_TRUE(is_valid_room_id("I1"));
  EXPECT_TRUE(is_valid_room_id("a.b_c:d@e-f"));
  EXPECT_TRUE(is_valid_room_id(std::string(128, 'x')));
  EXPECT_FALSE(is_valid_room_id(std::string(129, 'x')));
  EXPECT_FALSE(is_valid_room_id(""));
  EXPECT_FALSE(is_valid_room_id("a/b"));
  EXPECT_FALSE(is_valid_room_id("a%20b"));
  EXPECT_FALSE(is_valid_room_id("caf\xc3\xa9"));
}

TEST(Limits, QueryParam) {
  bool found = false;
  EXPECT_EQ(query_param("a=1&access_token=x.y.z&b=2", "access_token", &found), "x.y.z");
  EXPECT_TRUE(found);
  EXPECT_EQ(query_param("access_token=a%2Eb", "access_token", &found), "a.b");
  EXPECT_EQ(query_param("access_token", "access_token", &found), "");
  EXPECT_TRUE(found);
  EXPECT_EQ(query_param("x_access_token=1", "access_token", &found), "");
  EXPECT_FALSE(found);
  EXPECT_EQ(query_param("access_token=%zz%4", "access_token", &found), "%zz%4");
}

TEST(Limits, CloseReasonTruncatesOnCharacterBoundary) {
  EXPECT_EQ(close_reason("short"), "short");
  std::string euro;
  for (int i = 0; i < 50; ++i) euro += "\xe2\x82\xac";  // 150 bytes
  std::string r = close_reason(euro);
  EXPECT_EQ(r.size(), 123u);  // 41 whole characters
  EXPECT_EQ(utf8_length(r), 41u);
  EXPECT_EQ(close_reason(std::string(200, 'a')).size(), 123u);
}

TEST(Limits, SendDecisionPolicy) {
  const size_t soft = 64 * 1024, hard = 1 << 20;
  EXPECT_EQ(send_decision(0, 100, true, soft, hard), SendDecision::Send);
  EXPECT_EQ(send_decision(soft, 100, true, soft, hard), SendDecision::Send);
  EXPECT_EQ(send_decision(soft + 1, 100, true, soft, hard), SendDecision::Drop);
  // Reliable traffic is never dropped: queued until the hard limit, then closed.
  EXPECT_EQ(send_decision(soft + 1, 100, false, soft, hard), SendDecision::Send);
  EXPECT_EQ(send_decision(hard - 100, 100, false, soft, hard), SendDecision::Send);
  EXPECT_EQ(send_decision(hard - 99, 100, false, soft, hard), SendDecision::CloseSlow);
  // Unreliable above soft is dropped even when it would cross hard.
  EXPECT_EQ(send_decision(hard, 100, true, soft, hard), SendDecision::Drop);
}

TEST(Limits, RateWindow) {
  RateWindow w;
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(w.accept(1000 + i, 10));
  EXPECT_FALSE(w.accept(1500, 10));
  EXPECT_FALSE(w.accept(1999, 10));
  EXPECT_TRUE(w.accept(2000, 10));  // new window
  RateWindow back;
  EXPECT_TRUE(back.accept(5000, 1));
  EXPECT_TRUE(back.accept(4000, 1));  // clock went back: restart the window
}

TEST(Limits, TokenBucket) {
  TokenBucket b;
  // full at the first event: a burst of 3 messages, then empty
  EXPECT_TRUE(b.take(1000, 3, 0, 10));
  EXPECT_TRUE(b.take(1000, 3, 0, 10));
  EXPECT_TRUE(b.take(1000, 3, 0, 10));
  EXPECT_FALSE(b.take(1000, 3, 0, 10));
  EXPECT_FALSE(b.take(1300, 3, 0, 10));  // 0.9 of a message refilled
  EXPECT_TRUE(b.take(1334, 3, 0, 10));   // 1.002
  EXPECT_TRUE(b.take(5000, 3, 0, 10));   // refill caps at the burst (3)
  EXPECT_TRUE(b.take(5000, 3, 0, 10));
  EXPECT_TRUE(b.take(5000, 3, 0, 10));
  EXPECT_FALSE(b.take(5000, 3, 0, 10));
  EXPECT_FALSE(b.take(4000, 3, 0, 10));  // the clock went back: nothing refilled
  // bytes: a refused take spends nothing
  TokenBucket c;
  EXPECT_TRUE(c.take(0, 0, 100, 60));
  EXPECT_FALSE(c.take(0, 0, 100, 60));  // 40 left
  EXPECT_TRUE(c.take(0, 0, 100, 40));
  EXPECT_FALSE(c.take(100, 0, 100, 11));  // 10 refilled
  EXPECT_TRUE(c.take(100, 0, 100, 10));
  EXPECT_FALSE(c.take(100000, 0, 100, 101));  // never: larger than the burst
  // both limits: either one refuses
  TokenBucket d;
  EXPECT_TRUE(d.take(0, 1, 1000, 10));
  EXPECT_FALSE(d.take(0, 1, 1000, 10));  // out of messages, bytes to spare
  TokenBucket e;
  EXPECT_FALSE(e.take(0, 100, 10, 11));  // out of bytes, messages to spare
  EXPECT_TRUE(e.take(0, 100, 10, 10));
}

TEST(Limits, SlidingRateWindow) {
  SlidingRateWindow w;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(w.accept(1000 + 400 * i, 3));  // 1000 1400 1800
  EXPECT_FALSE(w.accept(1999, 3));                                       // 4 within 1 s
  EXPECT_TRUE(w.accept(2000, 3));                                        // 1000 left the window
  // Unlike RateWindow, a burst straddling a fixed-window boundary is caught.
  SlidingRateWindow edge;
  EXPECT_TRUE(edge.accept(0, 2));
  EXPECT_TRUE(edge.accept(990, 2));
  EXPECT_TRUE(edge.accept(1000, 2));
  EXPECT_FALSE(edge.accept(1010, 2));
  SlidingRateWindow back;
  EXPECT_TRUE(back.accept(5000, 1));
  EXPECT_TRUE(back.accept(4000, 1));  // clock went back: restart the window
  EXPECT_FALSE(back.accept(4000, 1));
  SlidingRateWindow none;
  EXPECT_FALSE(none.accept(0, 0));
}

TEST(Limits, SlidingRateWindowMatchesANaiveLog) {
  // The ring grows and wraps around; a plain list of timestamps is the oracle.
  for (int max : {1, 3, 5, 50}) {
    SlidingRateWindow w;
    std::vector<int64_t> log;
    int64_t t = 0;
    uint32_t x = 12345;
    int rejected = 0;
    for (int i = 0; i < 5000; ++i) {
      x = x * 1103515245u + 12345u;
      t += (x >> 16) % (1500 / max + 5);  // about 1.3 * max per second on average
      size_t recent = 0;
      for (int64_t v : log) recent += t - v < 1000 ? 1 : 0;
      bool expected = recent < static_cast<size_t>(max);
      ASSERT_EQ(w.accept(t, max), expected) << "max " << max << " step " << i;
      if (expected) {
        log.push_back(t);
      } else {
        ++rejected;
      }
    }
    EXPECT_GT(rejected, 100) << max;
    EXPECT_LT(rejected, 4000) << max;
  }
}

TEST(Limits, AliasesAreUniqueAndIncreasing) {
  uint32_t prev = next_alias();
  EXPECT_GE(prev, 1u);
  for (int i = 0; i < 1000; ++i) {
    uint32_t a = next_alias();
    EXPECT_GT(a, prev);
    prev = a;
  }
}

TEST(Limits, FrameHeader) {
  EXPECT_EQ(binary_frame_header(0), std::string("\x82\x00", 2));
  EXPECT_EQ(binary_frame_header(125), std::string("\x82\x7d", 2));
  EXPECT_EQ(binary_frame_header(126), std::string("\x82\x7e\x00\x7e", 4));
  EXPECT_EQ(binary_frame_header(65535), std::string("\x82\x7e\xff\xff", 4));
  EXPECT_EQ(binary_frame_header(65536),
            std::string("\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10));
  EXPECT_EQ(frame_header(0x1, 5), std::string("\x81\x05", 2));
  EXPECT_EQ(frame_header(0x1, 32768), std::string("\x81\x7e\x80\x00", 4));
  EXPECT_EQ(frame_header(0x2, 300), binary_frame_header(300));
}
