// The pure parts of the C++ NATS path: addresses, subjects, the native
// HeartbeatBatch codec (byte-compatible with the Python encoder, which
// tests/test_nats_c.py checks against the real server path).

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "dclcomms/codec/fast.hpp"

#include "dclcomms/error.hpp"
#include "dclcomms/nats/client.hpp"

namespace n = dclcomms::nats;

namespace {

const std::string kA = "0x0123456789abcdef0123456789abcdef01234567";
const std::string kB = "0xfedcba9876543210fedcba9876543210fedcba98";

}  // namespace

TEST(NatsSchemes, Parse) {
  EXPECT_EQ(n::parse_scheme("native"), n::Scheme::Native);
  EXPECT_EQ(n::parse_scheme("workers"), n::Scheme::Workers);
  EXPECT_EQ(n::parse_scheme("v3"), n::Scheme::V3);
  try {
    n::parse_scheme("v4");
    FAIL() << "accepted v4";
  } catch (const dclcomms::Error& e) {
    EXPECT_EQ(e.code(), "invalid_parameter");
  }
}

TEST(NatsAddresses, ValidateAndConvert) {
  EXPECT_TRUE(n::valid_address(kA));
  EXPECT_FALSE(n::valid_address("0x0123456789ABCDEF0123456789abcdef01234567"));  // upper case
  EXPECT_FALSE(n::valid_address(kA.substr(0, 41)));
  EXPECT_FALSE(n::valid_address("1x" + kA.substr(2)));
  EXPECT_FALSE(n::valid_address("0x*123456789abcdef0123456789abcdef01234567"));
  char raw[20];
  n::address_to_raw(kB, raw);
  EXPECT_EQ(static_cast<unsigned char>(raw[0]), 0xfe);
  EXPECT_EQ(static_cast<unsigned char>(raw[19]), 0x98);
  std::string back = "x";
  n::raw_to_address(raw, back);
  EXPECT_EQ(back, "x" + kB);
}

TEST(NatsSubjects, HeartbeatSubjects) {
  EXPECT_EQ(n::heartbeat_subject(n::Scheme::Workers, kA), "peer." + kA + ".heartbeat");
  EXPECT_EQ(n::heartbeat_subject(n::Scheme::V3, kA), "client-proto.peer." + kA + ".heartbeat");
}

TEST(NatsSubjects, Classify) {
  using K = n::Classified::Kind;
  auto kind = [](n::Scheme s, const std::string& subject) { return n::classify(s, subject).kind; };
  EXPECT_EQ(kind(n::Scheme::Workers, "peer." + kA + ".heartbeat"), K::Heartbeat);
  EXPECT_EQ(n::classify(n::Scheme::Workers, "peer." + kA + ".heartbeat").address, kA);
  EXPECT_EQ(kind(n::Scheme::V3, "peer." + kA + ".heartbeat"), K::Ignore);
  EXPECT_EQ(kind(n::Scheme::V3, "client-proto.peer." + kA + ".heartbeat"), K::Heartbeat);
  EXPECT_EQ(kind(n::Scheme::Workers, "client-proto.peer." + kA + ".heartbeat"), K::Ignore);
  EXPECT_EQ(kind(n::Scheme::Native, "peer." + kA + ".heartbeat"), K::Ignore);
  EXPECT_EQ(kind(n::Scheme::Native, "dclcomms.v1.heartbeats"), K::HeartbeatBatch);
  EXPECT_EQ(kind(n::Scheme::Workers, "dclcomms.v1.heartbeats"), K::Ignore);
  for (auto s : {n::Scheme::Native, n::Scheme::Workers, n::Scheme::V3}) {
    EXPECT_EQ(kind(s, "peer." + kA + ".connect"), K::Connect);
    EXPECT_EQ(kind(s, "peer." + kA + ".disconnect"), K::Disconnect);
    EXPECT_EQ(kind(s, "peer.0xABC.disconnect"), K::BadAddress);
    EXPECT_EQ(kind(s, "peer." + kA + ".other"), K::Ignore);
    EXPECT_EQ(kind(s, "peer." + kA), K::Ignore);
    EXPECT_EQ(kind(s, "client-proto.peer." + kA + ".connect"), K::Ignore);
  }
  EXPECT_EQ(kind(n::Scheme::Workers, "peer.0x12.heartbeat"), K::BadAddress);
}

TEST(NatsHeartbeatBatch, RoundTrip) {
  n::HeartbeatRows rows;
  char raw[20];
  for (const auto& a : {kA, kB, kA}) {
    n::address_to_raw(a, raw);
    rows.raw_addresses.append(raw, 20);
  }
  rows.xyz = {1.5f, 0.f, -2.f, 3.f, 4.f, 5.f, -0.f, 7.f, 8.f};
  rows.rooms = {{0, "I1"}, {2, ""}};
  const std::string bytes = n::encode_heartbeat_batch(rows);
  const n::HeartbeatRows back = n::decode_heartbeat_batch(bytes);
  EXPECT_EQ(back.raw_addresses, rows.raw_addresses);
  ASSERT_EQ(back.xyz.size(), rows.xyz.size());
  EXPECT_EQ(std::memcmp(back.xyz.data(), rows.xyz.data(), 36), 0);
  EXPECT_EQ(back.rooms, rows.rooms);
  EXPECT_EQ(n::decode_heartbeat_batch(n::encode_heartbeat_batch(n::HeartbeatRows{})).size(), 0u);
}

TEST(NatsHeartbeatBatch, RejectsMalformed) {
  n::HeartbeatRows rows;
  char raw[20];
  n::address_to_raw(kA, raw);
  rows.raw_addresses.append(raw, 20);
  rows.xyz = {1.f, 2.f, 3.f};
  std::string ok = n::encode_heartbeat_batch(rows);
  auto code_of = [](const std::string& bytes) -> std::string {
    try {
      n::decode_heartbeat_batch(bytes);
    } catch (const dclcomms::Error& e) {
      return e.code();
    }
    return "";
  };
  EXPECT_EQ(code_of(ok), "");
  EXPECT_NE(code_of(ok.substr(0, ok.size() - 1)), "");
  rows.xyz.push_back(1.f);  // 16 position bytes for one address
  EXPECT_EQ(code_of(n::encode_heartbeat_batch(rows)), "bad_length");
  rows.xyz.pop_back();
  rows.rooms = {{1, "I1"}};  // index past the end
  EXPECT_EQ(code_of(n::encode_heartbeat_batch(rows)), "bad_length");
  EXPECT_NE(code_of(std::string("\xff\xff\xff", 3)), "");
}

TEST(NatsIslandChanges, DecodesFieldsAndRejectsWrongWireTypes) {
  std::string msg;
  auto put = [&msg](uint8_t field, const std::string& v) {
    msg.push_back(static_cast<char>(field << 3 | 2));
    msg.push_back(static_cast<char>(v.size()));
    msg += v;
  };
  put(1, "I1");
  put(2, std::string("\x22\x00", 2));
  put(3, std::string(40, 'a'));
  put(4, "c1");
  put(5, "");
  put(4, "c2");
  put(5, "I0");
  msg += std::string("\x30\x07", 2);  // unknown varint field 6: skipped
  const n::IslandChangesView v = n::decode_island_changes(msg);
  EXPECT_EQ(v.island_id, "I1");
  EXPECT_EQ(v.peers.size(), 2u);
  EXPECT_EQ(v.addresses.size(), 40u);
  ASSERT_EQ(v.conn_strs.size(), 2u);
  EXPECT_EQ(v.conn_strs[1], "c2");
  ASSERT_EQ(v.from_island_ids.size(), 2u);
  EXPECT_EQ(v.from_island_ids[0], "");
  EXPECT_EQ(v.from_island_ids[1], "I0");
  try {
    n::decode_island_changes(std::string("\x08\x01", 2));  // field 1 as a varint
    FAIL() << "accepted a varint island id";
  } catch (const dclcomms::Error& e) {
    EXPECT_EQ(e.code(), "bad_wire_type");
  }
  EXPECT_THROW(n::decode_island_changes(std::string("\x0a\x05I1", 4)), dclcomms::Error);
}

TEST(NatsHeartbeat, PositionOnlyAgreesWithTheCodec) {
  namespace codec = dclcomms::codec;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> coord(-3000.0f, 3000.0f);
  for (int k = 0; k < 2000; ++k) {
    codec::Heartbeat hb;
    // zeros are omitted by the encoder: every subset of x, y, z
    hb.position = codec::Position{(k & 1) ? coord(rng) : 0.0f, (k & 2) ? coord(rng) : 0.0f,
                                  (k & 4) ? coord(rng) : 0.0f};
    if (k % 5 == 0) hb.desired_room = (k % 10 == 0) ? "" : "room-" + std::to_string(k);
    const std::string data = codec::encode_heartbeat(hb);
    float xyz[3] = {-1, -1, -1};
    const bool fast = n::heartbeat_position_only(data, xyz);
    EXPECT_EQ(fast, !hb.desired_room.has_value()) << k;
    if (fast) {
      const codec::Heartbeat back = codec::decode_heartbeat(data);
      ASSERT_TRUE(back.position.has_value());
      EXPECT_EQ(xyz[0], back.position->x);
      EXPECT_EQ(xyz[1], back.position->y);
      EXPECT_EQ(xyz[2], back.position->z);
    }
  }
  float xyz[3];
  const std::string x1 = std::string("\x0a\x05\x0d", 3) + std::string(4, '\x01');
  EXPECT_TRUE(n::heartbeat_position_only(x1, xyz));
  EXPECT_TRUE(n::heartbeat_position_only(std::string("\x0a\x00", 2), xyz));  // empty position
  EXPECT_EQ(xyz[0], 0.0f);
  // left to the codec: a repeated field, a truncated one, a wrong length, other fields,
  // no position at all
  EXPECT_FALSE(n::heartbeat_position_only(
      std::string("\x0a\x0a\x0d", 3) + std::string(4, 'a') + "\x0d" + std::string(4, 'b'), xyz));
  EXPECT_FALSE(
      n::heartbeat_position_only(std::string("\x0a\x04\x0d", 3) + std::string(3, 'a'), xyz));
  EXPECT_FALSE(
      n::heartbeat_position_only(std::string("\x0a\x06\x0d", 3) + std::string(4, 'a'), xyz));
  EXPECT_FALSE(n::heartbeat_position_only(std::string("\x0a\x02\x08\x01", 4), xyz));
  EXPECT_FALSE(n::heartbeat_position_only("", xyz));
  EXPECT_FALSE(n::heartbeat_position_only(std::string("\x12\x00", 2), xyz));
}
