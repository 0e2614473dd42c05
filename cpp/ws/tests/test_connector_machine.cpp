// The connector state machine (archipelago.md 1.3) without sockets: the Hub
// driven through the in-memory endpoint, real auth chains. One test per row
// of the spec table, plus the limits around it (docs/ws.md); the bus shares
// the handshake and gets its own rows at the end.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "clients.hpp"
#include "fake_endpoint.hpp"

namespace dclcomms::ws::testing {
namespace {

constexpr int64_t kHour = 3'600'000;

Config connector_config() {
  Config c;
  c.rooms = false;
  c.bus = true;
  // The per-stage timers on their own (UnauthenticatedDeadlineBoundsEveryStage
  // tests the overall deadline).
  c.unauthenticated_timeout_ms = 10 * c.connector_handshake_timeout_ms;
  return c;
}

codec::Value last(const Conn& c) {
  EXPECT_FALSE(c->sent.empty());
  return server_packet(c->sent.back().payload);
}

void expect_closed(const Conn& c, int code, const std::string& reason) {
  ASSERT_TRUE(c->close_code.has_value()) << "still open";
  EXPECT_EQ(*c->close_code, code) << c->close_reason;
  EXPECT_EQ(c->close_reason, reason);
  EXPECT_TRUE(c->reported_closed);
}

template <class T>
std::vector<T> events_of(FakeEndpoint& ep) {
  std::vector<T> out;
  for (auto& ev : ep.events()) {
    if (auto* e = std::get_if<T>(&ev)) out.push_back(std::move(*e));
  }
  return out;
}

class Connector : public ::testing::Test {
 protected:
  FakeEndpoint ep{connector_config()};
  Wallet alice{1}, bob{2};
};

TEST_F(Connector, UndecodableIsClosed1007InAnyState) {
  Conn c = ep.connect("/ws");
  ep.receive(c, std::string("\xff\xff\xff", 3));
  expect_closed(c, 1007, "Cannot decode ClientPacket");
  Conn d = join_connector(ep, alice);
  ep.receive(d, std::string("\x0a\x05", 2));  // truncated
  expect_closed(d, 1007, "Cannot decode ClientPacket");
  EXPECT_EQ(ep.counter("connector", "closed_decode"), 2u);
}

TEST_F(Connector, BadAddressIs4002) {
  for (const char* bad : {"", "0x123", "1111111111111111111111111111111111111111",
                          "0xzz11111111111111111111111111111111111111"}) {
    Conn c = ep.connect("/ws");
    ep.receive(c, challenge_request(bad));
    expect_closed(c, 4002, "invalid address");
  }
  EXPECT_EQ(ep.counter("connector", "closed_invalid_address"), 4u);
}

TEST_F(Connector, DenyListedAddressIs4004AtChallengeRequest) {
  std::string upper = alice.address();
  for (size_t i = 2; i < upper.size(); ++i) upper[i] = static_cast<char>(std::toupper(upper[i]));
  ep.set_deny_list({upper});  // lowercased by the server
  Conn c = ep.connect("/ws");
  ep.receive(c, challenge_request(alice.address()));
  expect_closed(c, 4004, "deny-listed");
  EXPECT_EQ(ep.pending_verifications(), 0u);
  EXPECT_EQ(ep.counter("connector", "deny_listed"), 1u);
}

TEST_F(Connector, ChallengeIsFreshAndBoundToTheClaimedAddress) {
  Conn a = ep.connect("/ws");
  Conn b = ep.connect("/ws");
  ep.receive(a, challenge_request(alice.address()));
  ep.receive(b, challenge_request(alice.address()));
  const std::string ca = last_challenge(a), cb = last_challenge(b);
  for (const auto& ch : {ca, cb}) {
    ASSERT_EQ(ch.size(), 36u);
    EXPECT_EQ(ch.rfind("dcl-", 0), 0u);
    EXPECT_EQ(ch.find_first_not_of("0123456789abcdef", 4), std::string::npos) << ch;
  }
  EXPECT_NE(ca, cb);
  EXPECT_FALSE(path(last(a), "challengeResponse.alreadyConnected").as_bool());
  // A chain signed over a's challenge does not open b: each challenge is its
  // session's own.
  ep.receive(b, signed_challenge(alice.auth_chain(ca, ep.unix_ms() + kHour)));
  ep.finish_verifications();
  ASSERT_TRUE(b->close_code.has_value());
  EXPECT_EQ(*b->close_code, 4003);
  EXPECT_EQ(b->close_reason.rfind("auth failed: ", 0), 0u) << b->close_reason;
  EXPECT_NE(b->close_reason, "auth failed: address_mismatch");
}

TEST_F(Connector, AlreadyConnectedWhenTheRegistryHoldsTheAddress) {
  join_connector(ep, alice);
  Conn c = ep.connect("/ws");
  ep.receive(c, challenge_request(alice.address()));
  EXPECT_TRUE(path(last(c), "challengeResponse.alreadyConnected").as_bool());
}

TEST_F(Connector, ChallengeIsSingleUse) {
  Conn c = ep.connect("/ws");
  ep.receive(c, challenge_request(alice.address()));
  const std::string chain = alice.auth_chain(last_challenge(c), ep.unix_ms() + kHour);
  ep.receive(c, signed_challenge(chain));
  ep.receive(c, signed_challenge(chain));  // queued behind the first check
  EXPECT_EQ(ep.pending_verifications(), 1u);
  ep.finish_verifications();
  EXPECT_TRUE(c->open());
  EXPECT_EQ(member(last(c)), "welcome");
  // The replay was handled after the welcome: ignored, never verified again.
  EXPECT_EQ(ep.pending_verifications(), 0u);
  EXPECT_EQ(ep.counter("connector", "messages_ignored"), 1u);
  EXPECT_EQ(ep.counter("connector", "welcomed"), 1u);
}

TEST_F(Connector, InvalidChainIs4003WithTheVerifierCode) {
  Conn c = ep.connect("/ws");
  ep.receive(c, challenge_request(alice.address()));
  ep.receive(c, signed_challenge(alice.auth_chain("dcl-not-the-challenge", ep.unix_ms() + kHour)));
  ep.finish_verifications();
  ASSERT_TRUE(c->close_code.has_value());
  EXPECT_EQ(*c->close_code, 4003);
  EXPECT_EQ(c->close_reason.rfind("auth failed: ", 0), 0u);
  EXPECT_GT(c->close_reason.size(), std::string("auth failed: ").size());
  // An expired ephemeral key: the verifier's code is in the reason.
  Conn d = ep.connect("/ws");
  ep.receive(d, challenge_request(alice.address()));
  ep.receive(d, signed_challenge(alice.auth_chain(last_challenge(d), ep.unix_ms() - 1000)));
  ep.finish_verifications();
  expect_closed(d, 4003, "auth failed: ephemeral_expired");
  EXPECT_EQ(ep.counter("connector", "auth_failed"), 2u);
}

TEST_F(Connector, SignerOtherThanTheClaimedAddressIs4003AddressMismatch) {
  Conn c = ep.connect("/ws");
  ep.receive(c, challenge_request(alice.address()));
  ep.receive(c, signed_challenge(bob.auth_chain(last_challenge(c), ep.unix_ms() + kHour)));
  ep.finish_verifications();
  expect_closed(c, 4003, "auth failed: address_mismatch");
  EXPECT_TRUE(events_of<PeerConnected>(ep).empty());
}

TEST_F(Connector, OwnerDenyListedDuringTheCheckIs4004) {
  Conn c = ep.connect("/ws");
  ep.receive(c, challenge_request(alice.address()));
  ep.receive(c, signed_challenge(alice.auth_chain(last_challenge(c), ep.unix_ms() + kHour)));
  ep.set_deny_list({alice.address()});
  ep.finish_verifications();
  expect_closed(c, 4004, "deny-listed");
}

TEST_F(Connector, WelcomeRegistersAndReportsTheOwner) {
  Conn c = join_connector(ep, alice);
  EXPECT_EQ(path(last(c), "welcome.peerId").as_string(), alice.address());
  auto connected = events_of<PeerConnected>(ep);
  ASSERT_EQ(connected.size(), 1u);
  EXPECT_EQ(connected[0].address, alice.address());
  EXPECT_EQ(ep.counter("connector", "sessions"), 1u);
  EXPECT_EQ(ep.counter("connector", "welcomed"), 1u);
  EXPECT_TRUE(ep.events_flagged() == false);  // drained
  // The stage timer is off once completed.
  ep.advance(ep.config().connector_handshake_timeout_ms * 2 / 3);
  EXPECT_TRUE(c->open());
}

TEST_F(Connector, OtherMemberBeforeCompletionIs4000) {
  Conn c = ep.connect("/ws");
  ep.receive(c, heartbeat(codec::Position{1, 2, 3}));
  expect_closed(c, 4000, "protocol violation: expected challenge_request");
  Conn d = ep.connect("/ws");
  ep.receive(d, challenge_request(alice.address()));
  ep.receive(d, challenge_request(alice.address()));
  expect_closed(d, 4000, "protocol violation: expected signed_challenge");
  EXPECT_EQ(ep.counter("connector", "closed_protocol"), 2u);
}

TEST_F(Connector, StageTimerIs4001PerStage) {
  const int64_t t = ep.config().connector_handshake_timeout_ms;
  Conn idle = ep.connect("/ws");
  Conn slow = ep.connect("/ws");
  ep.advance(t - 1);
  EXPECT_TRUE(idle->open());
  ep.receive(slow, challenge_request(alice.address()));  // a new stage: a new timer
  ep.advance(1);
  expect_closed(idle, 4001, "handshake timeout");
  ep.advance(t - 2);
  EXPECT_TRUE(slow->open());
  ep.advance(1);
  expect_closed(slow, 4001, "handshake timeout");
  EXPECT_EQ(ep.counter("connector", "closed_timeout"), 2u);
}

TEST(ConnectorDeadline, UnauthenticatedDeadlineBoundsEveryStage) {
  Config cfg = connector_config();
  cfg.connector_handshake_timeout_ms = 60'000;
  cfg.unauthenticated_timeout_ms = 15'000;
  FakeEndpoint ep{cfg};
  Wallet alice{1}, bob{2};
  Conn idle = ep.connect("/ws");
  Conn walking = ep.connect("/ws");
  ep.advance(10'000);
  ep.receive(walking, challenge_request(alice.address()));  // a new stage, same deadline
  ep.advance(4'999);
  EXPECT_TRUE(idle->open());
  EXPECT_TRUE(walking->open());
  ep.advance(1);
  expect_closed(idle, 4001, "handshake timeout");
  expect_closed(walking, 4001, "handshake timeout");
  EXPECT_EQ(ep.counter("connector", "closed_timeout"), 2u);
  EXPECT_EQ(idle->authenticated + walking->authenticated, 0);
  // A welcomed session has reported its authentication once, and no deadline applies.
  Conn ok = join_connector(ep, bob);
  EXPECT_EQ(ok->authenticated, 1);
  ep.advance(60'000);
  EXPECT_TRUE(ok->open());
}

TEST_F(Connector, FramesDuringTheCheckAreQueuedInOrderUpTo8) {
  Conn c = ep.connect("/ws");
  ep.receive(c, challenge_request(alice.address()));
  ep.receive(c, signed_challenge(alice.auth_chain(last_challenge(c), ep.unix_ms() + kHour)));
  for (int i = 0; i < 8; ++i) {
    ep.receive(c, heartbeat(codec::Position{static_cast<float>(i), 0, 0}));
  }
  EXPECT_TRUE(c->open());
  ep.finish_verifications();
  ASSERT_TRUE(c->open());
  // Accepted after the welcome, in order (the rate limit of 10/s holds 8).
  auto batches = events_of<Heartbeats>(ep);
  ASSERT_EQ(batches.size(), 1u);
  ASSERT_EQ(batches[0].addresses.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(batches[0].positions[3 * i], static_cast<float>(i));

  Conn d = ep.connect("/ws");
  ep.receive(d, challenge_request(bob.address()));
  ep.receive(d, signed_challenge(bob.auth_chain(last_challenge(d), ep.unix_ms() + kHour)));
  for (int i = 0; i < 8; ++i) ep.receive(d, heartbeat(codec::Position{0, 0, 0}));
  EXPECT_TRUE(d->open());
  ep.receive(d, heartbeat(codec::Position{0, 0, 0}));  // the 9th
  expect_closed(d, 4000, "protocol violation: too many frames during authentication");
  ep.finish_verifications();  // the check result of a closed session is dropped
  EXPECT_EQ(ep.counter("connector", "welcomed"), 1u);
}

TEST_F(Connector, HeartbeatsWithAFinitePositionAreBatchedInArrivalOrder) {
  Conn a = join_connector(ep, alice);
  Conn b = join_connector(ep, bob);
  ep.events();
  ep.receive(a, heartbeat(codec::Position{1, 2, 3}));
  EXPECT_TRUE(ep.events_flagged());
  ep.receive(b, heartbeat(codec::Position{4, 5, 6}, std::string("")));
  ep.receive(a, heartbeat(codec::Position{7, 8, 9}, std::string("room-1")));
  auto batches = events_of<Heartbeats>(ep);
  EXPECT_FALSE(ep.events_flagged());
  ASSERT_EQ(batches.size(), 1u);
  const Heartbeats& hb = batches[0];
  EXPECT_EQ(hb.addresses,
            (std::vector<std::string>{alice.address(), bob.address(), alice.address()}));
  EXPECT_EQ(hb.positions, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  ASSERT_EQ(hb.desired_rooms.size(), 3u);
  EXPECT_FALSE(hb.desired_rooms[0].has_value());                   // absent: keep
  EXPECT_EQ(hb.desired_rooms[1], std::optional<std::string>(""));  // clear
  EXPECT_EQ(hb.desired_rooms[2], std::optional<std::string>("room-1"));
  EXPECT_EQ(ep.counter("connector", "heartbeats_accepted"), 3u);
  // Another event between heartbeats starts a new batch (order is kept).
  ep.receive(a, heartbeat(codec::Position{0, 0, 0}));
  ep.disconnect(b);
  ep.receive(a, heartbeat(codec::Position{0, 0, 0}));
  auto evs = ep.events();
  ASSERT_EQ(evs.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<Heartbeats>(evs[0]));
  EXPECT_TRUE(std::holds_alternative<PeerDisconnected>(evs[1]));
  EXPECT_TRUE(std::holds_alternative<Heartbeats>(evs[2]));
}

TEST_F(Connector, InvalidHeartbeatsAreDroppedAndCounted) {
  Conn c = join_connector(ep, alice);
  ep.events();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  ep.receive(c, heartbeat(std::nullopt));
  ep.receive(c, heartbeat(std::nullopt, std::string("room")));
  ep.receive(c, heartbeat(codec::Position{nan, 0, 0}));
  ep.receive(c, heartbeat(codec::Position{0, inf, 0}));
  ep.receive(c, heartbeat(codec::Position{0, 0, -inf}));
  ep.receive(c, heartbeat(codec::Position{0, 0, 0}, std::string(65, 'r')));
  // 64 characters is the limit, counted in code points (2-byte "é" here).
  std::string e64;
  for (int i = 0; i < 64; ++i) e64 += "\xc3\xa9";
  ep.receive(c, heartbeat(codec::Position{0, 0, 0}, e64));
  ep.receive(c, heartbeat(codec::Position{0, 0, 0}, e64 + "x"));
  EXPECT_TRUE(c->open());
  EXPECT_EQ(ep.counter("connector", "heartbeats_dropped_no_position"), 2u);
  EXPECT_EQ(ep.counter("connector", "heartbeats_dropped_invalid"), 5u);
  auto batches = events_of<Heartbeats>(ep);
  ASSERT_EQ(batches.size(), 1u);
  ASSERT_EQ(batches[0].addresses.size(), 1u);
  EXPECT_EQ(batches[0].desired_rooms[0], std::optional<std::string>(e64));
}

TEST_F(Connector, HeartbeatsBeyondTheWorldBoundAreDroppedLikeNaN) {
  Conn c = join_connector(ep, alice);
  ep.events();
  const double bound = ep.config().world_bound_m;
  ASSERT_EQ(bound, 4096.0);
  const float edge = static_cast<float>(bound);
  ep.receive(c, heartbeat(codec::Position{3.4e38f, 0, 0}));
  ep.receive(c, heartbeat(codec::Position{0, -3.4e38f, 0}));
  ep.receive(c, heartbeat(codec::Position{0, 0, std::nextafter(edge, 1e9f)}));
  ep.receive(c, heartbeat(codec::Position{-std::nextafter(edge, 1e9f), 0, 0}));
  ep.receive(c, heartbeat(codec::Position{edge, -edge, edge}));  // on the bound: inside
  ep.receive(c, heartbeat(codec::Position{2624, 100, -2400}));   // Genesis City's corner
  EXPECT_TRUE(c->open());
  EXPECT_EQ(ep.counter("connector", "heartbeats_dropped_out_of_bounds"), 4u);
  EXPECT_EQ(ep.counter("connector", "heartbeats_dropped_invalid"), 0u);
  EXPECT_EQ(ep.counter("connector", "heartbeats_accepted"), 2u);
  auto batches = events_of<Heartbeats>(ep);
  ASSERT_EQ(batches.size(), 1u);
  ASSERT_EQ(batches[0].positions.size(), 6u);
  EXPECT_EQ(batches[0].positions[0], edge);
  EXPECT_EQ(batches[0].positions[3], 2624.0f);
}

TEST_F(Connector, HeartbeatsOverTheRateAreDropped) {
  Conn c = join_connector(ep, alice);
  const int max = ep.config().heartbeat_max_per_s;
  for (int i = 0; i < max + 3; ++i) ep.receive(c, heartbeat(codec::Position{0, 0, 0}));
  EXPECT_EQ(ep.counter("connector", "heartbeats_accepted"), static_cast<uint64_t>(max));
  EXPECT_EQ(ep.counter("connector", "heartbeats_dropped_rate"), 3u);
  ep.advance(1000);  // the next one-second window
  ep.receive(c, heartbeat(codec::Position{0, 0, 0}));
  EXPECT_EQ(ep.counter("connector", "heartbeats_accepted"), static_cast<uint64_t>(max + 1));
  EXPECT_TRUE(c->open());
}

TEST_F(Connector, HandshakeMembersAfterCompletionAreIgnoredAndCounted) {
  Conn c = join_connector(ep, alice);
  ep.receive(c, challenge_request(alice.address()));
  ep.receive(c, signed_challenge("[]"));
  EXPECT_TRUE(c->open());
  EXPECT_EQ(ep.counter("connector", "messages_ignored"), 2u);
  EXPECT_EQ(ep.pending_verifications(), 0u);
}

TEST_F(Connector, DuplicateSessionKicksTheOldOne4006) {
  Conn old = join_connector(ep, alice);
  ep.events();
  Conn fresh = join_connector(ep, alice);
  ASSERT_GE(old->sent.size(), 1u);
  EXPECT_EQ(old->sent.back().payload, std::string("\x32\x00", 2));  // kicked{KR_NEW_SESSION}
  expect_closed(old, 4006, "session replaced: a new session for this address connected");
  EXPECT_TRUE(fresh->open());
  // The replaced socket's close is no disconnect: only the new connect.
  auto evs = ep.events();
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<PeerConnected>(evs[0]));
  EXPECT_EQ(ep.counter("connector", "kicked_duplicate"), 1u);
  EXPECT_EQ(ep.counter("connector", "sessions"), 1u);
  // The registry now holds the new socket: its close is published.
  ep.disconnect(fresh);
  auto gone = events_of<PeerDisconnected>(ep);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].address, alice.address());
  EXPECT_EQ(ep.counter("connector", "sessions"), 0u);
}

TEST_F(Connector, CloseIsPublishedOnlyForTheRegisteredSocket) {
  Conn half = ep.connect("/ws");
  ep.receive(half, challenge_request(alice.address()));
  ep.disconnect(half);
  EXPECT_TRUE(ep.events().empty());
  Conn c = join_connector(ep, alice);
  ep.events();
  ep.disconnect(c);
  auto gone = events_of<PeerDisconnected>(ep);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].address, alice.address());
  // A close by the server (here a kick) publishes it too.
  Conn d = join_connector(ep, bob);
  ep.events();
  ep.kick(bob.address(), 4005, "banned");
  EXPECT_EQ(d->sent.back().payload, std::string("\x32\x00", 2));
  expect_closed(d, 4005, "banned");
  EXPECT_EQ(events_of<PeerDisconnected>(ep).size(), 1u);
  EXPECT_EQ(ep.counter("connector", "kicked_by_server"), 1u);
}

TEST_F(Connector, IslandMessagesAreNeverDroppedASlowReceiverIsClosed4008) {
  Conn c = join_connector(ep, alice);
  c->reading = false;
  const size_t limit = ep.config().connector_max_queued_bytes;
  const std::string chunk(limit / 4, 'x');
  for (int i = 0; i < 4; ++i) ep.send_connector(alice.address(), chunk);
  EXPECT_TRUE(c->open());
  EXPECT_EQ(c->buffered, limit);
  ep.send_connector(alice.address(), "y");
  expect_closed(c, 4008,
                "receiver too slow: outbound queue over " + std::to_string(limit) + " bytes");
  EXPECT_EQ(ep.counter("connector", "messages_sent"), 4u);
  EXPECT_EQ(ep.counter("connector", "closed_slow"), 1u);
  ep.send_connector(alice.address(), "z");  // not connected: ignored
  EXPECT_EQ(ep.counter("connector", "messages_sent"), 4u);
}

TEST_F(Connector, OversizedFrameIs1009) {
  Conn c = ep.connect("/ws");
  ep.receive(c, std::string(ep.config().max_frame_bytes + 1, '\0'));
  EXPECT_EQ(c->close_code, std::optional<int>(1009));
  EXPECT_EQ(ep.counter("connector", "closed_frame_too_big"), 1u);
  EXPECT_EQ(ep.hub().session_count(), 0u);
}

TEST_F(Connector, SilentSessionsArePingedThenClosed1001) {
  Conn c = join_connector(ep, alice);
  const int64_t idle = ep.config().idle_timeout_ms;
  ep.advance(idle / 2);
  EXPECT_GE(c->pings, 1);
  ep.pong(c);  // a pong counts as traffic
  ep.advance(idle - 1);
  EXPECT_TRUE(c->open());
  ep.advance(idle / 3);
  expect_closed(c, 1001, "idle timeout");
  EXPECT_EQ(ep.counter("connector", "closed_idle"), 1u);
}

TEST_F(Connector, ShutdownClosesEverySession1001) {
  Conn a = join_connector(ep, alice);
  Conn b = ep.connect("/archipelago/ws");
  ep.shutdown();
  expect_closed(a, 1001, "server shutting down");
  expect_closed(b, 1001, "server shutting down");
  Conn late = ep.connect("/ws");
  expect_closed(late, 1001, "server shutting down");
  EXPECT_EQ(ep.hub().session_count(), 0u);
}

// ---- /bus: the connector's handshake, then text frames ----------------------------

TEST_F(Connector, BusSharesTheHandshakeButNotTheRegistry) {
  Conn ws = join_connector(ep, alice);
  Conn bus = join_connector(ep, alice, "/bus");
  EXPECT_TRUE(ws->open());  // a connector and a bus session of one address coexist
  auto evs = ep.events();
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<PeerConnected>(evs[0]));
  ASSERT_TRUE(std::holds_alternative<BusOpened>(evs[1]));
  Conn bad = ep.connect("/bus");
  ep.receive(bad, challenge_request("0x12"));
  expect_closed(bad, 4002, "invalid address");
  EXPECT_EQ(ep.counter("bus", "closed_invalid_address"), 1u);
  EXPECT_EQ(ep.counter("connector", "closed_invalid_address"), 0u);
  // Duplicate: newest wins, no kicked packet (the bus speaks text by now).
  const size_t before = bus->sent.size();
  Conn bus2 = join_connector(ep, alice, "/bus");
  EXPECT_EQ(bus->sent.size(), before);
  expect_closed(bus, 4006, "session replaced: a new bus session for this address connected");
  EXPECT_TRUE(bus2->open());
  EXPECT_TRUE(ep.events().size() == 1u);  // BusOpened only: no BusClosed for the old one
}

TEST_F(Connector, BusTextFramesBinaryFramesAndRate) {
  Conn bus = join_connector(ep, alice, "/bus");
  ep.events();
  ep.receive(bus, R"({"type":"subscribe"})", FrameType::Text);
  auto frames = events_of<BusFrame>(ep);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].text, R"({"type":"subscribe"})");
  ep.send_bus(alice.address(), "hello");
  EXPECT_EQ(bus->sent.back().type, FrameType::Text);
  EXPECT_EQ(bus->sent.back().payload, "hello");
  const int max = ep.config().bus_max_frames_per_s;
  for (int i = 1; i < max; ++i) ep.receive(bus, "{}", FrameType::Text);
  EXPECT_TRUE(bus->open());
  ep.receive(bus, "{}", FrameType::Text);
  expect_closed(bus, 4009, "rate limit: more than " + std::to_string(max) + " frames/s");
  auto closed = events_of<BusClosed>(ep);
  ASSERT_EQ(closed.size(), 1u);
  Conn bin = join_connector(ep, bob, "/bus");
  ep.receive(bin, "{}", FrameType::Binary);
  expect_closed(bin, 1003, "bus frames must be text (JSON)");
  Conn srv = join_connector(ep, alice, "/bus");
  ep.close_bus(alice.address(), 4000, "bad topic");
  expect_closed(srv, 4000, "bad topic");
  EXPECT_EQ(ep.counter("bus", "closed_by_server"), 1u);
}

TEST_F(Connector, UnservedPathsAreNotUpgraded) {
  EXPECT_EQ(ep.connect("/rooms/plaza"), nullptr);  // rooms are off here
  EXPECT_EQ(ep.connect("/ws/"), nullptr);
  EXPECT_EQ(ep.connect("/other"), nullptr);
}

}  // namespace
}  // namespace dclcomms::ws::testing
