// The typed fast paths against the generic codec: encoders byte for byte,
// decoders value for value (and error code for error code) on seeded random
// and mutated inputs.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "dclcomms/codec/codec.hpp"
#include "dclcomms/codec/descriptor_pool.hpp"
#include "dclcomms/codec/fast.hpp"
#include "dclcomms/error.hpp"
#include "test_helpers.hpp"

namespace dclcomms::codec {
namespace {

using testing::hex;
using testing::unhex;

constexpr const char* kClient = "decentraland.kernel.comms.v3.ClientPacket";
constexpr const char* kServer = "decentraland.kernel.comms.v3.ServerPacket";
constexpr const char* kHeartbeatType = "decentraland.kernel.comms.v3.Heartbeat";
constexpr const char* kIsland = "decentraland.kernel.comms.v3.IslandChangedMessage";
constexpr const char* kWs = "decentraland.kernel.comms.rfc5.WsPacket";

// --- fast structs as canonical Values (what the generic decoder returns) -------

void put_float(Object& o, const char* name, float f) {
  if (f == 0.0f) return;
  if (std::isnan(f)) {
    o.emplace_back(name, "NaN");
  } else if (std::isinf(f)) {
    o.emplace_back(name, f > 0 ? "Infinity" : "-Infinity");
  } else {
    o.emplace_back(name, float_to_json_double(f));
  }
}

void put_string(Object& o, const char* name, std::string_view s) {
  if (!s.empty()) o.emplace_back(name, Value(s));
}

Value position_value(const Position& p) {
  Object o;
  put_float(o, "x", p.x);
  put_float(o, "y", p.y);
  put_float(o, "z", p.z);
  return Value(std::move(o));
}

Value heartbeat_value(const Heartbeat& hb) {
  Object o;
  if (hb.position) o.emplace_back("position", position_value(*hb.position));
  if (hb.desired_room) o.emplace_back("desiredRoom", Value(*hb.desired_room));
  return Value(std::move(o));
}

Value island_value(const IslandChanged& m) {
  Object o;
  put_string(o, "islandId", m.island_id);
  put_string(o, "connStr", m.conn_str);
  if (m.from_island_id) o.emplace_back("fromIslandId", Value(*m.from_island_id));
  if (!m.peers.empty()) {
    Object peers;
    for (const auto& [k, p] : m.peers) peers.emplace_back(k, position_value(p));
    o.emplace_back("peers", Value(std::move(peers)));
  }
  return Value(std::move(o));
}

Value client_value(const ClientPacket& p) {
  Object o;
  Object member;
  switch (p.kind) {
    case ClientPacket::Kind::None:
      return Value(Object{});
    case ClientPacket::Kind::ChallengeRequest:
      put_string(member, "address", p.address);
      o.emplace_back("challengeRequest", Value(std::move(member)));
      break;
    case ClientPacket::Kind::SignedChallenge:
      put_string(member, "authChainJson", p.auth_chain_json);
      o.emplace_back("signedChallenge", Value(std::move(member)));
      break;
    case ClientPacket::Kind::Heartbeat:
      o.emplace_back("heartbeat", heartbeat_value(p.heartbeat));
      break;
  }
  return Value(std::move(o));
}

// --- random inputs ----------------------------------------------------------------

float random_float(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:
      return 0.0f;
    case 1:
      return -0.0f;
    case 2:
      return std::numeric_limits<float>::quiet_NaN();
    case 3:
      return static_cast<float>(static_cast<int>(rng() % 4000) - 2000) / 16.0f;
    default: {
      const auto bits = static_cast<uint32_t>(rng());
      float f;
      std::memcpy(&f, &bits, 4);
      return std::isnan(f) ? 1.0f : f;
    }
  }
}

std::string random_text(std::mt19937_64& rng) {
  static const char* pieces[] = {"0x", "a", "F", "é", "😀", "-", "7"};
  std::string s;
  const auto n = rng() % 6;
  for (uint64_t i = 0; i < n; ++i) s += pieces[rng() % 7];
  return s;
}

Position random_position(std::mt19937_64& rng) {
  return {random_float(rng), random_float(rng), random_float(rng)};
}

Heartbeat random_heartbeat(std::mt19937_64& rng) {
  Heartbeat hb;
  if (rng() % 3) hb.position = random_position(rng);
  if (rng() % 2) hb.desired_room = random_text(rng);
  return hb;
}

IslandChanged random_island(std::mt19937_64& rng) {
  IslandChanged m;
  m.island_id = random_text(rng);
  m.conn_str = random_text(rng);
  if (rng() % 2) m.from_island_id = random_text(rng);
  const auto n = rng() % 6;
  for (uint64_t i = 0; i < n; ++i) {
    m.peers.emplace_back("0x" + std::to_string(rng() % 100000) + "-" + std::to_string(i),
                         random_position(rng));
  }
  return m;
}

Value wrap(const char* member, Value v) {
  return Value(Object{{member, std::move(v)}});
}

// The peers entries of ic alone: a message with no header fields.
std::string peers_entries(const IslandChanged& ic) {
  IslandChanged only;
  only.peers = ic.peers;
  return encode_island_changed_message(only);
}

// append_heartbeat: encode_heartbeat's bytes after whatever the buffer holds; a
// buffer cleared and reused for the next heartbeat holds only that one.
TEST(FastPaths, AppendHeartbeatAppendsEncodeHeartbeatsBytes) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  std::string reused;
  for (int i = 0; i < 2000; ++i) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " iteration " + std::to_string(i));
    const Heartbeat hb = random_heartbeat(rng);
    const std::string whole = encode_heartbeat(hb);
    std::string prefixed = "prefix";
    append_heartbeat(prefixed, hb);
    ASSERT_EQ(hex(prefixed), hex("prefix" + whole));
    reused.clear();
    append_heartbeat(reused, hb);
    ASSERT_EQ(hex(reused), hex(whole));
  }
}

TEST(FastPaths, EncodersMatchGenericEncoder) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 2000; ++i) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " iteration " + std::to_string(i));
    const Heartbeat hb = random_heartbeat(rng);
    ASSERT_EQ(hex(encode_heartbeat(hb)), hex(encode(kHeartbeatType, heartbeat_value(hb))));
    const IslandChanged ic = random_island(rng);
    ASSERT_EQ(hex(encode_island_changed_message(ic)), hex(encode(kIsland, island_value(ic))));
    ASSERT_EQ(hex(encode_server_island_changed(ic)),
              hex(encode(kServer, wrap("islandChanged", island_value(ic)))));
    ASSERT_EQ(hex(wrap_server_island_changed(encode_island_changed_message(ic))),
              hex(encode_server_island_changed(ic)));
    ASSERT_EQ(hex(encode_server_island_changed(ic.island_id, ic.conn_str, ic.from_island_id,
                                               peers_entries(ic))),
              hex(encode_server_island_changed(ic)));
    ASSERT_EQ(hex(encode_server_island_changed_head(ic.island_id, ic.conn_str, ic.from_island_id,
                                                    peers_entries(ic).size()) +
                  peers_entries(ic)),
              hex(encode_server_island_changed(ic)));
    std::vector<std::string> member_ids;
    std::vector<float> xyz;
    for (const auto& [id, p] : ic.peers) {
      member_ids.push_back(id);
      xyz.insert(xyz.end(), {p.x, p.y, p.z});
    }
    ASSERT_EQ(hex(encode_island_changed_peers(member_ids, xyz.data())), hex(peers_entries(ic)));
    const std::string a = random_text(rng);
    const std::string b = random_text(rng);
    const bool flag = rng() % 2 == 0;
    const auto alias = static_cast<uint32_t>(rng() % 3 == 0 ? 0 : rng());
    Object o;
    put_string(o, "challengeToSign", a);
    if (flag) o.emplace_back("alreadyConnected", true);
    ASSERT_EQ(hex(encode_server_challenge_response(a, flag)),
              hex(encode(kServer, wrap("challengeResponse", Value(o)))));
    ASSERT_EQ(hex(encode_ws_challenge(a, flag)),
              hex(encode(kWs, wrap("challengeMessage", Value(o)))));
    Object w;
    put_string(w, "peerId", a);
    ASSERT_EQ(hex(encode_server_welcome(a)), hex(encode(kServer, wrap("welcome", Value(w)))));
    Object j;
    put_string(j, "islandId", a);
    put_string(j, "peerId", b);
    ASSERT_EQ(hex(encode_server_join_island(a, b)),
              hex(encode(kServer, wrap("joinIsland", Value(j)))));
    ASSERT_EQ(hex(encode_server_left_island(a, b)),
              hex(encode(kServer, wrap("leftIsland", Value(j)))));
    ASSERT_EQ(hex(encode_server_kicked()), hex(encode(kServer, wrap("kicked", Value(Object{})))));

    std::vector<std::pair<uint32_t, std::string>> ids;
    Object idmap;
    for (uint64_t k = 0, n = rng() % 4; k < n; ++k) {
      const auto peer = static_cast<uint32_t>(k == 0 ? 0 : rng());
      ids.emplace_back(peer, random_text(rng));
      idmap.emplace_back(std::to_string(peer), Value(ids.back().second));
    }
    Object welcome;
    if (alias != 0) welcome.emplace_back("alias", Value(alias));
    if (!idmap.empty()) welcome.emplace_back("peerIdentities", Value(idmap));
    ASSERT_EQ(hex(encode_ws_welcome(alias, ids)),
              hex(encode(kWs, wrap("welcomeMessage", Value(welcome)))));
    Object pj;
    if (alias != 0) pj.emplace_back("alias", Value(alias));
    put_string(pj, "address", a);
    ASSERT_EQ(hex(encode_ws_peer_join(alias, a)),
              hex(encode(kWs, wrap("peerJoinMessage", Value(pj)))));
    Object pl;
    if (alias != 0) pl.emplace_back("alias", Value(alias));
    ASSERT_EQ(hex(encode_ws_peer_leave(alias)),
              hex(encode(kWs, wrap("peerLeaveMessage", Value(pl)))));
    Object kicked;
    put_string(kicked, "reason", a);
    ASSERT_EQ(hex(encode_ws_peer_kicked(a)), hex(encode(kWs, wrap("peerKicked", Value(kicked)))));
    std::string body;
    for (uint64_t k = 0, n = rng() % 40; k < n; ++k) body.push_back(static_cast<char>(rng()));
    Object pu;
    if (alias != 0) pu.emplace_back("fromAlias", Value(alias));
    if (!body.empty()) pu.emplace_back("body", Value(Bytes{body}));
    if (flag) pu.emplace_back("unreliable", true);
    ASSERT_EQ(hex(encode_ws_peer_update(alias, body, flag)),
              hex(encode(kWs, wrap("peerUpdateMessage", Value(pu)))));
  }
}

TEST(FastPaths, LargeIslandChangedUsesMultiByteLengths) {
  IslandChanged ic;
  ic.island_id = "I1";
  ic.conn_str = std::string(300, 'c');
  for (int i = 0; i < 100; ++i) ic.peers.emplace_back("0x" + std::to_string(i), Position{1, 2, 3});
  EXPECT_EQ(hex(encode_server_island_changed(ic)),
            hex(encode(kServer, wrap("islandChanged", island_value(ic)))));
  EXPECT_EQ(hex(wrap_server_island_changed(encode_island_changed_message(ic))),
            hex(encode_server_island_changed(ic)));
  EXPECT_EQ(hex(encode_server_island_changed(ic.island_id, ic.conn_str, ic.from_island_id,
                                             peers_entries(ic))),
            hex(encode_server_island_changed(ic)));
  EXPECT_EQ(island_value(decode_island_changed_message(encode_island_changed_message(ic))),
            island_value(ic));
}

// Runs fast and generic decoders on the same bytes: both throw with the same
// code, or both succeed with the same content.
template <typename Fast, typename ToValue>
void compare_decoders(const char* type, const std::string& bytes, Fast fast, ToValue to_value,
                      const std::string& context) {
  std::string fast_code;
  std::string generic_code;
  Value fast_value;
  Value generic_value;
  try {
    fast_value = to_value(fast(bytes));
  } catch (const Error& e) {
    ASSERT_EQ(e.kind(), ErrorKind::Decode);
    ASSERT_EQ(std::string(e.what()).rfind(std::string(type) + ": ", 0), 0u) << e.what();
    fast_code = e.code();
  }
  try {
    generic_value = decode(type, bytes);
  } catch (const Error& e) {
    generic_code = e.code();
  }
  ASSERT_EQ(fast_code, generic_code) << context << " bytes " << hex(bytes);
  if (fast_code.empty()) {
    ASSERT_EQ(fast_value, generic_value)
        << context << " bytes " << hex(bytes) << "\nfast " << fast_value.to_json() << "\ngeneric "
        << generic_value.to_json();
  }
}

std::string mutate(std::string s, std::mt19937_64& rng) {
  const auto edits = 1 + rng() % 3;
  for (uint64_t e = 0; e < edits; ++e) {
    switch (rng() % 4) {
      case 0:
        if (!s.empty()) s[rng() % s.size()] = static_cast<char>(rng());
        break;
      case 1:
        if (!s.empty()) s.resize(rng() % s.size());
        break;
      case 2:
        s.insert(s.begin() + static_cast<long>(rng() % (s.size() + 1)), static_cast<char>(rng()));
        break;
      default:
        s += s.substr(0, rng() % (s.size() + 1));  // repeated fields / merges
    }
  }
  return s;
}

Value ws_value(const WsPacket& p, const std::string& bytes) {
  Object member;
  switch (p.kind) {
    case WsPacket::Kind::None:
      return Value(Object{});
    case WsPacket::Kind::PeerIdentification:
      put_string(member, "address", p.address);
      return wrap("peerIdentification", Value(std::move(member)));
    case WsPacket::Kind::SignedChallenge:
      put_string(member, "authChainJson", p.auth_chain_json);
      return wrap("signedChallengeForServer", Value(std::move(member)));
    case WsPacket::Kind::PeerUpdate:
      if (p.from_alias != 0) member.emplace_back("fromAlias", Value(p.from_alias));
      if (!p.body.empty()) member.emplace_back("body", Value(base64_encode(p.body)));
      if (p.unreliable) member.emplace_back("unreliable", true);
      return wrap("peerUpdateMessage", Value(std::move(member)));
    case WsPacket::Kind::Other:
      // Not read by the fast path: take the generic value if it is a
      // server->client member (the comparison then checks only the kind).
      {
        const Value g = decode(kWs, bytes);
        const std::string& key = g.as_object().at(0).first;
        EXPECT_TRUE(key == "welcomeMessage" || key == "peerJoinMessage" ||
                    key == "challengeMessage" || key == "peerLeaveMessage" || key == "peerKicked")
            << key;
        return g;
      }
  }
  return Value();
}

TEST(FastPaths, DecodersMatchGenericDecoderOnMutatedInputs) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  const auto& pool = descriptor_pool();
  for (int i = 0; i < 3000; ++i) {
    const std::string ctx = "seed " + std::to_string(seed) + " iteration " + std::to_string(i);
    const std::string client = mutate(
        encode(kClient, testing::random_message(pool.FindMessageTypeByName(kClient), rng)), rng);
    compare_decoders(kClient, client, decode_client_packet, client_value, ctx);
    const std::string hb = mutate(encode_heartbeat(random_heartbeat(rng)), rng);
    compare_decoders(kHeartbeatType, hb, decode_heartbeat, heartbeat_value, ctx);
    const std::string ic = mutate(encode_island_changed_message(random_island(rng)), rng);
    compare_decoders(kIsland, ic, decode_island_changed_message, island_value, ctx);
    const std::string ws =
        mutate(encode(kWs, testing::random_message(pool.FindMessageTypeByName(kWs), rng)), rng);
    compare_decoders(
        kWs, ws, decode_ws_packet, [&](const WsPacket& p) { return ws_value(p, ws); }, ctx);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(FastPaths, DecodeVectors) {
  for (const auto& v : testing::load_vectors()) {
    if (v.type_name == kClient) {
      EXPECT_EQ(client_value(decode_client_packet(v.bytes)), decode(kClient, v.bytes));
    } else if (v.type_name == kWs) {
      EXPECT_EQ(ws_value(decode_ws_packet(v.bytes), v.bytes), decode(kWs, v.bytes));
    } else if (v.type_name == kHeartbeatType) {
      EXPECT_EQ(heartbeat_value(decode_heartbeat(v.bytes)), decode(kHeartbeatType, v.bytes));
    }
  }
  const ClientPacket hb = decode_client_packet(unhex("1a0c0a0a0d000084411d000001c2"));
  ASSERT_EQ(hb.kind, ClientPacket::Kind::Heartbeat);
  ASSERT_TRUE(hb.heartbeat.position.has_value());
  EXPECT_EQ(hb.heartbeat.position->x, 16.5f);
  EXPECT_EQ(hb.heartbeat.position->z, -32.25f);
  EXPECT_FALSE(hb.heartbeat.desired_room.has_value());
  const std::string frame = unhex("1a1a080712142a100a0568656c6c6f110000e0ceb572794258641801");
  const WsPacket pu = decode_ws_packet(frame);  // body views into `frame`
  EXPECT_EQ(pu.kind, WsPacket::Kind::PeerUpdate);
  EXPECT_EQ(pu.from_alias, 7u);
  EXPECT_TRUE(pu.unreliable);
  EXPECT_EQ(hex(pu.body),
            "2a100a0568656c6c6f110000e0ceb5727942"
            "5864");
}

TEST(FastPaths, DecodeErrorsCarryTypeAndCode) {
  try {
    decode_client_packet(unhex("1a050a03"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "bad_length");
    EXPECT_STREQ(e.what(),
                 "decentraland.kernel.comms.v3.ClientPacket: length 5 at offset 1 exceeds the 2 "
                 "remaining bytes");
  }
  try {
    decode_ws_packet(unhex("3a030a01c0"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "invalid_utf8");
  }
}

}  // namespace
}  // namespace dclcomms::codec

namespace dclcomms::codec {
namespace {

TEST(FastPaths, IslandChangedDuplicatePeersInLargeMaps) {
  // 40 distinct peers, then every one of them again with a new position, then
  // a third time for peer 0: last value wins at the first position (E7), both
  // below and above the size where the decoder switches to a hash index.
  IslandChanged ic;
  for (int i = 0; i < 40; ++i) ic.peers.emplace_back("0x" + std::to_string(i), Position{1, 0, 0});
  for (int i = 0; i < 40; ++i) {
    ic.peers.emplace_back("0x" + std::to_string(i), Position{static_cast<float>(i), 2, 0});
  }
  ic.peers.emplace_back("0x0", Position{0, 0, 9});
  const std::string bytes = encode_island_changed_message(ic);
  const IslandChanged got = decode_island_changed_message(bytes);
  ASSERT_EQ(got.peers.size(), 40u);
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(got.peers[static_cast<size_t>(i)].first, "0x" + std::to_string(i));
  }
  EXPECT_EQ(got.peers[0].second.z, 9.0f);
  EXPECT_EQ(got.peers[0].second.y, 0.0f);
  EXPECT_EQ(got.peers[39].second.x, 39.0f);
  EXPECT_EQ(got.peers[39].second.y, 2.0f);
  EXPECT_EQ(island_value(got), decode(kIsland, bytes));
}

}  // namespace
}  // namespace dclcomms::codec

namespace dclcomms::codec {
namespace {

// The header + shared tail split decodes exactly what the whole-message
// decoder does: both succeed with the same message (header fields from the
// split, peers from the tail) or both fail.
TEST(FastPaths, IslandChangedHeaderAndTailMatchWholeMessage) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  int tails = 0;
  int whole = 0;
  for (int i = 0; i < 4000; ++i) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " iteration " + std::to_string(i));
    std::string bytes = encode_island_changed_message(random_island(rng));
    if (i % 2) bytes = mutate(bytes, rng);
    bool full_ok = true;
    IslandChanged full;
    try {
      full = decode_island_changed_message(bytes);
    } catch (const Error&) {
      full_ok = false;
    }
    bool split_ok = true;
    IslandChanged split;
    try {
      const IslandChangedHeader h = decode_island_changed_header(bytes);
      split.island_id = h.island_id;
      split.conn_str = h.conn_str;
      split.from_island_id = h.from_island_id;
      if (h.peers_offset == kNoPeersTail) {
        ++whole;
        split.peers = decode_island_changed_message(bytes).peers;
      } else {
        ASSERT_LE(h.peers_offset, bytes.size());
        ++tails;
        const IslandChanged tail = decode_island_changed_message(bytes.substr(h.peers_offset));
        EXPECT_TRUE(tail.island_id.empty() && tail.conn_str.empty() && !tail.from_island_id);
        split.peers = tail.peers;
      }
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Decode);
      split_ok = false;
    }
    ASSERT_EQ(split_ok, full_ok) << hex(bytes);
    if (full_ok) {
      ASSERT_EQ(island_value(split), island_value(full)) << hex(bytes);
    }
  }
  EXPECT_GT(tails, 1000);
  EXPECT_GT(whole, 10);  // mutations that put a field after the peers
}

TEST(FastPaths, IslandChangedHeaderOffsets) {
  IslandChanged ic;
  ic.island_id = "I1";
  ic.conn_str = "livekit:x";
  ic.from_island_id = "I0";
  const std::string head = encode_island_changed_message(ic);
  EXPECT_EQ(decode_island_changed_header(head).peers_offset, head.size());  // no peers
  ic.peers.emplace_back("0xa", Position{1, 2, 3});
  ic.peers.emplace_back("0xb", Position{});
  const std::string bytes = encode_island_changed_message(ic);
  const IslandChangedHeader h = decode_island_changed_header(bytes);
  EXPECT_EQ(h.island_id, "I1");
  EXPECT_EQ(h.conn_str, "livekit:x");
  EXPECT_EQ(h.from_island_id, std::optional<std::string>("I0"));
  EXPECT_EQ(h.peers_offset, head.size());
  IslandChanged peers_only;
  peers_only.peers = ic.peers;
  EXPECT_EQ(bytes.substr(h.peers_offset), encode_island_changed_message(peers_only));
  // A header field after the peers: no shareable tail, the last value still wins.
  const IslandChangedHeader late = decode_island_changed_header(bytes + unhex("0a024932"));
  EXPECT_EQ(late.peers_offset, kNoPeersTail);
  EXPECT_EQ(late.island_id, "I2");
  EXPECT_THROW(decode_island_changed_header(bytes.substr(0, bytes.size() - 1)), Error);
}

}  // namespace
}  // namespace dclcomms::codec
