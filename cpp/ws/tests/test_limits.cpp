#include "dclcomms/ws/limits.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

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
}
