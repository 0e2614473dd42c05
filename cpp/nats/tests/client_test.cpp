// The pure parts of the C++ NATS path: addresses, subjects, the native
// HeartbeatBatch codec (byte-compatible with the Python encoder, which
// tests/test_nats_c.py checks against the real server path).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

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

// raw_to_hex (and raw_to_address through it): every byte value at every position
// gives the two digits printf's %02x gives.
TEST(NatsAddresses, RawToHexEveryByteEveryPosition) {
  for (int pos = 0; pos < 20; ++pos) {
    for (int b = 0; b < 256; ++b) {
      char raw[20];
      for (int i = 0; i < 20; ++i) raw[i] = static_cast<char>((i * 37 + 11) & 0xff);
      raw[pos] = static_cast<char>(b);
      std::string expected = "0x";
      for (int i = 0; i < 20; ++i) {
        char two[3];
        std::snprintf(two, sizeof two, "%02x", static_cast<unsigned char>(raw[i]));
        expected += two;
      }
      char hex[40];
      n::raw_to_hex(raw, hex);
      ASSERT_EQ(std::string(hex, 40), expected.substr(2)) << "byte " << b << " at " << pos;
      std::string address = "keep";
      n::raw_to_address(raw, address);
      ASSERT_EQ(address, "keep" + expected);
      char back[20];
      n::address_to_raw(expected, back);
      ASSERT_EQ(std::string(back, 20), std::string(raw, 20));
    }
  }
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

// --- the connector relay's decoding ------------------------------------------------

namespace {

void put_field(std::string& out, uint8_t field, const std::string& v) {
  out.push_back(static_cast<char>(field << 3 | 2));
  out.push_back(static_cast<char>(v.size()));
  out += v;
}

std::string raw(const std::string& address) {
  char r[20];
  n::address_to_raw(address, r);
  return std::string(r, 20);
}

// The encoded peers entries of a member list.
std::string entries(const std::vector<std::string>& members) {
  dclcomms::codec::IslandChanged m;
  m.island_id = "x";
  float x = 1;
  for (const auto& a : members) m.peers.emplace_back(a, dclcomms::codec::Position{x++, 0, 3});
  const std::string full = dclcomms::codec::encode_island_changed_message(m);
  return full.substr(dclcomms::codec::decode_island_changed_header(full).peers_offset);
}

std::string island_changes(const std::string& island, const std::string& peers,
                           const std::vector<std::string>& to, const std::vector<std::string>& conn,
                           const std::vector<std::string>& from) {
  std::string msg, addrs;
  for (const auto& a : to) addrs += raw(a);
  put_field(msg, 1, island);
  put_field(msg, 2, peers);
  put_field(msg, 3, addrs);
  for (const auto& c : conn) put_field(msg, 4, c);
  for (const auto& f : from) put_field(msg, 5, f);
  return msg;
}

template <class T>
const T& item_of(const n::RelayDecoded& d) {
  EXPECT_EQ(d.kind, n::RelayDecoded::Kind::Item);
  return std::get<T>(d.item);
}

}  // namespace

TEST(NatsRelay, PatternsPerScheme) {
  EXPECT_EQ(n::relay_patterns(n::Scheme::Native),
            (std::vector<std::string>{"dclcomms.v1.island.*.changed",
                                      "dclcomms.v1.island.*.members", "engine.islands"}));
  EXPECT_EQ(n::relay_patterns(n::Scheme::Workers).back(), "engine.islands");
  EXPECT_EQ(
      n::relay_patterns(n::Scheme::V3),
      (std::vector<std::string>{"client-proto.*.island_changed", "client-proto.island.*.peer_join",
                                "client-proto.island.*.peer_left", "archipelago.islands"}));
}

TEST(NatsRelay, NativeIslandChangesBecomeOneItemPerIsland) {
  n::PeersCache cache;
  const std::string peers = entries({kA, kB});
  const auto d =
      n::decode_relay(n::Scheme::Native, "dclcomms.v1.island.I1.changed",
                      island_changes("I1", peers, {kA, kB}, {"c1", "c2"}, {"", "I0"}), cache);
  const auto& item = item_of<dclcomms::ws::IslandChangesItem>(d);
  EXPECT_EQ(item.island_id, "I1");
  EXPECT_EQ(item.peers_entries, peers);
  ASSERT_EQ(item.recipients.size(), 2u);
  EXPECT_EQ(item.recipients[0].address, kA);
  EXPECT_EQ(item.recipients[0].conn_str, "c1");
  EXPECT_EQ(item.recipients[0].from_island_id, std::nullopt);  // "" = none
  EXPECT_EQ(item.recipients[1].address, kB);
  EXPECT_EQ(item.recipients[1].from_island_id, std::optional<std::string>("I0"));
  // Each recipient's frame head is built here, off the server's I/O thread;
  // the frame is the head and the item's entries (shared by the server).
  EXPECT_TRUE(item.frame_heads);
  EXPECT_EQ(item.recipients[0].frame + item.peers_entries,
            dclcomms::codec::encode_server_island_changed("I1", "c1", std::nullopt, peers));
  EXPECT_EQ(item.recipients[1].frame + item.peers_entries,
            dclcomms::codec::encode_server_island_changed("I1", "c2", "I0", peers));
  // Rejects: another island than the subject's, counts that differ, bad entries.
  EXPECT_THROW(n::decode_relay(n::Scheme::Native, "dclcomms.v1.island.I2.changed",
                               island_changes("I1", peers, {kA}, {"c"}, {""}), cache),
               dclcomms::Error);
  EXPECT_THROW(n::decode_relay(n::Scheme::Native, "dclcomms.v1.island.I1.changed",
                               island_changes("I1", peers, {kA, kB}, {"c"}, {"", ""}), cache),
               dclcomms::Error);
  EXPECT_THROW(
      n::decode_relay(n::Scheme::Native, "dclcomms.v1.island.I1.changed",
                      island_changes("I1", std::string("\x22\x05", 2), {kA}, {"c"}, {""}), cache),
      dclcomms::Error);
  // Subjects: a bad island token is refused, other subjects are not the relay's.
  EXPECT_EQ(n::decode_relay(n::Scheme::Native, "dclcomms.v1.island.b*d.changed", "", cache).kind,
            n::RelayDecoded::Kind::BadSubject);
  EXPECT_EQ(n::decode_relay(n::Scheme::Native, "dclcomms.v1.heartbeats", "", cache).kind,
            n::RelayDecoded::Kind::Ignore);
}

TEST(NatsRelay, NativeMembershipIsLeftThenJoined) {
  n::PeersCache cache;
  std::string msg;
  put_field(msg, 1, "I1");
  put_field(msg, 2, raw(kA));
  put_field(msg, 3, raw(kB) + raw(kA));
  const auto d = n::decode_relay(n::Scheme::Native, "dclcomms.v1.island.I1.members", msg, cache);
  const auto& item = item_of<dclcomms::ws::IslandMovesItem>(d);
  EXPECT_EQ(item.island_id, "I1");
  EXPECT_EQ(item.left, std::vector<std::string>{kA});
  EXPECT_EQ(item.joined, (std::vector<std::string>{kB, kA}));
  EXPECT_THROW(n::decode_relay(n::Scheme::Native, "dclcomms.v1.island.I2.members", msg, cache),
               dclcomms::Error);
  std::string short_left;
  put_field(short_left, 1, "I1");
  put_field(short_left, 2, std::string(19, 'a'));
  EXPECT_THROW(
      n::decode_relay(n::Scheme::Native, "dclcomms.v1.island.I1.members", short_left, cache),
      dclcomms::Error);
}

TEST(NatsRelay, CompatIslandChangedKeepsItsEntriesAndFrom) {
  n::PeersCache cache;
  dclcomms::codec::IslandChanged m;
  m.island_id = "I1";
  m.conn_str = "livekit:abc";
  m.from_island_id = "I0";
  m.peers = {{kA, {1, 0, 2}}, {kB, {3, 0, 4}}};
  const std::string data = dclcomms::codec::encode_island_changed_message(m);
  for (auto [scheme, subject] :
       {std::pair{n::Scheme::Workers, "engine.peer." + kB + ".island_changed"},
        std::pair{n::Scheme::V3, "client-proto." + kB + ".island_changed"}}) {
    const auto d = n::decode_relay(scheme, subject, data, cache);
    const auto& item = item_of<dclcomms::ws::IslandChangesItem>(d);
    EXPECT_EQ(item.island_id, "I1");
    ASSERT_EQ(item.recipients.size(), 1u);
    EXPECT_EQ(item.recipients[0].address, kB);
    EXPECT_EQ(item.recipients[0].conn_str, "livekit:abc");
    EXPECT_EQ(item.recipients[0].from_island_id, std::optional<std::string>("I0"));
    // The frame the relay builds from it is the one the whole message gives.
    EXPECT_EQ(dclcomms::codec::encode_server_island_changed(item.island_id, "livekit:abc", "I0",
                                                            item.peers_entries),
              dclcomms::codec::encode_server_island_changed(m));
    EXPECT_TRUE(item.frame_heads);
    EXPECT_EQ(item.recipients[0].frame + item.peers_entries,
              dclcomms::codec::encode_server_island_changed(m));
  }
  // An entry after which another field follows: decoded whole, entries encoded again.
  std::string reordered = data;
  put_field(reordered, 1, "I1");  // island id again, last (the last one wins)
  const auto d = n::decode_relay(n::Scheme::Workers, "engine.peer." + kA + ".island_changed",
                                 reordered, cache);
  const std::string tail =
      data.substr(dclcomms::codec::decode_island_changed_header(data).peers_offset);
  EXPECT_EQ(dclcomms::codec::decode_island_changed_header(reordered).peers_offset,
            dclcomms::codec::kNoPeersTail);
  EXPECT_EQ(item_of<dclcomms::ws::IslandChangesItem>(d).peers_entries, tail);
  // Rejects: a bad address token, a malformed message, malformed entries even
  // after a valid map of that island was seen.
  EXPECT_EQ(
      n::decode_relay(n::Scheme::Workers, "engine.peer.0xABC.island_changed", data, cache).kind,
      n::RelayDecoded::Kind::BadAddress);
  EXPECT_THROW(n::decode_relay(n::Scheme::Workers, "engine.peer." + kA + ".island_changed",
                               std::string("\x0a\x09I1", 4), cache),
               dclcomms::Error);
  std::string bad_tail = data.substr(0, data.size() - 1);
  EXPECT_THROW(
      n::decode_relay(n::Scheme::Workers, "engine.peer." + kA + ".island_changed", bad_tail, cache),
      dclcomms::Error);
}

TEST(NatsRelay, CompatMovesAndTickEnds) {
  n::PeersCache cache;
  std::string msg;
  put_field(msg, 1, "I7");
  put_field(msg, 2, kA);
  const auto j = n::decode_relay(n::Scheme::Workers, "engine.island.I7.peer_join", msg, cache);
  EXPECT_EQ(item_of<dclcomms::ws::IslandMovesItem>(j).joined, std::vector<std::string>{kA});
  EXPECT_TRUE(std::get<dclcomms::ws::IslandMovesItem>(j.item).left.empty());
  const auto l = n::decode_relay(n::Scheme::V3, "client-proto.island.I7.peer_left", msg, cache);
  EXPECT_EQ(item_of<dclcomms::ws::IslandMovesItem>(l).left, std::vector<std::string>{kA});
  EXPECT_EQ(std::get<dclcomms::ws::IslandMovesItem>(l.item).island_id, "I7");
  EXPECT_EQ(n::decode_relay(n::Scheme::Workers, "engine.island.b!d.peer_join", msg, cache).kind,
            n::RelayDecoded::Kind::BadIsland);
  EXPECT_THROW(n::decode_relay(n::Scheme::Workers, "engine.island.I7.peer_join",
                               std::string("\x0a\x02\xff\xfe", 4), cache),  // not UTF-8
               dclcomms::Error);
  EXPECT_THROW(n::decode_relay(n::Scheme::Workers, "engine.island.I7.peer_join",
                               std::string("\x10\x01", 2), cache),  // peerId as a varint
               dclcomms::Error);
  for (auto [scheme, subject] : {std::pair{n::Scheme::Native, "engine.islands"},
                                 std::pair{n::Scheme::Workers, "engine.islands"},
                                 std::pair{n::Scheme::V3, "archipelago.islands"}}) {
    const auto d = n::decode_relay(scheme, subject, "anything", cache);
    EXPECT_EQ(d.kind, n::RelayDecoded::Kind::Item);
    EXPECT_TRUE(std::holds_alternative<dclcomms::ws::TickEndItem>(d.item));
  }
  EXPECT_EQ(n::decode_relay(n::Scheme::V3, "engine.islands", "", cache).kind,
            n::RelayDecoded::Kind::Ignore);
}

TEST(NatsAddresses, EveryByteAtEveryPosition) {
  // valid_address checks eight characters at a time: against the plain rule, each of
  // the 256 byte values at each of the 40 digit positions of a valid address
  auto hex = [](unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  for (const std::string& base : {kA, kB}) {
    ASSERT_TRUE(n::valid_address(base));
    for (size_t i = 2; i < base.size(); ++i) {
      for (int v = 0; v < 256; ++v) {
        std::string a = base;
        a[i] = static_cast<char>(v);
        EXPECT_EQ(n::valid_address(a), hex(static_cast<unsigned char>(v))) << i << " " << v;
      }
    }
  }
  // two bad bytes in one group of eight, and every byte equal
  std::string a = kA;
  a[3] = 'g';
  a[4] = '/';
  EXPECT_FALSE(n::valid_address(a));
  for (int v = 0; v < 256; ++v) {
    const std::string same = "0x" + std::string(40, static_cast<char>(v));
    EXPECT_EQ(n::valid_address(same), hex(static_cast<unsigned char>(v))) << v;
  }
}

TEST(NatsSubjects, ClassifyHeartbeatShapes) {
  using K = n::Classified::Kind;
  auto kind = [](n::Scheme s, const std::string& subject) { return n::classify(s, subject).kind; };
  // the length of a heartbeat subject, with a dot or a bad digit inside the address
  std::string dotted = kA;
  dotted[20] = '.';
  EXPECT_EQ(kind(n::Scheme::Workers, "peer." + dotted + ".heartbeat"), K::Ignore);
  EXPECT_EQ(kind(n::Scheme::V3, "client-proto.peer." + dotted + ".heartbeat"), K::Ignore);
  std::string upper = kA;
  upper[20] = 'A';
  EXPECT_EQ(kind(n::Scheme::Workers, "peer." + upper + ".heartbeat"), K::BadAddress);
  EXPECT_EQ(kind(n::Scheme::V3, "client-proto.peer." + upper + ".heartbeat"), K::BadAddress);
  EXPECT_EQ(kind(n::Scheme::Workers, "peer." + kA + ".heartbeaT"), K::Ignore);
  EXPECT_EQ(kind(n::Scheme::Workers, "peer." + kA + "xheartbeat"), K::Ignore);
  EXPECT_EQ(kind(n::Scheme::V3, "client-proto.peer." + kA + ".heartbeat"), K::Heartbeat);
  EXPECT_EQ(n::classify(n::Scheme::V3, "client-proto.peer." + kB + ".heartbeat").address, kB);
  EXPECT_EQ(kind(n::Scheme::Workers, "client-proto.peer." + kA + ".heartbeat"), K::Ignore);
  EXPECT_EQ(kind(n::Scheme::Native, "peer." + kA + ".heartbeat"), K::Ignore);
}
