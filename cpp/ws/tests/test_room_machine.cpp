// The RFC-5 room state machine (transports.md 1.1-1.3) without sockets: the
// Hub driven through the in-memory endpoint, real auth chains and HS256
// tokens. One test per row of the spec tables, plus backpressure and the
// sender token bucket (1.2).

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "clients.hpp"
#include "dclcomms/auth/jwt.hpp"
#include "fake_endpoint.hpp"

namespace dclcomms::ws::testing {
namespace {

constexpr int64_t kHour = 3'600'000;
const std::string kSecret = "room-secret";

Config room_config() {
  Config c;
  c.connector = false;
  return c;
}

codec::Value last(const Conn& c) {
  EXPECT_FALSE(c->sent.empty());
  return ws_packet(c->sent.back().payload);
}

// Every frame sent to c after the first `from`, decoded.
std::vector<codec::Value> frames(const Conn& c, size_t from = 0) {
  std::vector<codec::Value> out;
  for (size_t i = from; i < c->sent.size(); ++i) out.push_back(ws_packet(c->sent[i].payload));
  return out;
}

void expect_closed(const Conn& c, int code, const std::string& reason) {
  ASSERT_TRUE(c->close_code.has_value()) << "still open";
  EXPECT_EQ(*c->close_code, code) << c->close_reason;
  EXPECT_EQ(c->close_reason, reason);
  EXPECT_TRUE(c->reported_closed);
}

uint32_t alias_of(const Conn& c) {
  // The welcome is the frame after the challenge.
  for (const auto& f : frames(c)) {
    if (member(f) == "welcomeMessage") {
      return static_cast<uint32_t>(path(f, "welcomeMessage.alias").as_int());
    }
  }
  ADD_FAILURE() << "no welcome";
  return 0;
}

std::string token(const std::string& sub, const std::string& room, int64_t exp_s,
                  const std::string& secret = kSecret) {
  nlohmann::ordered_json claims = {{"sub", sub}, {"room", room}, {"exp", exp_s}};
  return auth::jwt_encode(claims, secret);
}

class Rooms : public ::testing::Test {
 protected:
  FakeEndpoint ep{room_config()};
  Wallet alice{11}, bob{12}, carol{13};
};

TEST_F(Rooms, InvalidRoomIdIs4011) {
  for (const std::string& id :
       {std::string("bad%20id"), std::string("a/b"), std::string(), std::string(129, 'r')}) {
    Conn c = ep.connect("/rooms/" + id);
    ASSERT_NE(c, nullptr);
    expect_closed(c, 4011, "invalid room id");
  }
  Conn ok = ep.connect("/rooms/" + std::string(128, 'r'));
  EXPECT_TRUE(ok->open());
  Conn chars = ep.connect("/rooms/A-z_0.9:@x");
  EXPECT_TRUE(chars->open());
  EXPECT_EQ(ep.counter("rooms", "invalid_room_id"), 4u);
}

TEST_F(Rooms, BadAddressIs4002) {
  Conn c = ep.connect("/rooms/plaza");
  ep.receive(c, peer_identification("0x1234"));
  expect_closed(c, 4002, "invalid address");
  EXPECT_EQ(ep.counter("rooms", "closed_invalid_address"), 1u);
}

TEST(RoomsFull, TheMaxUsersPlusOneIsKicked4007AtIdentificationAndAfterAuth) {
  Config cfg = room_config();
  cfg.rooms_max_users = 2;
  FakeEndpoint ep(cfg);
  Wallet a(1), b(2), c(3), d(4);
  join_room(ep, a, "plaza");
  // d identifies while there is room; the room fills before its check.
  Conn late = ep.connect("/rooms/plaza");
  ep.receive(late, peer_identification(d.address()));
  join_room(ep, b, "plaza");
  Conn full = ep.connect("/rooms/plaza");
  ep.receive(full, peer_identification(c.address()));
  EXPECT_EQ(path(last(full), "peerKicked.reason").as_string(),
            "This world is full. Try again later.");
  expect_closed(full, 4007, "room full: This world is full. Try again later.");
  ep.receive(late,
             signed_challenge_for_server(d.auth_chain(last_challenge(late), ep.unix_ms() + kHour)));
  ep.finish_verifications();
  EXPECT_EQ(member(last(late)), "peerKicked");
  expect_closed(late, 4007, "room full: This world is full. Try again later.");
  EXPECT_EQ(ep.counter("rooms", "kicked_full"), 2u);
  // Another room is not affected.
  EXPECT_TRUE(join_room(ep, c, "bar")->open());
}

TEST_F(Rooms, OtherMemberBeforeCompletionIs4000) {
  Conn c = ep.connect("/rooms/plaza");
  ep.receive(c, peer_update(1, "x", false));
  expect_closed(c, 4000, "protocol violation: expected peer_identification");
  Conn d = ep.connect("/rooms/plaza");
  ep.receive(d, peer_identification(alice.address()));
  ep.receive(d, peer_identification(alice.address()));
  expect_closed(d, 4000, "protocol violation: expected signed_challenge_for_server");
}

TEST_F(Rooms, ChallengeAndAlreadyConnectedInAnyRoom) {
  Conn c = ep.connect("/rooms/plaza");
  ep.receive(c, peer_identification(alice.address()));
  const std::string ch = last_challenge(c);
  EXPECT_EQ(ch.rfind("dcl-", 0), 0u);
  EXPECT_EQ(ch.size(), 36u);
  EXPECT_FALSE(path(last(c), "challengeMessage.alreadyConnected").as_bool());
  join_room(ep, bob, "bar");
  Conn d = ep.connect("/rooms/plaza");
  ep.receive(d, peer_identification(bob.address()));
  EXPECT_TRUE(path(last(d), "challengeMessage.alreadyConnected").as_bool());
}

// With several shards (server_impl.hpp), the hub reports room joins and
// leaves to the directory, asks it for already_connected, and kicks its member
// when another shard admitted the same address (only the session named).
TEST_F(Rooms, ShardDirectoryReportsAndKickRoomMember) {
  Conn a = join_room(ep, alice, "plaza");
  Conn w = join_room(ep, bob, "plaza");
  const uint32_t aa = alias_of(a), ab = alias_of(w);
  using R = FakeEndpoint::RoomReport;
  EXPECT_EQ(ep.room_reports,
            (std::vector<R>{{true, alice.address(), aa}, {true, bob.address(), ab}}));
  ep.kick_room_member(alice.address(), aa + 1000);  // another session: not this one
  EXPECT_TRUE(a->open());
  ep.kick_room_member(carol.address(), aa);  // not a member here
  EXPECT_TRUE(a->open());
  const size_t nw = w->sent.size();
  ep.kick_room_member(alice.address(), aa);
  EXPECT_EQ(path(last(a), "peerKicked.reason").as_string(),
            "Already connected: a new session for this address replaced this one");
  expect_closed(a, 4006, "Already connected: a new session for this address replaced this one");
  auto fw = frames(w, nw);
  ASSERT_EQ(fw.size(), 1u);
  EXPECT_EQ(path(fw[0], "peerLeaveMessage.alias").as_int(), aa);
  EXPECT_EQ(ep.room_reports.back(), (R{false, alice.address(), aa}));
  EXPECT_EQ(ep.counter("rooms", "kicked_duplicate"), 1u);
  ep.rooms_elsewhere.insert(carol.address());
  Conn c = ep.connect("/rooms/bar");
  ep.receive(c, peer_identification(carol.address()));
  EXPECT_TRUE(path(last(c), "challengeMessage.alreadyConnected").as_bool());
}

TEST_F(Rooms, AuthFailuresAre4003) {
  Conn bad = ep.connect("/rooms/plaza");
  ep.receive(bad, peer_identification(alice.address()));
  ep.receive(bad, signed_challenge_for_server(alice.auth_chain("dcl-other", ep.unix_ms() + kHour)));
  ep.finish_verifications();
  ASSERT_TRUE(bad->close_code.has_value());
  EXPECT_EQ(*bad->close_code, 4003);
  EXPECT_EQ(bad->close_reason.rfind("auth failed: ", 0), 0u);
  Conn other = ep.connect("/rooms/plaza");
  ep.receive(other, peer_identification(alice.address()));
  ep.receive(other, signed_challenge_for_server(
                        bob.auth_chain(last_challenge(other), ep.unix_ms() + kHour)));
  ep.finish_verifications();
  expect_closed(other, 4003, "auth failed: address_mismatch");
  EXPECT_EQ(ep.counter("rooms", "auth_failed"), 2u);
  EXPECT_EQ(ep.counter("rooms", "users"), 0u);
}

TEST_F(Rooms, WelcomeListsEarlierMembersThenPeerJoinGoesToTheOthers) {
  Conn a = join_room(ep, alice, "plaza");
  Conn b = join_room(ep, bob, "plaza");
  Conn c = join_room(ep, carol, "plaza");
  const uint32_t ia = alias_of(a), ib = alias_of(b), ic = alias_of(c);
  EXPECT_LT(ia, ib);
  EXPECT_LT(ib, ic);
  // a: challenge, welcome{} , peer_join(b), peer_join(c)
  auto fa = frames(a);
  ASSERT_EQ(fa.size(), 4u);
  EXPECT_EQ(member(fa[0]), "challengeMessage");
  EXPECT_TRUE(path(fa[1], "welcomeMessage.peerIdentities").as_object().empty());
  EXPECT_EQ(path(fa[2], "peerJoinMessage.alias").as_int(), ib);
  EXPECT_EQ(path(fa[2], "peerJoinMessage.address").as_string(), bob.address());
  EXPECT_EQ(path(fa[3], "peerJoinMessage.alias").as_int(), ic);
  // c's welcome: earlier members in join order; c never gets its own join.
  auto fc = frames(c);
  ASSERT_EQ(fc.size(), 2u);
  const auto& ids = path(fc[1], "welcomeMessage.peerIdentities").as_object();
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0].first, std::to_string(ia));
  EXPECT_EQ(ids[0].second.as_string(), alice.address());
  EXPECT_EQ(ids[1].first, std::to_string(ib));
  EXPECT_EQ(ids[1].second.as_string(), bob.address());
  EXPECT_EQ(ep.counter("rooms", "users"), 3u);
  EXPECT_EQ(ep.counter("rooms", "rooms"), 1u);
}

TEST_F(Rooms, RelayRewritesFromAliasAndNeverEchoes) {
  Conn a = join_room(ep, alice, "plaza");
  Conn b = join_room(ep, bob, "plaza");
  Conn c = join_room(ep, carol, "elsewhere");
  const size_t na = a->sent.size(), nb = b->sent.size(), nc = c->sent.size();
  const uint64_t delivered = ep.counter("rooms", "updates_delivered");  // peer_join included
  ep.receive(a, peer_update(999, std::string("\x00\x01payload", 9), true));
  ep.receive(a, peer_update(0, "second", false));
  EXPECT_EQ(a->sent.size(), na);  // no echo
  EXPECT_EQ(c->sent.size(), nc);  // other rooms see nothing
  auto fb = frames(b, nb);
  ASSERT_EQ(fb.size(), 2u);
  EXPECT_EQ(path(fb[0], "peerUpdateMessage.fromAlias").as_int(), alias_of(a));
  EXPECT_EQ(path(fb[0], "peerUpdateMessage.body").as_string(), "AAFwYXlsb2Fk");  // base64
  EXPECT_TRUE(path(fb[0], "peerUpdateMessage.unreliable").as_bool());
  EXPECT_EQ(path(fb[1], "peerUpdateMessage.body").as_string(), "c2Vjb25k");
  EXPECT_FALSE(path(fb[1], "peerUpdateMessage.unreliable").as_bool());
  EXPECT_EQ(ep.counter("rooms", "updates_received"), 2u);
  EXPECT_EQ(ep.counter("rooms", "updates_delivered") - delivered, 2u);
}

TEST_F(Rooms, OtherMembersAfterCompletionAreIgnored) {
  Conn a = join_room(ep, alice, "plaza");
  ep.receive(a, peer_identification(alice.address()));
  ep.receive(a, signed_challenge_for_server("[]"));
  EXPECT_TRUE(a->open());
  EXPECT_EQ(ep.counter("rooms", "messages_ignored"), 2u);
}

TEST_F(Rooms, UndecodableIs1007) {
  Conn c = ep.connect("/rooms/plaza");
  ep.receive(c, std::string("\x1a\x7f", 2));
  expect_closed(c, 1007, "Cannot decode WsPacket");
  Conn a = join_room(ep, alice, "plaza");
  ep.receive(a, std::string("\xff", 1));
  expect_closed(a, 1007, "Cannot decode WsPacket");
  EXPECT_EQ(ep.counter("rooms", "closed_decode"), 2u);
}

TEST_F(Rooms, StageTimerIs4001) {
  const int64_t t = ep.config().rooms_handshake_timeout_ms;
  Conn c = ep.connect("/rooms/plaza");
  Conn d = ep.connect("/rooms/plaza");
  ep.advance(t / 2);
  ep.receive(d, peer_identification(alice.address()));
  ep.advance(t / 2);
  expect_closed(c, 4001, "handshake timeout");
  EXPECT_TRUE(d->open());
  ep.advance(t / 2);
  expect_closed(d, 4001, "handshake timeout");
  Conn e = join_room(ep, bob, "plaza");
  ep.advance(2 * t);
  EXPECT_TRUE(e->open());  // no timer once admitted
}

TEST_F(Rooms, LeavingBroadcastsPeerLeaveAndEmptyRoomsVanish) {
  Conn a = join_room(ep, alice, "plaza");
  Conn b = join_room(ep, bob, "plaza");
  const size_t na = a->sent.size();
  ep.disconnect(b);
  auto fa = frames(a, na);
  ASSERT_EQ(fa.size(), 1u);
  EXPECT_EQ(path(fa[0], "peerLeaveMessage.alias").as_int(), alias_of(b));
  EXPECT_EQ(ep.counter("rooms", "users"), 1u);
  ep.disconnect(a);
  EXPECT_EQ(ep.counter("rooms", "rooms"), 0u);
  EXPECT_TRUE(ep.stats().room_details.empty());
}

TEST_F(Rooms, DuplicateAddressInAnyRoomReplacesTheOldSocket4006) {
  Conn old = join_room(ep, alice, "plaza");
  Conn watcher = join_room(ep, bob, "plaza");
  const size_t nw = watcher->sent.size();
  Conn fresh = join_room(ep, alice, "bar");
  EXPECT_EQ(path(last(old), "peerKicked.reason").as_string(),
            "Already connected: a new session for this address replaced this one");
  expect_closed(old, 4006, "Already connected: a new session for this address replaced this one");
  auto fw = frames(watcher, nw);
  ASSERT_EQ(fw.size(), 1u);
  EXPECT_EQ(member(fw[0]), "peerLeaveMessage");
  EXPECT_TRUE(fresh->open());
  EXPECT_EQ(ep.counter("rooms", "kicked_duplicate"), 1u);
  EXPECT_EQ(ep.counter("rooms", "users"), 2u);
  // The room filled during the check, but the replaced member's seat is the
  // new session's.
  Config cfg = room_config();
  cfg.rooms_max_users = 2;
  FakeEndpoint two(cfg);
  Conn first = join_room(two, alice, "duo");
  Conn again = two.connect("/rooms/duo");
  two.receive(again, peer_identification(alice.address()));
  join_room(two, bob, "duo");  // full now
  two.receive(again, signed_challenge_for_server(
                         alice.auth_chain(last_challenge(again), two.unix_ms() + kHour)));
  two.finish_verifications();
  EXPECT_TRUE(again->open());
  EXPECT_EQ(member(last(again)), "welcomeMessage");
  EXPECT_EQ(first->close_code, std::optional<int>(4006));
  EXPECT_EQ(two.counter("rooms", "users"), 2u);
}

TEST_F(Rooms, AliasesAreTakenAtUpgradeAndNeverReused) {
  Conn a = join_room(ep, alice, "plaza");
  Conn failed = ep.connect("/rooms/bad%20id");  // takes an alias too
  Conn b = join_room(ep, bob, "plaza");
  EXPECT_GE(alias_of(b), alias_of(a) + 2);
  ep.disconnect(a);
  Conn c = join_room(ep, alice, "plaza");
  EXPECT_GT(alias_of(c), alias_of(b));
}

// ---- 1.3: the optional access token ----------------------------------------------

TEST(RoomTokens, OptionalModeChecksATokenOnlyWhenPresent) {
  Config cfg = room_config();
  cfg.ws_room_secret = kSecret;
  FakeEndpoint ep(cfg);
  Wallet a(21), b(22);
  const int64_t exp = ep.unix_ms() / 1000 + 300;
  EXPECT_TRUE(join_room(ep, a, "plaza")->open());  // no token: fine
  EXPECT_TRUE(
      join_room(ep, b, "plaza", "access_token=" + token(b.address(), "plaza", exp))->open());
  struct Case {
    std::string query, why;
  };
  const std::vector<Case> cases = {
      {"access_token=", "missing"},
      {"access_token=" + token(b.address(), "plaza", exp, "other-secret"), "bad_signature"},
      {"access_token=" + token(b.address(), "bar", exp), "wrong_room"},
      {"access_token=" + token("not-an-address", "plaza", exp), "bad_sub"},
      {"access_token=" + token(b.address(), "plaza", ep.unix_ms() / 1000 - 60), "expired"},
      {"access_token=abc", "malformed"},
  };
  for (const auto& k : cases) {
    Conn c = ep.connect("/rooms/plaza?" + k.query);
    expect_closed(c, 4010, "invalid access token: " + k.why);
  }
  EXPECT_EQ(ep.counter("rooms", "token_rejected"), cases.size());
  // A valid token for someone else: the signer must be its sub.
  Conn c = ep.connect("/rooms/plaza?access_token=" + token(b.address(), "plaza", exp));
  ep.receive(c, peer_identification(a.address()));
  ep.receive(c, signed_challenge_for_server(a.auth_chain(last_challenge(c), ep.unix_ms() + kHour)));
  ep.finish_verifications();
  expect_closed(c, 4003, "auth failed: address_mismatch");
}

TEST(RoomTokens, RequiredModeRejectsAMissingToken) {
  Config cfg = room_config();
  cfg.ws_room_secret = kSecret;
  cfg.ws_room_require_token = true;
  FakeEndpoint ep(cfg);
  Wallet a(31);
  expect_closed(ep.connect("/rooms/plaza"), 4010, "invalid access token: missing");
  const int64_t exp = ep.unix_ms() / 1000 + 300;
  EXPECT_TRUE(
      join_room(ep, a, "plaza", "access_token=" + token(a.address(), "plaza", exp))->open());
}

TEST(RoomTokens, ATokenWithoutASecretIsRejected) {
  FakeEndpoint ep(room_config());
  Wallet a(41);
  Conn c = ep.connect("/rooms/plaza?access_token=" +
                      token(a.address(), "plaza", ep.unix_ms() / 1000 + 300));
  expect_closed(c, 4010, "invalid access token: no_secret_configured");
}

// ---- 1.2: backpressure and the sender token bucket ------------------------------

TEST(RoomBackpressure, UnreliableDroppedAboveSoftReliableClosesAboveHard) {
  Config cfg = room_config();
  cfg.rooms_soft_limit_bytes = 1000;
  cfg.rooms_hard_limit_bytes = 3000;
  FakeEndpoint ep(cfg);
  Wallet a(51), b(52), c(53);
  Conn sender = join_room(ep, a, "plaza");
  Conn slow = join_room(ep, b, "plaza");
  Conn fast = join_room(ep, c, "plaza");
  slow->reading = false;
  const std::string body(500, 'u');
  const size_t before_fast = fast->sent.size();
  ep.receive(sender, peer_update(0, body, true));
  const size_t f = slow->buffered;  // one encoded update (510 bytes)
  ASSERT_GT(f, 500u);
  ASSERT_LT(2 * f, 2 * cfg.rooms_soft_limit_bytes);
  // Unreliable: delivered while the receiver holds at most the soft limit.
  ep.receive(sender, peer_update(0, body, true));  // 1 f queued: sent
  ep.receive(sender, peer_update(0, body, true));  // 2 f > soft: dropped
  ep.receive(sender, peer_update(0, body, true));
  EXPECT_EQ(slow->buffered, 2 * f);
  EXPECT_EQ(ep.counter("rooms", "unreliable_dropped"), 2u);
  EXPECT_EQ(fast->sent.size(), before_fast + 4);  // the others are not affected
  // Reliable: queued past the soft limit while it fits under the hard one.
  int reliable_queued = 0;
  for (size_t step = 0; slow->open();) {
    const size_t before = slow->buffered;
    ep.receive(sender, peer_update(0, body, false));
    if (!slow->open()) {
      EXPECT_GT(before + step, cfg.rooms_hard_limit_bytes);  // this one would not fit
      break;
    }
    step = slow->buffered - before;
    ASSERT_GT(step, 500u);
    ++reliable_queued;
  }
  EXPECT_EQ(reliable_queued, 3);  // 2 f + 3 r <= 3000 < 2 f + 4 r
  expect_closed(slow, 4008, "receiver too slow: send queue over 3000 bytes");
  EXPECT_EQ(ep.counter("rooms", "closed_slow"), 1u);
  EXPECT_EQ(ep.counter("rooms", "unreliable_dropped"), 2u);  // reliable is never dropped
  // The others got every update, then the slow one's leave.
  auto ff = frames(fast, before_fast);
  ASSERT_GE(ff.size(), 2u);
  EXPECT_EQ(member(ff[ff.size() - 2]), "peerUpdateMessage");
  EXPECT_EQ(path(ff.back(), "peerLeaveMessage.alias").as_int(), alias_of(slow));
}

TEST(RoomSenderBucket, ExcessUnreliableIsDroppedExcessReliableIs4009) {
  Config cfg = room_config();
  cfg.rooms_sender_max_msgs_per_s = 2;
  FakeEndpoint ep(cfg);
  Wallet a(61), b(62), c(63);
  Conn sender = join_room(ep, a, "plaza");
  Conn receiver = join_room(ep, b, "plaza");
  const size_t n0 = receiver->sent.size();
  ep.receive(sender, peer_update(0, "1", true));
  ep.receive(sender, peer_update(0, "2", false));
  ep.receive(sender, peer_update(0, "3", true));  // over: dropped
  EXPECT_TRUE(sender->open());
  EXPECT_EQ(receiver->sent.size(), n0 + 2);
  EXPECT_EQ(ep.counter("rooms", "rate_dropped"), 1u);
  ep.advance(500);  // refills one message
  ep.receive(sender, peer_update(0, "4", false));
  EXPECT_EQ(receiver->sent.size(), n0 + 3);
  ep.receive(sender, peer_update(0, "5", false));  // over, reliable
  expect_closed(sender, 4009, "rate limit: sender over its token bucket");
  EXPECT_EQ(ep.counter("rooms", "closed_rate"), 1u);

  Config bytes = room_config();
  bytes.rooms_sender_max_bytes_per_s = 100;
  FakeEndpoint eb(bytes);
  Conn s2 = join_room(eb, c, "plaza");
  join_room(eb, b, "plaza");
  eb.receive(s2, peer_update(0, std::string(90, 'x'), true));
  eb.receive(s2, peer_update(0, std::string(20, 'x'), true));  // 10 bytes left: dropped
  EXPECT_EQ(eb.counter("rooms", "rate_dropped"), 1u);
  eb.receive(s2, peer_update(0, std::string(20, 'x'), false));
  expect_closed(s2, 4009, "rate limit: sender over its token bucket");
}

// ---- scene rooms (/scene-rooms/<id>: the gatekeeper's built-in rooms) -----------

Config scene_config() {
  Config c = room_config();
  c.scene_rooms = true;
  c.ws_room_secret = kSecret;
  return c;
}

Conn join_scene(FakeEndpoint& ep, const Wallet& w, const std::string& room) {
  Conn c = ep.connect("/scene-rooms/" + room +
                      "?access_token=" + token(w.address(), room, ep.unix_ms() / 1000 + 300));
  ep.receive(c, peer_identification(w.address()));
  ep.receive(c, signed_challenge_for_server(w.auth_chain(last_challenge(c), ep.unix_ms() + kHour)));
  ep.finish_verifications();
  return c;
}

TEST(SceneRooms, AMembershipOfTheirOwnBesideIslandRoomsAndAlwaysAToken) {
  FakeEndpoint ep(scene_config());
  Wallet a(61), b(62);
  Conn island = join_room(ep, a, "I1");
  Conn scene = join_scene(ep, a, "main:s1");
  Conn other = join_scene(ep, b, "main:s1");
  EXPECT_TRUE(island->open());  // no duplicate kick across the two kinds
  EXPECT_TRUE(scene->open());
  EXPECT_EQ(member(frames(other).back()), "welcomeMessage");
  EXPECT_EQ(ep.hub().room_members(true, "main:s1"),
            (std::vector<std::string>{a.address(), b.address()}));
  EXPECT_EQ(ep.hub().room_members(false, "I1"), std::vector<std::string>{a.address()});
  EXPECT_TRUE(ep.hub().room_members(false, "main:s1").empty());
  EXPECT_EQ(ep.counter("rooms", "scene_users"), 2u);
  EXPECT_EQ(ep.counter("rooms", "users"), 1u);
  // no token, even though island rooms do not require one here
  expect_closed(ep.connect("/scene-rooms/main:s1"), 4010, "invalid access token: missing");
  // a second scene-room session of a replaces the first (newest wins), the island stays
  Conn again = join_scene(ep, a, "main:s2");
  expect_closed(scene, 4006, "Already connected: a new session for this address replaced this one");
  EXPECT_TRUE(again->open());
  EXPECT_TRUE(island->open());
}

TEST(SceneRooms, KickIsPeerKickedThen4005AndBarsTheAddressForAWhile) {
  FakeEndpoint ep(scene_config());
  Wallet a(71), b(72);
  Conn island = join_room(ep, a, "I1");
  Conn sa = join_scene(ep, a, "main:s1");
  Conn sb = join_scene(ep, b, "main:s1");
  size_t b_frames = sb->sent.size();
  ep.kick_room_member(true, "main:s2", a.address(), "wrong room", 0);  // not there
  EXPECT_TRUE(sa->open());
  ep.kick_room_member(true, "main:s1", a.address(), "banned from this scene", 60'000);
  EXPECT_EQ(path(frames(sa).back(), "peerKicked.reason").as_string(), "banned from this scene");
  expect_closed(sa, 4005, "banned from this scene");
  EXPECT_EQ(member(frames(sb, b_frames).back()), "peerLeaveMessage");
  EXPECT_TRUE(island->open());  // island rooms untouched
  EXPECT_EQ(ep.counter("rooms", "kicked_by_server"), 1u);
  // a token minted before the ban cannot rejoin while barred; other rooms can be joined
  Conn back = join_scene(ep, a, "main:s1");
  EXPECT_EQ(path(frames(back).back(), "peerKicked.reason").as_string(), "banned from this room");
  expect_closed(back, 4005, "banned from this room");
  EXPECT_EQ(ep.counter("rooms", "refused_barred"), 1u);
  EXPECT_TRUE(join_scene(ep, a, "main:s3")->open());
  ep.advance(60'001);
  EXPECT_TRUE(join_scene(ep, a, "main:s1")->open());
  // every room of the kind (platform bans)
  ep.kick_room_member(true, "", b.address(), "banned", 30'000);
  expect_closed(sb, 4005, "banned");
  expect_closed(join_scene(ep, b, "main:s9"), 4005, "banned from this room");
}

TEST(SceneRooms, UnbarLiftsTheBarOfThatRoomOrOfEveryRoomOnly) {
  FakeEndpoint ep(scene_config());
  Wallet a(73);
  Conn s1 = join_scene(ep, a, "main:s1");
  ep.kick_room_member(true, "main:s1", a.address(), "banned from this scene", 60'000);
  expect_closed(s1, 4005, "banned from this scene");
  ep.kick_room_member(true, "", a.address(), "banned", 60'000);
  ep.unbar_room_member(true, "main:s2", a.address());  // no bar there: nothing happens
  ep.unbar_room_member(false, "", a.address());        // island rooms: not these bars
  expect_closed(join_scene(ep, a, "main:s2"), 4005, "banned from this room");
  ep.unbar_room_member(true, "", a.address());  // the every-room bar (a platform unban)
  EXPECT_TRUE(join_scene(ep, a, "main:s2")->open());
  expect_closed(join_scene(ep, a, "main:s1"), 4005, "banned from this room");  // its own bar
  ep.unbar_room_member(true, "main:s1", a.address());                          // a scene unban
  EXPECT_TRUE(join_scene(ep, a, "main:s1")->open());
  EXPECT_EQ(ep.counter("rooms", "refused_barred"), 2u);
}

}  // namespace
}  // namespace dclcomms::ws::testing
