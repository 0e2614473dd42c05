// Admission (admission.hpp): the global cap, the reserve past it and the
// per-address cap on connections that have not completed a handshake.

#include "dclcomms/ws/admission.hpp"

#include <gtest/gtest.h>

#include <string>

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

TEST(Admission, GlobalCapThenReserveThenRefused) {
  Admission a(2, 1, 100);
  EXPECT_EQ(a.admit("10.0.0.1"), V::Admit);
  EXPECT_EQ(a.admit("10.0.0.2"), V::Admit);
  EXPECT_EQ(a.admit("10.0.0.3"), V::ReserveOnly);
  EXPECT_EQ(a.admit("10.0.0.4"), V::RefuseFull);
  EXPECT_EQ(stat(a, "connections"), 3u);
  EXPECT_EQ(stat(a, "refused_full"), 1u);
  EXPECT_EQ(stat(a, "admitted_reserve"), 1u);
  // A regular slot frees: the next one is served in full again.
  a.closed("10.0.0.1", false, false);
  EXPECT_EQ(a.admit("10.0.0.5"), V::Admit);
  a.closed("10.0.0.3", false, true);
  EXPECT_EQ(a.reserve_open(), 0u);
  EXPECT_EQ(a.admit("10.0.0.6"), V::ReserveOnly);
}

TEST(Admission, PerAddressCapCountsOnlyUnauthenticated) {
  Admission a(100, 10, 2);
  EXPECT_EQ(a.admit("10.0.0.1"), V::Admit);
  EXPECT_EQ(a.admit("10.0.0.1"), V::Admit);
  EXPECT_EQ(a.admit("10.0.0.1"), V::RefusePerIp);
  EXPECT_EQ(a.admit("10.0.0.2"), V::Admit);  // another address is not affected
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 2u);
  // One completes its handshake: a slot of its address frees, the connection stays open.
  a.authenticated("10.0.0.1");
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 1u);
  EXPECT_EQ(a.open(), 3u);
  EXPECT_EQ(a.admit("10.0.0.1"), V::Admit);
  EXPECT_EQ(a.admit("10.0.0.1"), V::RefusePerIp);
  EXPECT_EQ(stat(a, "refused_per_ip"), 2u);
  // Closing an authenticated connection does not touch the address's count.
  a.closed("10.0.0.1", true, false);
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 2u);
  a.closed("10.0.0.1", false, false);
  a.closed("10.0.0.1", false, false);
  a.closed("10.0.0.2", false, false);
  EXPECT_EQ(a.open(), 0u);
  EXPECT_EQ(a.unauthenticated(), 0u);
  EXPECT_EQ(a.unauthenticated("10.0.0.1"), 0u);
}

TEST(Admission, RefusalsAreNotCountedAsOpen) {
  Admission a(1, 0, 1);
  EXPECT_EQ(a.admit("a"), V::Admit);
  EXPECT_EQ(a.admit("b"), V::RefuseFull);
  EXPECT_EQ(a.admit("a"), V::RefusePerIp);
  EXPECT_EQ(a.open(), 1u);
  EXPECT_EQ(a.unauthenticated(), 1u);
  EXPECT_EQ(stat(a, "max_connections"), 1u);
}

}  // namespace
}  // namespace dclcomms::ws
