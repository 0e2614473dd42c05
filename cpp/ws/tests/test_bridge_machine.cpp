// /bridge sessions and room taps (control-plane.md 5) without sockets: the
// Hub driven through the in-memory endpoint with real room members.

#include <gtest/gtest.h>

#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "clients.hpp"
#include "dclcomms/auth/jwt.hpp"
#include "fake_endpoint.hpp"

namespace dclcomms::ws::testing {
namespace {

Config bridge_config() {
  Config c;
  c.connector = false;
  c.bridge = true;
  return c;
}

template <class T>
std::vector<T> only(const std::vector<Event>& events) {
  std::vector<T> out;
  for (const auto& e : events) {
    if (const auto* t = std::get_if<T>(&e)) out.push_back(*t);
  }
  return out;
}

std::vector<codec::Value> frames(const Conn& c, size_t from = 0) {
  std::vector<codec::Value> out;
  for (size_t i = from; i < c->sent.size(); ++i) out.push_back(ws_packet(c->sent[i].payload));
  return out;
}

uint32_t alias_of(const Conn& c) {
  for (const auto& f : frames(c)) {
    if (member(f) == "welcomeMessage") {
      return static_cast<uint32_t>(path(f, "welcomeMessage.alias").as_int());
    }
  }
  ADD_FAILURE() << "no welcome";
  return 0;
}

class Bridge : public ::testing::Test {
 protected:
  FakeEndpoint ep{bridge_config()};
  Wallet alice{21}, bob{22}, carol{23};
};

TEST_F(Bridge, NotServedUnlessConfigured) {
  Config c;
  FakeEndpoint plain(c);
  EXPECT_EQ(plain.connect("/bridge"), nullptr);
  EXPECT_NE(ep.connect("/bridge"), nullptr);
}

TEST_F(Bridge, FramesReachTheEmbedderBeforeAndAfterAccept) {
  Conn c = ep.connect("/bridge?v=1");
  auto opened = only<BridgeOpened>(ep.events());
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].query, "v=1");
  uint64_t id = opened[0].id;
  ep.receive(c, R"({"type":"auth","key":"k"})", FrameType::Text);
  auto f = only<BridgeFrame>(ep.events());
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].id, id);
  EXPECT_EQ(f[0].text, R"({"type":"auth","key":"k"})");
  ep.accept_bridge(id);
  ep.send_bridge(id, R"({"type":"welcome"})");
  ASSERT_EQ(c->sent.size(), 1u);
  EXPECT_EQ(c->sent[0].type, FrameType::Text);
  EXPECT_EQ(c->sent[0].payload, R"({"type":"welcome"})");
  ep.advance(bridge_config().bridge_auth_timeout_ms + 1);
  EXPECT_TRUE(c->open());  // accepted: no auth timer
  EXPECT_EQ(ep.counter("bridge", "welcomed"), 1u);
  EXPECT_EQ(ep.counter("bridge", "sessions"), 1u);
  ep.disconnect(c);
  auto closed = only<BridgeClosed>(ep.events());
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].id, id);
  EXPECT_EQ(ep.counter("bridge", "sessions"), 0u);
}

TEST_F(Bridge, NotAcceptedInTimeIs4001) {
  Conn c = ep.connect("/bridge");
  ep.advance(bridge_config().bridge_auth_timeout_ms);
  ASSERT_TRUE(c->close_code.has_value());
  EXPECT_EQ(*c->close_code, 4001);
  EXPECT_EQ(c->close_reason, "authentication timeout");
  EXPECT_EQ(ep.counter("bridge", "closed_timeout"), 1u);
  EXPECT_EQ(only<BridgeClosed>(ep.events()).size(), 1u);
}

TEST_F(Bridge, BinaryFramesAre1003AndFloodsAre4009) {
  Conn c = ep.connect("/bridge");
  ep.receive(c, "\x01\x02", FrameType::Binary);
  EXPECT_EQ(*c->close_code, 1003);
  Conn d = ep.connect("/bridge");
  for (int i = 0; i <= bridge_config().bridge_max_frames_per_s; ++i) {
    ep.receive(d, "{}", FrameType::Text);
  }
  ASSERT_TRUE(d->close_code.has_value());
  EXPECT_EQ(*d->close_code, 4009);
  EXPECT_EQ(ep.counter("bridge", "closed_rate"), 1u);
}

TEST_F(Bridge, CloseByTheEmbedderAndFrameLimit) {
  Conn c = ep.connect("/bridge");
  uint64_t id = only<BridgeOpened>(ep.events()).at(0).id;
  ep.close_bridge(id, 4003, "invalid credential: unknown_key");
  EXPECT_EQ(*c->close_code, 4003);
  EXPECT_EQ(c->close_reason, "invalid credential: unknown_key");
  EXPECT_EQ(ep.counter("bridge", "closed_by_server"), 1u);
  ep.send_bridge(id, "late");  // ignored: gone
  EXPECT_TRUE(c->sent.empty());
  Conn big = ep.connect("/bridge");
  ep.receive(big, std::string(bridge_config().bridge_max_frame_bytes + 1, 'x'), FrameType::Text);
  EXPECT_EQ(*big->close_code, 1009);
}

TEST_F(Bridge, UntappedRoomsProduceNoEvents) {
  Conn a = join_room(ep, alice, "plaza");
  Conn b = join_room(ep, bob, "plaza");
  ep.events();
  ep.receive(a, peer_update(0, "hello", false));
  EXPECT_TRUE(only<RoomMessage>(ep.events()).empty());
  EXPECT_EQ(ep.counter("rooms", "tapped_messages"), 0u);
}

TEST_F(Bridge, TappedRoomCopiesUpdatesWithTheSenderAddress) {
  Conn a = join_room(ep, alice, "plaza");
  Conn b = join_room(ep, bob, "plaza");
  Conn other = join_room(ep, carol, "bar");
  ep.set_room_tap("plaza", true);
  ep.events();
  ep.receive(a, peer_update(0, "hello", true));
  ep.receive(other, peer_update(0, "elsewhere", false));
  auto msgs = only<RoomMessage>(ep.events());
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].room, "plaza");
  EXPECT_EQ(msgs[0].from, alice.address());
  EXPECT_EQ(msgs[0].body, "hello");
  EXPECT_TRUE(msgs[0].unreliable);
  EXPECT_EQ(msgs[0].received_ms, ep.unix_ms());
  // members still get it as before
  EXPECT_EQ(path(frames(b).back(), "peerUpdateMessage.body").as_string(), "aGVsbG8=");  // base64
  ep.set_room_tap("plaza", false);
  ep.receive(a, peer_update(0, "again", false));
  EXPECT_TRUE(only<RoomMessage>(ep.events()).empty());
  EXPECT_EQ(ep.counter("rooms", "tapped_messages"), 1u);
}

TEST_F(Bridge, InjectionReachesEveryMemberFromTheServerIdentity) {
  Conn a = join_room(ep, alice, "plaza");
  Conn b = join_room(ep, bob, "plaza");
  size_t na = a->sent.size(), nb = b->sent.size();
  ep.inject_room("plaza", "server:door", "open", false);
  for (const Conn& c : {a, b}) {
    auto fs = frames(c, c == a ? na : nb);
    ASSERT_EQ(fs.size(), 2u);
    EXPECT_EQ(member(fs[0]), "peerJoinMessage");
    EXPECT_EQ(path(fs[0], "peerJoinMessage.address").as_string(), "server:door");
    auto alias = path(fs[0], "peerJoinMessage.alias").as_int();
    EXPECT_NE(alias, alias_of(a));
    EXPECT_NE(alias, alias_of(b));
    EXPECT_EQ(path(fs[1], "peerUpdateMessage.fromAlias").as_int(), alias);
    EXPECT_EQ(path(fs[1], "peerUpdateMessage.body").as_string(), "b3Blbg==");  // base64
  }
  // A second injection reuses the alias without another peer_join.
  na = a->sent.size();
  ep.inject_room("plaza", "server:door", "closed", true);
  auto fs = frames(a, na);
  ASSERT_EQ(fs.size(), 1u);
  EXPECT_EQ(member(fs[0]), "peerUpdateMessage");
  EXPECT_TRUE(path(fs[0], "peerUpdateMessage.unreliable").as_bool());
  EXPECT_EQ(ep.counter("rooms", "injected"), 2u);
}

TEST_F(Bridge, NewcomersSeeTheInjectorInTheirWelcomeUntilReleased) {
  Conn a = join_room(ep, alice, "plaza");
  ep.inject_room("plaza", "server:door", "open", false);
  Conn b = join_room(ep, bob, "plaza");
  bool listed = false;
  for (const auto& f : frames(b)) {
    if (member(f) != "welcomeMessage") continue;
    const auto& ids = path(f, "welcomeMessage.peerIdentities");
    for (const auto& [k, v] : ids.as_object()) {
      if (v.as_string() == "server:door") listed = true;
    }
  }
  EXPECT_TRUE(listed);
  size_t nb = b->sent.size();
  ep.release_room_identity("plaza", "server:door");
  auto fs = frames(b, nb);
  ASSERT_EQ(fs.size(), 1u);
  EXPECT_EQ(member(fs[0]), "peerLeaveMessage");
  Conn c = join_room(ep, carol, "plaza");
  for (const auto& f : frames(c)) {
    if (member(f) != "welcomeMessage") continue;
    for (const auto& [k, v] : path(f, "welcomeMessage.peerIdentities").as_object()) {
      EXPECT_NE(v.as_string(), "server:door");
    }
  }
}

TEST_F(Bridge, InjectionIntoAnEmptyRoomOrTooBigIsDroppedAndCounted) {
  ep.inject_room("nowhere", "server:x", "hi", false);
  EXPECT_EQ(ep.counter("rooms", "injected_no_room"), 1u);
  Conn a = join_room(ep, alice, "plaza");
  size_t na = a->sent.size();
  ep.inject_room("plaza", "server:x", std::string(bridge_config().max_frame_bytes + 1, 'x'), false);
  EXPECT_EQ(ep.counter("rooms", "injected_too_big"), 1u);
  EXPECT_EQ(a->sent.size(), na);
}

TEST_F(Bridge, InjectedUpdatesAreTappedAndTheRoomForgetsInjectorsWhenEmpty) {
  Conn a = join_room(ep, alice, "plaza");
  ep.set_room_tap("plaza", true);
  ep.events();
  ep.inject_room("plaza", "server:x", "state", false);
  auto msgs = only<RoomMessage>(ep.events());
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].from, "server:x");
  ep.disconnect(a);
  Conn b = join_room(ep, bob, "plaza");
  for (const auto& f : frames(b)) {
    if (member(f) != "welcomeMessage") continue;
    EXPECT_TRUE(path(f, "welcomeMessage.peerIdentities").as_object().empty());
  }
}

// ---- scene rooms (/scene-rooms/<id>): taps and injection of their own --------------

const std::string kSecret = "room-secret";

Config scene_bridge_config() {
  Config c = bridge_config();
  c.scene_rooms = true;
  c.ws_room_secret = kSecret;
  return c;
}

Conn join_scene(FakeEndpoint& ep, const Wallet& w, const std::string& room) {
  nlohmann::ordered_json claims = {
      {"sub", w.address()}, {"room", room}, {"exp", ep.unix_ms() / 1000 + 300}};
  Conn c =
      ep.connect("/scene-rooms/" + room + "?access_token=" + auth::jwt_encode(claims, kSecret));
  ep.receive(c, peer_identification(w.address()));
  ep.receive(
      c, signed_challenge_for_server(w.auth_chain(last_challenge(c), ep.unix_ms() + 3'600'000)));
  ep.finish_verifications();
  return c;
}

TEST(BridgeSceneRooms, TapsOfOneRegistryNeverSeeTheOther) {
  FakeEndpoint ep(scene_bridge_config());
  Wallet a(31), b(32), c(33);
  // the same room id in both registries: an island-registry room cannot pose as the scene
  Conn sa = join_scene(ep, a, "main:s1");
  Conn sb = join_scene(ep, b, "main:s1");
  Conn island = join_room(
      ep, c, "main:s1", "access_token=" + [&] {
        nlohmann::ordered_json claims = {
            {"sub", c.address()}, {"room", "main:s1"}, {"exp", ep.unix_ms() / 1000 + 300}};
        return auth::jwt_encode(claims, kSecret);
      }());
  ep.set_room_tap("main:s1", true, /*scene=*/true);
  EXPECT_EQ(ep.counter("bridge", "taps"), 1u);
  // the scene room of an address (the /bus's scene topics): the scene registry only
  EXPECT_EQ(ep.hub().scene_room_of(a.address()), "main:s1");
  EXPECT_EQ(ep.hub().scene_room_of(c.address()), "");
  ep.events();
  ep.receive(sa, peer_update(0, "scene", false));
  ep.receive(island, peer_update(0, "island", false));
  auto msgs = only<RoomMessage>(ep.events());
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].room, "main:s1");
  EXPECT_EQ(msgs[0].from, a.address());
  EXPECT_EQ(msgs[0].body, "scene");
  EXPECT_TRUE(msgs[0].scene);
  // the island registry's tap is its own
  ep.set_room_tap("main:s1", true, /*scene=*/false);
  ep.receive(island, peer_update(0, "island", false));
  msgs = only<RoomMessage>(ep.events());
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_FALSE(msgs[0].scene);
  ep.set_room_tap("main:s1", false, /*scene=*/true);
  ep.receive(sa, peer_update(0, "again", false));
  EXPECT_TRUE(only<RoomMessage>(ep.events()).empty());
  EXPECT_EQ(ep.counter("bridge", "taps"), 1u);  // the island one
}

TEST(BridgeSceneRooms, InjectionReachesTheSceneRoomOnlyAndIsReleased) {
  FakeEndpoint ep(scene_bridge_config());
  Wallet a(41), b(42), c(43);
  Conn sa = join_scene(ep, a, "main:s1");
  Conn island = join_room(ep, c, "main:s1");  // island rooms do not require a token here
  ep.set_room_tap("main:s1", true, /*scene=*/true);
  ep.events();
  size_t ni = island->sent.size(), na = sa->sent.size();
  ep.inject_room("main:s1", "server:door", "open", false, /*scene=*/true);
  auto fs = frames(sa, na);
  ASSERT_EQ(fs.size(), 2u);
  EXPECT_EQ(path(fs[0], "peerJoinMessage.address").as_string(), "server:door");
  auto alias = path(fs[0], "peerJoinMessage.alias").as_int();
  EXPECT_EQ(path(fs[1], "peerUpdateMessage.fromAlias").as_int(), alias);
  EXPECT_EQ(island->sent.size(), ni);  // the island room of the same id got nothing
  auto msgs = only<RoomMessage>(ep.events());
  ASSERT_EQ(msgs.size(), 1u);  // injected updates are tapped, with the injecting identity
  EXPECT_EQ(msgs[0].from, "server:door");
  EXPECT_TRUE(msgs[0].scene);
  // a newcomer finds the injector in its welcome
  Conn sb = join_scene(ep, b, "main:s1");
  bool listed = false;
  for (const auto& f : frames(sb)) {
    if (member(f) != "welcomeMessage") continue;
    for (const auto& [k, v] : path(f, "welcomeMessage.peerIdentities").as_object()) {
      if (v.as_string() == "server:door") listed = true;
    }
  }
  EXPECT_TRUE(listed);
  // releasing in the island registry does nothing to the scene room
  size_t nb = sb->sent.size();
  ep.release_room_identity("main:s1", "server:door", /*scene=*/false);
  EXPECT_EQ(sb->sent.size(), nb);
  ep.release_room_identity("main:s1", "server:door", /*scene=*/true);
  fs = frames(sb, nb);
  ASSERT_EQ(fs.size(), 1u);
  EXPECT_EQ(member(fs[0]), "peerLeaveMessage");
  // injecting into a scene room nobody is in is dropped and counted
  ep.inject_room("main:s2", "server:door", "open", false, /*scene=*/true);
  EXPECT_EQ(ep.counter("rooms", "injected_no_room"), 1u);
  // the scene room forgets its injectors when it empties
  ep.inject_room("main:s1", "server:door", "x", false, /*scene=*/true);
  ep.disconnect(sa);
  ep.disconnect(sb);
  EXPECT_EQ(ep.hub().scene_room_of(a.address()), "");
  Conn late = join_scene(ep, a, "main:s1");
  for (const auto& f : frames(late)) {
    if (member(f) != "welcomeMessage") continue;
    EXPECT_TRUE(path(f, "welcomeMessage.peerIdentities").as_object().empty());
  }
}

}  // namespace
}  // namespace dclcomms::ws::testing
