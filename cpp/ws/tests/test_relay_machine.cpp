// The connector relay (server.hpp, RelayItem) on the in-memory endpoint: the
// island messages of the core handed to connector sessions with the
// bookkeeping the Python connector glue does (archipelago.md 1.5): from_island_id
// only for sessions that had an island, join/left to the other sessions on the
// island except the ones that entered it this tick, replaced and closed
// sessions forgotten, slow receivers closed 4008.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "clients.hpp"
#include "fake_endpoint.hpp"

namespace dclcomms::ws::testing {
namespace {

Config relay_config() {
  Config c;
  c.rooms = false;
  return c;
}

// The encoded peers entries of a member list (what IslandChanges carries).
std::string entries(const std::vector<std::string>& members) {
  codec::IslandChanged m;
  m.island_id = "x";
  float x = 1;
  for (const auto& a : members) m.peers.emplace_back(a, codec::Position{x++, 0, 2});
  const std::string full = codec::encode_island_changed_message(m);
  const auto h = codec::decode_island_changed_header(full);
  return full.substr(h.peers_offset);
}

IslandChangesItem changes(const std::string& island, const std::vector<std::string>& members,
                          const std::vector<std::string>& to,
                          std::optional<std::string> from = std::nullopt) {
  IslandChangesItem item;
  item.island_id = island;
  item.peers_entries = entries(members);
  for (const auto& a : to) item.recipients.push_back({a, "conn:" + a.substr(2, 6), from, ""});
  return item;
}

// One island's lefts and joins of a tick.
IslandMovesItem moves_on(const std::string& island, std::vector<std::string> joined,
                         std::vector<std::string> left = {}) {
  IslandMovesItem item;
  item.island_id = island;
  item.joined = std::move(joined);
  item.left = std::move(left);
  return item;
}

std::string changed_frame(const std::string& island, const std::string& to,
                          const std::vector<std::string>& members,
                          std::optional<std::string> from) {
  return codec::encode_server_island_changed(island, "conn:" + to.substr(2, 6), from,
                                             entries(members));
}

// Frames sent to c since index `from` (the handshake's are before).
std::vector<std::string> frames(const Conn& c, size_t from) {
  std::vector<std::string> out;
  for (size_t i = from; i < c->sent.size(); ++i) out.push_back(c->sent[i].payload);
  return out;
}

class Relay : public ::testing::Test {
 protected:
  FakeEndpoint ep{relay_config()};
  Wallet alice{1}, bob{2}, carol{3};
  const std::string stranger = "0x" + std::string(40, 'e');

  // alice and bob on I1, past a tick end; alice stops reading with `room`
  // bytes left in her connector queue.
  std::pair<Conn, Conn> on_i1_alice_stalled(size_t room) {
    Conn a = join_connector(ep, alice);
    Conn b = join_connector(ep, bob);
    ep.relay(changes("I1", {alice.address(), bob.address()}, {alice.address(), bob.address()}));
    ep.relay(TickEndItem{});
    a->reading = false;
    ep.send_connector(alice.address(),
                      std::string(ep.config().connector_max_queued_bytes - room, 'x'));
    return {a, b};
  }
};

TEST_F(Relay, IslandChangedReachesConnectedRecipientsFromOnlyOnceTheyHadAnIsland) {
  Conn a = join_connector(ep, alice);
  Conn b = join_connector(ep, bob);
  const size_t a0 = a->sent.size(), b0 = b->sent.size();
  const std::vector<std::string> members{alice.address(), bob.address(), stranger};
  // The core says both come from I0: neither had an island here, so no from.
  ep.relay(changes("I1", members, {alice.address(), stranger, bob.address()}, "I0"));
  EXPECT_EQ(frames(a, a0),
            std::vector<std::string>{changed_frame("I1", alice.address(), members, std::nullopt)});
  EXPECT_EQ(frames(b, b0),
            std::vector<std::string>{changed_frame("I1", bob.address(), members, std::nullopt)});
  EXPECT_EQ(ep.counter("connector", "relayed_island_changed"), 2u);
  EXPECT_EQ(ep.counter("connector", "relayed_not_connected"), 1u);
  EXPECT_EQ(ep.hub().connector_island_of(alice.address()), "I1");
  EXPECT_EQ(ep.hub().connector_island_of(stranger), "");
  // Next: alice moves on, from I1 (she was there).
  ep.relay(TickEndItem{});
  ep.relay(changes("I2", {alice.address()}, {alice.address()}, "I1"));
  EXPECT_EQ(a->sent.back().payload, changed_frame("I2", alice.address(), {alice.address()}, "I1"));
  EXPECT_EQ(ep.hub().connector_island_of(alice.address()), "I2");
  EXPECT_EQ(ep.counter("connector", "messages_sent"), 3u);
}

TEST_F(Relay, MovesReachTheOtherMembersHereExceptThoseFreshOnTheIsland) {
  Conn a = join_connector(ep, alice);
  Conn b = join_connector(ep, bob);
  Conn c = join_connector(ep, carol);
  ep.relay(changes("I1", {alice.address(), bob.address()}, {alice.address(), bob.address()}));
  ep.relay(TickEndItem{});
  // carol enters I1 this tick: alice and bob are told, carol (fresh) is not,
  // and nobody hears of their own move.
  ep.relay(changes("I1", {alice.address(), bob.address(), carol.address()}, {carol.address()}));
  const size_t a0 = a->sent.size(), b0 = b->sent.size(), c0 = c->sent.size();
  ep.relay(moves_on("I1", {carol.address()}, {stranger}));
  const std::vector<std::string> expect{codec::encode_server_left_island("I1", stranger),
                                        codec::encode_server_join_island("I1", carol.address())};
  EXPECT_EQ(frames(a, a0), expect);  // lefts first, then joins
  EXPECT_EQ(frames(b, b0), expect);
  EXPECT_EQ(frames(c, c0), std::vector<std::string>{});
  EXPECT_EQ(ep.counter("connector", "relayed_join_island"), 2u);
  EXPECT_EQ(ep.counter("connector", "relayed_left_island"), 2u);
  // After the tick end carol is no longer fresh: she hears of the next arrival.
  ep.relay(TickEndItem{});
  ep.relay(moves_on("I1", {stranger}));
  EXPECT_EQ(c->sent.back().payload, codec::encode_server_join_island("I1", stranger));
  EXPECT_EQ(frames(a, a0).size(), 3u);
  // A move on an island nobody here is on sends nothing.
  ep.relay(moves_on("I9", {alice.address()}));
  EXPECT_EQ(frames(a, a0).size(), 3u);
}

TEST_F(Relay, ReplacedAndClosedSessionsAreForgotten) {
  Conn a = join_connector(ep, alice);
  Conn b = join_connector(ep, bob);
  ep.relay(changes("I1", {alice.address(), bob.address()}, {alice.address(), bob.address()}));
  ep.relay(TickEndItem{});
  // A new session for bob replaces the old one (4006): it has no island, so
  // its first island_changed has no from, and it is not told of I1's moves.
  Conn b2 = join_connector(ep, bob);
  EXPECT_TRUE(b->close_code.has_value());
  EXPECT_EQ(ep.hub().connector_island_of(bob.address()), "");
  const size_t b20 = b2->sent.size();
  ep.relay(moves_on("I1", {stranger}));
  EXPECT_EQ(frames(b2, b20), std::vector<std::string>{});
  EXPECT_EQ(a->sent.back().payload, codec::encode_server_join_island("I1", stranger));
  ep.relay(changes("I1", {alice.address(), bob.address()}, {bob.address()}, "I1"));
  EXPECT_EQ(b2->sent.back().payload,
            changed_frame("I1", bob.address(), {alice.address(), bob.address()}, std::nullopt));
  // alice closes: she is off I1 here, the next move goes to bob only.
  ep.disconnect(a);
  ep.relay(TickEndItem{});
  const size_t a_before = a->sent.size(), b2_before = b2->sent.size();
  ep.relay(moves_on("I1", {}, {alice.address()}));
  EXPECT_EQ(a->sent.size(), a_before);
  EXPECT_EQ(frames(b2, b2_before),
            std::vector<std::string>{codec::encode_server_left_island("I1", alice.address())});
  EXPECT_EQ(ep.hub().connector_island_of(alice.address()), "");
}

TEST_F(Relay, ASlowReceiverIsClosed4008AndTheOthersStillGetTheirs) {
  auto [a, b] = on_i1_alice_stalled(4);
  // A big member map: alice's frame does not fit, bob's does.
  std::vector<std::string> many{alice.address(), bob.address()};
  for (int i = 0; i < 40; ++i) many.push_back("0x" + std::string(38, 'a') + std::to_string(10 + i));
  ep.relay(changes("I2", many, {alice.address(), bob.address()}, "I1"));
  EXPECT_EQ(a->close_code, std::optional<int>(4008));
  EXPECT_EQ(b->sent.back().payload, changed_frame("I2", bob.address(), many, "I1"));
  EXPECT_EQ(ep.counter("connector", "closed_slow"), 1u);
  // The closed session left every island: a move on I2 reaches nobody but bob's
  // peers (none fresh after the tick end).
  ep.relay(TickEndItem{});
  ep.relay(moves_on("I2", {stranger}));
  EXPECT_EQ(b->sent.back().payload, codec::encode_server_join_island("I2", stranger));
  EXPECT_EQ(ep.counter("connector", "relayed_join_island"), 1u);
}

TEST_F(Relay, ASessionClosedByOneMoveGetsNoMoreOfTheSameMessage) {
  auto [a, b] = on_i1_alice_stalled(10);
  const size_t a0 = a->sent.size(), b0 = b->sent.size();
  ep.relay(moves_on("I1", {stranger, carol.address()}));  // the first does not fit alice's queue
  EXPECT_EQ(a->close_code, std::optional<int>(4008));
  EXPECT_EQ(a->sent.size(), a0);
  EXPECT_EQ(frames(b, b0),
            (std::vector<std::string>{codec::encode_server_join_island("I1", stranger),
                                      codec::encode_server_join_island("I1", carol.address())}));
  EXPECT_EQ(ep.counter("connector", "relayed_join_island"), 3u);  // alice's one try, bob's two
}

TEST_F(Relay, APrebuiltFrameIsSentAsItIsUnlessFromMustBeDropped) {
  Conn a = join_connector(ep, alice);
  Conn b = join_connector(ep, bob);
  ep.relay(changes("I1", {alice.address()}, {alice.address()}));
  ep.relay(TickEndItem{});
  // alice had an island: her prebuilt frame goes out untouched; bob had none, so his
  // (built with the core's from) is built again without it.
  IslandChangesItem item =
      changes("I2", {alice.address(), bob.address()}, {alice.address(), bob.address()}, "I1");
  item.recipients[0].frame = "prebuilt for alice";
  item.recipients[1].frame = "prebuilt for bob";
  ep.relay(item);
  EXPECT_EQ(a->sent.back().payload, "prebuilt for alice");
  EXPECT_EQ(b->sent.back().payload,
            changed_frame("I2", bob.address(), {alice.address(), bob.address()}, std::nullopt));
}

TEST_F(Relay, FrameHeadsAreSentWithTheSharedEntriesUnlessFromMustBeDropped) {
  Conn a = join_connector(ep, alice);
  Conn b = join_connector(ep, bob);
  ep.relay(changes("I1", {alice.address()}, {alice.address()}));
  ep.relay(TickEndItem{});
  // Each recipient's frame is only its head; the hub follows it with the item's
  // entries. bob had no island: his frame is built again without from.
  const std::vector<std::string> members{alice.address(), bob.address()};
  IslandChangesItem item = changes("I2", members, members, "I1");
  item.frame_heads = true;
  for (auto& r : item.recipients) {
    r.frame = codec::encode_server_island_changed_head("I2", r.conn_str, r.from_island_id,
                                                       item.peers_entries.size());
  }
  ep.relay(item);
  EXPECT_EQ(a->sent.back().payload, changed_frame("I2", alice.address(), members, "I1"));
  EXPECT_EQ(b->sent.back().payload, changed_frame("I2", bob.address(), members, std::nullopt));
  EXPECT_EQ(ep.counter("connector", "relayed_island_changed"), 3u);
}

}  // namespace
}  // namespace dclcomms::ws::testing
