// A tick's island changes grouped and encoded per island (tick.hpp): grouping
// and order against a real engine, the native encoders against the decoders,
// the built-in transports' connection strings (tests/test_nats_tick.py checks
// the bytes against the Python path over a real nats-server).

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/codec/fast.hpp"
#include "dclcomms/error.hpp"
#include "dclcomms/nats/client.hpp"
#include "dclcomms/nats/tick.hpp"

namespace n = dclcomms::nats;
namespace arch = dclcomms::archipelago;

namespace {

std::string addr(int i) {
  std::string hex = std::to_string(i);
  return "0x" + std::string(40 - hex.size(), '0') + hex;
}

std::string raw_of(const std::vector<std::string>& addresses) {
  std::string raw;
  char r[20];
  for (const auto& a : addresses) {
    n::address_to_raw(a, r);
    raw.append(r, 20);
  }
  return raw;
}

// (island, addresses, conn_strs, from ids, members) of an IslandChanges payload.
struct Changes {
  std::string island;
  std::vector<std::string> addresses, conn, from, members;
};

Changes decode(const std::string& data) {
  const n::IslandChangesView v = n::decode_island_changes(data);
  Changes c;
  c.island = std::string(v.island_id);
  for (size_t i = 0; i < v.addresses.size(); i += 20) {
    n::raw_to_address(v.addresses.data() + i, c.addresses.emplace_back());
  }
  for (auto s : v.conn_strs) c.conn.emplace_back(s);
  for (auto s : v.from_island_ids) c.from.emplace_back(s);
  for (const auto& [peer, pos] : dclcomms::codec::decode_island_changed_message(v.peers).peers) {
    c.members.push_back(peer);
  }
  return c;
}

std::vector<std::string> strs(const std::vector<std::string_view>& views) {
  return {views.begin(), views.end()};
}

n::Issuer fixed(const std::string& text) {
  n::Issuer i;
  i.kind = n::Issuer::Kind::Fixed;
  i.text = text;
  return i;
}

}  // namespace

TEST(NatsTickEncode, IslandChangesRoundTripKeepsEmptyFromIds) {
  const std::string raw = raw_of({addr(1), addr(2)});
  const std::string data =
      n::encode_island_changes("I7", "entries", raw, {"offline:offline", ""}, {"", "I3"});
  const n::IslandChangesView v = n::decode_island_changes(data);
  EXPECT_EQ(v.island_id, "I7");
  EXPECT_EQ(v.peers, "entries");
  EXPECT_EQ(v.addresses, raw);
  ASSERT_EQ(v.conn_strs.size(), 2u);  // repeated: an empty element is written too
  EXPECT_EQ(v.conn_strs[1], "");
  ASSERT_EQ(v.from_island_ids.size(), 2u);
  EXPECT_EQ(v.from_island_ids[0], "");
  EXPECT_EQ(v.from_island_ids[1], "I3");
}

TEST(NatsTickEncode, MembershipOmitsEmptyLists) {
  const std::string left = raw_of({addr(5)});
  const std::string data = n::encode_island_membership("I2", left, "");
  // field 1 "I2", field 2 (20 bytes); no field 3
  EXPECT_EQ(data, std::string("\x0a\x02I2\x12\x14", 6) + left);
}

TEST(NatsTickEncode, IslandStatusBytes) {
  arch::IslandInfo i;
  i.id = "I1";
  i.peers = {"a", "b"};
  i.max_peers = 100;
  i.center[0] = 0.0;  // x omitted
  i.center[1] = 0.0;
  i.center[2] = 2.0;
  i.radius = 0.0;  // omitted
  const std::string data = n::encode_island_status({i});
  const std::string inner = std::string(
      "\x0a\x02I1\x12\x01"
      "a\x12\x01"
      "b\x18\x64\x22\x05\x1d\x00\x00\x00\x40",
      19);
  EXPECT_EQ(data, "\x0a" + std::string(1, static_cast<char>(inner.size())) + inner);
}

TEST(NatsTickIds, ValidIslandIds) {
  EXPECT_TRUE(n::valid_island_id("I1"));
  EXPECT_TRUE(n::valid_island_id("zZ-9_"));
  EXPECT_TRUE(n::valid_island_id(std::string(128, 'a')));
  EXPECT_FALSE(n::valid_island_id(std::string(129, 'a')));
  EXPECT_FALSE(n::valid_island_id(""));
  EXPECT_FALSE(n::valid_island_id("I.1"));
  EXPECT_FALSE(n::valid_island_id("I*"));
  EXPECT_FALSE(n::valid_island_id("I 1"));
}

TEST(NatsTickMint, BuiltInTransports) {
  const std::vector<std::string> owned = {addr(1), addr(2)};
  const std::vector<std::string_view> peers(owned.begin(), owned.end());
  EXPECT_EQ(n::mint(fixed("offline:offline"), "I1", peers),
            std::vector<std::string>(2, "offline:offline"));
  n::Issuer p2p;
  p2p.kind = n::Issuer::Kind::P2P;
  EXPECT_EQ(n::mint(p2p, "I1", peers)[1], "p2p:I1:" + addr(2));
  n::Issuer ws;
  ws.kind = n::Issuer::Kind::WsRoom;
  ws.text = "ws-room:ws://h:1";
  EXPECT_EQ(n::mint(ws, "I4", peers)[0], "ws-room:ws://h:1/rooms/I4");  // no secret: no token
  ws.secret = "s3cret";
  ws.now_s = 1000;
  ws.ttl_s = 60;
  const std::string s = n::mint(ws, "I4", peers)[1];
  const std::string prefix = "ws-room:ws://h:1/rooms/I4?access_token=";
  ASSERT_EQ(s.substr(0, prefix.size()), prefix);
  const auto claims = dclcomms::auth::jwt_decode(s.substr(prefix.size()), "s3cret",
                                                 dclcomms::auth::JwtCheck{1000, 0, {}, true});
  EXPECT_EQ(claims.dump(),
            "{\"sub\":\"" + addr(2) + "\",\"room\":\"I4\",\"iat\":1000,\"exp\":1060}");
  n::Issuer lk;
  lk.kind = n::Issuer::Kind::LiveKit;
  lk.text = "livekit:wss://lk?access_token=";
  lk.api_key = "key";
  lk.secret = "lk-secret";
  lk.now_s = 1000;
  const std::string t = n::mint(lk, "I4", peers)[0];
  const auto lc = dclcomms::auth::jwt_decode(t.substr(lk.text.size()), "lk-secret",
                                             dclcomms::auth::JwtCheck{1000, 0, "key", true});
  EXPECT_EQ(lc.at("sub"), addr(1));
  EXPECT_EQ(lc.at("video").at("room"), "I4");
  // ids that JSON escapes: the same token as the generic builder writes
  const std::vector<std::string_view> odd = {"a\"b", "c\\d", "e\x01", "\xc3\xa9"};
  const auto odd_tokens = n::mint(ws, "I\"4", odd);
  for (size_t i = 0; i < odd.size(); ++i) {
    const nlohmann::ordered_json c = {
        {"sub", std::string(odd[i])}, {"room", "I\"4"}, {"iat", 1000}, {"exp", 1060}};
    EXPECT_EQ(odd_tokens[i], "ws-room:ws://h:1/rooms/I\"4?access_token=" +
                                 dclcomms::auth::jwt_encode(c, "s3cret"));
  }
  // and the plain ones as the generic builder too
  const nlohmann::ordered_json plain = {
      {"sub", addr(2)}, {"room", "I4"}, {"iat", 1000}, {"exp", 1060}};
  EXPECT_EQ(s, prefix + dclcomms::auth::jwt_encode(plain, "s3cret"));
  lk.api_key.clear();  // invalid: the token builder refuses, nothing is minted
  EXPECT_THROW(n::mint(lk, "I4", peers), dclcomms::Error);
}

TEST(NatsTick, FirstTickOneMessagePerIslandThenMembersThenStatus) {
  arch::Engine e({});
  // island A: peers 1, 2, 3 (close); island B: peer 4 (far)
  e.update(addr(1), 0, 0, 0);
  e.update(addr(2), 10, 0, 0);
  e.update(addr(3), 20, 0, 0);
  e.update(addr(4), 1000, 0, 1000);
  n::Tick t(e, 0, 60'000);
  EXPECT_EQ(t.counts().changes, 4u);
  EXPECT_EQ(t.counts().changed, 4u);
  EXPECT_EQ(t.counts().left, 0u);
  ASSERT_EQ(t.touched().size(), 2u);
  const std::string a = *e.island_of(addr(1)), b = *e.island_of(addr(4));
  EXPECT_EQ(t.touched()[0], a);
  EXPECT_EQ(strs(t.targets(a, false)), (std::vector<std::string>{addr(1), addr(2), addr(3)}));
  EXPECT_TRUE(t.targets("nope", true).empty());
  EXPECT_EQ(t.issue(a, false, fixed("offline:offline")), 3u);
  // b's transport rejects its only peer: no island_changed for it
  EXPECT_EQ(t.set_issued(b, false, {std::nullopt}), std::vector<std::string>{addr(4)});

  const n::NativeOutput out = t.native_messages();
  EXPECT_EQ(out.island_changed, 3u);
  EXPECT_EQ(out.bad_address + out.bad_island_id + out.bad_subject, 0u);
  // A's IslandChanges, A's and B's IslandMembership (joins), engine.islands
  ASSERT_EQ(out.messages.size(), 4u);
  EXPECT_EQ(out.messages[0].first, "dclcomms.v1.island." + a + ".changed");
  const Changes c = decode(out.messages[0].second);
  EXPECT_EQ(c.island, a);
  EXPECT_EQ(c.addresses, (std::vector<std::string>{addr(1), addr(2), addr(3)}));
  EXPECT_EQ(c.conn, std::vector<std::string>(3, "offline:offline"));
  EXPECT_EQ(c.from, std::vector<std::string>(3, ""));
  EXPECT_EQ(c.members, (std::vector<std::string>{addr(1), addr(2), addr(3)}));
  EXPECT_EQ(out.messages[1].first, "dclcomms.v1.island." + a + ".members");
  EXPECT_EQ(out.messages[1].second, n::encode_island_membership(a, "", raw_of(c.addresses)));
  EXPECT_EQ(out.messages[2].second, n::encode_island_membership(b, "", raw_of({addr(4)})));
  EXPECT_EQ(out.messages[3].first, "engine.islands");
  EXPECT_EQ(out.messages[3].second, n::encode_island_status(e.islands()));
  EXPECT_EQ(t.status(), out.messages[3].second);
  EXPECT_EQ(t.island_ids(), (std::vector<std::string>{a, b}));
  EXPECT_EQ(t.sizes(), (std::vector<uint32_t>{3, 1}));
  EXPECT_EQ(out.status_bytes, out.messages[3].second.size());
}

TEST(NatsTick, MovesLeavesAndSwitches) {
  arch::Engine e({});
  for (int i = 1; i <= 3; ++i) e.update(addr(i), static_cast<float>(10 * i), 0, 0);
  e.update(addr(4), 1000, 0, 0);
  { n::Tick first(e, 0, 60'000); }
  const std::string a = *e.island_of(addr(1)), b = *e.island_of(addr(4));
  e.update(addr(3), 1010, 0, 0);  // 3 moves from A to B
  e.disconnect(addr(2));          // 2 leaves A
  n::Tick t(e, 0, 60'000);
  EXPECT_EQ(t.counts().left, 1u);
  EXPECT_EQ(t.counts().changed, 1u);
  EXPECT_EQ(t.touched(), (std::vector<std::string>{a, b}));  // left first, then 3's move
  // B's transport switched: its kept member 4 is re-issued after the arrival 3
  EXPECT_EQ(strs(t.targets(b, true)), (std::vector<std::string>{addr(3), addr(4)}));
  EXPECT_EQ(t.issue(b, true, fixed("fixed:new")), 2u);
  const n::NativeOutput out = t.native_messages();
  EXPECT_EQ(out.island_changed, 2u);
  ASSERT_EQ(out.messages.size(), 4u);  // B changes, A members, B members, status
  const Changes c = decode(out.messages[0].second);
  EXPECT_EQ(c.island, b);
  EXPECT_EQ(c.addresses, (std::vector<std::string>{addr(3), addr(4)}));
  EXPECT_EQ(c.from, (std::vector<std::string>{a, b}));  // a re-issue comes "from" its island
  EXPECT_EQ(c.members.size(), 2u);
  // A: 2 left (disconnect) then 3 left (move); B: 3 joined
  EXPECT_EQ(out.messages[1].second, n::encode_island_membership(a, raw_of({addr(2), addr(3)}), ""));
  EXPECT_EQ(out.messages[2].second, n::encode_island_membership(b, "", raw_of({addr(3)})));
}

TEST(NatsTick, BadAddressesAndIslandIdsAreCountedNotSent) {
  arch::Config cfg;
  cfg.id_prefix = "I:";  // a valid engine prefix, but no subject may carry it
  arch::Engine bad_ids(cfg);
  bad_ids.update(addr(1), 0, 0, 0);
  n::Tick t(bad_ids, 0, 60'000);
  t.issue(t.touched()[0], false, fixed("x:y"));
  const n::NativeOutput out = t.native_messages();
  EXPECT_EQ(out.bad_island_id, 1u);  // the island_changed
  EXPECT_EQ(out.bad_subject, 1u);    // the peer_join
  EXPECT_EQ(out.island_changed, 0u);
  ASSERT_EQ(out.messages.size(), 1u);  // engine.islands only
  arch::Engine e({});
  e.update("not-an-address", 0, 0, 0);
  e.update(addr(2), 1, 0, 0);
  n::Tick u(e, 0, 60'000);
  u.issue(u.touched()[0], false, fixed("x:y"));
  const n::NativeOutput o2 = u.native_messages();
  EXPECT_EQ(o2.bad_address, 2u);
  EXPECT_EQ(o2.island_changed, 1u);
  EXPECT_EQ(decode(o2.messages[0].second).addresses, std::vector<std::string>{addr(2)});
}

TEST(NatsTick, SetIssuedChecksItsLength) {
  arch::Engine e({});
  e.update(addr(1), 0, 0, 0);
  n::Tick t(e, 0, 60'000);
  EXPECT_THROW(t.set_issued(t.touched()[0], false, {}), dclcomms::Error);
}

TEST(NatsTick, RecheckedIslandsAreTouchedAfterTheChanged) {
  arch::Engine e({});
  for (int i = 1; i <= 3; ++i) e.update(addr(i), static_cast<float>(10 * i), 0, 0);
  e.update(addr(4), 1000, 0, 0);
  { n::Tick first(e, 0, 60'000); }
  const std::string a = *e.island_of(addr(1)), b = *e.island_of(addr(4));
  e.update(addr(5), 1001, 0, 0);  // joins B; A does not change
  n::Tick t(e, 0, 60'000, {a, "gone", b});
  EXPECT_EQ(t.touched(), (std::vector<std::string>{b, a, "gone"}));
  ASSERT_NE(t.island(a), nullptr);  // copied although nothing moved in it
  EXPECT_EQ(t.island("gone"), nullptr);
  EXPECT_TRUE(t.targets(a, false).empty());
  EXPECT_EQ(strs(t.targets(a, true)), (std::vector<std::string>{addr(1), addr(2), addr(3)}));
  EXPECT_EQ(t.issue(a, true, fixed("x:y")), 3u);  // a switch: every member re-issued
  const n::NativeOutput out = t.native_messages();
  ASSERT_GE(out.messages.size(), 1u);
  const Changes c = decode(out.messages[0].second);  // the arrival in B has no string
  EXPECT_EQ(c.island, a);
  EXPECT_EQ(c.from, std::vector<std::string>(3, a));
  EXPECT_EQ(t.island_ids(), (std::vector<std::string>{a, b}));
  EXPECT_EQ(t.sizes(), (std::vector<uint32_t>{3, 2}));
}
