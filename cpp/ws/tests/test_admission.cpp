// Admission (admission.hpp): the global cap, eviction of the oldest
// unauthenticated connection at that cap, the reserve past it, the
// per-address cap on connections that have not completed a handshake, and
// idle keep-alive HTTP connections evicted first.

#include "dclcomms/ws/admission.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dclcomms::ws {
namespace {

using V = Admission::Verdict;

uint64_t stat(const Admission& a, const std::string& name) {
  for (const auto& [k, v] : a.stats()) {
    if (k == name) return v;
  }
  ADD_FAILURE() << "no stat " << name;
  return 0;
}

// Distinct keys standing for connections.
const void* key(int i) {
  static std::vector<char> keys(1000);
  return &keys.at(static_cast<size_t>(i));
}

TEST(Admission, GlobalCapThenReserveThenRefused) {
  Admission a(2, 1, 100, 1000);
  EXPECT_EQ(a.admit(key(1), "10.0.0.1", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(2), "10.0.0.2", 0).verdict, V::Admit);
  // Full; the unauthenticated ones are too young to evict.
  EXPECT_EQ(a.admit(key(3), "10.0.0.3", 999).verdict, V::ReserveOnly);
  EXPECT_TRUE(a.reserve_only(key(3)));
  EXPECT_FALSE(a.reserve_only(key(1)));
  EXPECT_EQ(a.admit(key(4), "10.0.0.4", 999).verdict, V::RefuseFull);
  EXPECT_EQ(stat(a, "connections"), 3u);
  EXPECT_EQ(stat(a, "refused_full"), 1u);
  EXPECT_EQ(stat(a, "admitted_reserve"), 1u);
  // A regular slot frees: the next one is served in full again.
  a.closed(key(1));
  EXPECT_EQ(a.admit(key(5), "10.0.0.5", 999).verdict, V::Admit);
  a.closed(key(3));
  EXPECT_EQ(a.reserve_open(), 0u);
  EXPECT_EQ(a.admit(key(6), "10.0.0.6", 999).verdict, V::ReserveOnly);
  EXPECT_EQ(stat(a, "evicted_unauthenticated"), 0u);
}

TEST(Admission, AtTheCapTheOldestUnauthenticatedIsEvicted) {
  // A flood of idle connections from many addresses fills every slot.
  Admission a(3, 1, 2, 1000);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a.admit(key(i), "10.0.0." + std::to_string(i), i).verdict, V::Admit);
  }
  // key(0) completes a handshake: never evicted.
  a.authenticated(key(0));
  // A newcomer 1 s after key(1) arrived: key(1), the oldest unauthenticated, goes.
  auto d = a.admit(key(10), "192.168.0.1", 1001);
  EXPECT_EQ(d.verdict, V::Admit);
  EXPECT_EQ(d.evict, key(1));
  EXPECT_EQ(a.open(), 3u);
  EXPECT_EQ(a.unauthenticated(), 2u);  // key(2) and the newcomer
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 0u);
  // The evicted connection's close later is a no-op.
  a.closed(key(1));
  EXPECT_EQ(a.open(), 3u);
  // Next: key(2) (arrived at 2) is old enough at 1002, the newcomer (1001) is not.
  d = a.admit(key(11), "192.168.0.2", 1002);
  EXPECT_EQ(d.evict, key(2));
  d = a.admit(key(12), "192.168.0.3", 1500);
  EXPECT_EQ(d.verdict, V::ReserveOnly);  // everyone unauthenticated is younger than 1 s
  EXPECT_EQ(d.evict, nullptr);
  // Reserve connections are not evicted to make regular room, nor are authenticated ones.
  a.authenticated(key(10));
  a.authenticated(key(11));
  d = a.admit(key(13), "192.168.0.4", 9000);
  EXPECT_EQ(d.verdict, V::RefuseFull);
  EXPECT_EQ(stat(a, "evicted_unauthenticated"), 2u);
  EXPECT_EQ(stat(a, "admitted"), 5u);
  // Closing the rest leaves nothing behind.
  for (int i : {0, 10, 11, 12}) a.closed(key(i));
  EXPECT_EQ(a.open(), 0u);
  EXPECT_EQ(a.reserve_open(), 0u);
  EXPECT_EQ(a.unauthenticated(), 0u);
}

// A connection whose socket moved to another connection object (a room
// connection handed to its shard's thread) keeps its slot, its address's
// count and its place in the eviction order under the new key.
TEST(Admission, RekeyedConnectionKeepsItsSlotAndEvictionOrder) {
  Admission a(2, 0, 5, 1000);
  EXPECT_EQ(a.admit(key(1), "10.0.0.1", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(2), "10.0.0.1", 10).verdict, V::Admit);
  a.rekey(key(1), key(21));
  a.rekey(key(99), key(98));  // unknown: ignored
  a.rekey(key(2), key(21));   // the new key is taken: ignored
  EXPECT_EQ(a.open(), 2u);
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 2u);
  a.closed(key(1));  // the old key is forgotten
  EXPECT_EQ(a.open(), 2u);
  // The oldest unauthenticated connection is evicted by its new key.
  auto d = a.admit(key(3), "10.0.0.3", 1000);
  EXPECT_EQ(d.verdict, V::Admit);
  EXPECT_EQ(d.evict, key(21));
  a.authenticated(key(2));
  a.closed(key(2));
  a.closed(key(3));
  EXPECT_EQ(a.open(), 0u);
  EXPECT_EQ(a.unauthenticated(), 0u);
  EXPECT_EQ(stat(a, "evicted_unauthenticated"), 1u);
}

TEST(Admission, PerAddressCapCountsOnlyUnauthenticated) {
  Admission a(100, 10, 2);
  EXPECT_EQ(a.admit(key(1), "10.0.0.1", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(2), "10.0.0.1", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(3), "10.0.0.1", 0).verdict, V::RefusePerIp);
  EXPECT_EQ(a.admit(key(4), "10.0.0.2", 0).verdict, V::Admit);  // another address
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 2u);
  // One completes its handshake: a slot of its address frees, the connection stays open.
  a.authenticated(key(1));
  a.authenticated(key(1));  // at most once
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 1u);
  EXPECT_EQ(a.open(), 3u);
  EXPECT_EQ(a.admit(key(5), "10.0.0.1", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(6), "10.0.0.1", 0).verdict, V::RefusePerIp);
  EXPECT_EQ(stat(a, "refused_per_ip"), 2u);
  // Closing an authenticated connection does not touch the address's count.
  a.closed(key(1));
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 2u);
  a.closed(key(2));
  a.closed(key(5));
  a.closed(key(4));
  EXPECT_EQ(a.open(), 0u);
  EXPECT_EQ(a.unauthenticated(), 0u);
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 0u);
}

TEST(Admission, RefusalsAreNotCountedAsOpen) {
  Admission a(1, 0, 1, 1000);
  EXPECT_EQ(a.admit(key(1), "a", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(2), "b", 10).verdict, V::RefuseFull);
  EXPECT_EQ(a.admit(key(3), "a", 10).verdict, V::RefusePerIp);
  EXPECT_EQ(a.open(), 1u);
  EXPECT_EQ(a.unauthenticated(), 1u);
  EXPECT_EQ(stat(a, "max_connections"), 1u);
}

// Keep-alive HTTP connections waiting for their next request go first, at any
// age: before an older connection still in its handshake, longest idle first;
// one with a request under way again is an ordinary unauthenticated one.
TEST(Admission, AtTheCapIdleHttpConnectionsGoBeforeHandshakes) {
  Admission a(4, 0, 100, 1000);
  EXPECT_EQ(a.admit(key(1), "10.0.0.1", 0).verdict, V::Admit);  // a WebSocket handshake
  for (int i : {2, 3, 4}) EXPECT_EQ(a.admit(key(i), "10.0.0.2", i).verdict, V::Admit);
  a.idle(key(3), true);  // answered first: idle longest
  a.idle(key(2), true);
  a.idle(key(4), true);
  a.idle(key(4), false);  // its next request arrived
  a.idle(key(4), true);   // answered again: now idle the shortest
  EXPECT_EQ(stat(a, "idle_http"), 3u);
  // Young (10 ms): no handshake could be evicted, the idle ones can.
  auto d = a.admit(key(10), "10.0.0.3", 10);
  EXPECT_EQ(d.verdict, V::Admit);
  EXPECT_EQ(d.evict, key(3));
  // Past the minimum age the idle ones still go before key(1).
  d = a.admit(key(11), "10.0.0.3", 5000);
  EXPECT_EQ(d.evict, key(2));
  a.idle(key(4), false);  // a request under way: an ordinary candidate again
  d = a.admit(key(12), "10.0.0.3", 5000);
  EXPECT_EQ(d.evict, key(1));  // the oldest unauthenticated one
  EXPECT_EQ(stat(a, "evicted_idle_http"), 2u);
  EXPECT_EQ(stat(a, "evicted_unauthenticated"), 1u);
  EXPECT_EQ(stat(a, "idle_http"), 0u);
  // Evicted ones are forgotten; closing the rest leaves nothing behind.
  for (int i : {1, 2, 3, 4, 10, 11, 12}) a.closed(key(i));
  EXPECT_EQ(a.open(), 0u);
  EXPECT_EQ(a.unauthenticated(), 0u);
}

// At its address's cap, a newcomer takes the slot of that address's longest
// idle connection instead of being refused; other addresses' idle ones are
// not touched, and without an idle one the newcomer is refused as before.
TEST(Admission, PerAddressCapEvictsTheAddresssIdleConnection) {
  Admission a(100, 2, 2, 1000);
  EXPECT_EQ(a.admit(key(1), "10.0.0.1", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(2), "10.0.0.1", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(3), "10.0.0.2", 0).verdict, V::Admit);
  a.idle(key(3), true);  // another address's
  EXPECT_EQ(a.admit(key(4), "10.0.0.1", 1).verdict, V::RefusePerIp);
  a.idle(key(2), true);
  a.idle(key(1), true);
  auto d = a.admit(key(5), "10.0.0.1", 2);
  EXPECT_EQ(d.verdict, V::Admit);
  EXPECT_EQ(d.evict, key(2));
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 2u);  // key(1) and the newcomer
  EXPECT_EQ(a.open(), 3u);
  d = a.admit(key(6), "10.0.0.1", 3);
  EXPECT_EQ(d.evict, key(1));
  EXPECT_EQ(a.admit(key(7), "10.0.0.1", 4).verdict, V::RefusePerIp);  // none idle left
  EXPECT_EQ(stat(a, "evicted_idle_http"), 2u);
  EXPECT_EQ(stat(a, "refused_per_ip"), 2u);
  EXPECT_EQ(stat(a, "idle_http"), 1u);  // key(3)
  // An authenticated connection is never idle (a handshake is no HTTP request).
  a.authenticated(key(5));
  a.idle(key(5), true);
  EXPECT_EQ(stat(a, "idle_http"), 1u);
  for (int i : {3, 5, 6}) a.closed(key(i));
  EXPECT_EQ(a.open(), 0u);
  EXPECT_EQ(stat(a, "idle_http"), 0u);
}

// A reserve connection (/status, /metrics past the cap) kept alive is evicted
// for its address's newcomer (its reserve slot frees) but never to make
// regular room; a rekeyed idle connection keeps its place.
TEST(Admission, IdleReserveAndRekeyedConnections) {
  Admission a(1, 1, 1, 1000);
  EXPECT_EQ(a.admit(key(1), "10.0.0.1", 0).verdict, V::Admit);
  EXPECT_EQ(a.admit(key(2), "10.0.0.2", 0).verdict, V::ReserveOnly);
  a.idle(key(2), true);
  auto d = a.admit(key(3), "10.0.0.3", 1);  // young key(1), idle key(2) only reserve
  EXPECT_EQ(d.verdict, V::RefuseFull);
  EXPECT_EQ(d.evict, nullptr);
  d = a.admit(key(4), "10.0.0.2", 1);  // key(2)'s address: its reserve slot is the newcomer's
  EXPECT_EQ(d.verdict, V::ReserveOnly);
  EXPECT_EQ(d.evict, key(2));
  a.idle(key(1), true);
  a.rekey(key(1), key(21));
  d = a.admit(key(5), "10.0.0.5", 2);
  EXPECT_EQ(d.verdict, V::Admit);
  EXPECT_EQ(d.evict, key(21));
  for (int i : {4, 5}) a.closed(key(i));
  EXPECT_EQ(a.open(), 0u);
  EXPECT_EQ(a.reserve_open(), 0u);
  EXPECT_EQ(a.unauthenticated(), 0u);
  EXPECT_EQ(stat(a, "idle_http"), 0u);
}

}  // namespace
}  // namespace dclcomms::ws
