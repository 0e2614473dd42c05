#include "dclcomms/ws/room_registry.hpp"

#include <gtest/gtest.h>

#include <random>
#include <set>

using dclcomms::ws::RoomRegistry;

TEST(RoomRegistry, JoinOrderLeaveAndEmptyRoomsVanish) {
  RoomRegistry<int> r;
  EXPECT_TRUE(r.join("a", {1, 10, "0x1"}, 100));
  EXPECT_TRUE(r.join("a", {2, 11, "0x2"}, 100));
  EXPECT_TRUE(r.join("b", {3, 12, "0x3"}, 100));
  EXPECT_EQ(r.room_count(), 2u);
  EXPECT_EQ(r.user_count(), 3u);
  ASSERT_EQ(r.members("a").size(), 2u);
  EXPECT_EQ(r.members("a")[0].alias, 10u);
  EXPECT_EQ(r.members("a")[1].alias, 11u);
  std::string room;
  ASSERT_NE(r.find_address("0x3", &room), nullptr);
  EXPECT_EQ(room, "b");
  EXPECT_TRUE(r.leave("b", 3));
  EXPECT_EQ(r.room_count(), 1u);
  EXPECT_EQ(r.find_address("0x3"), nullptr);
  EXPECT_FALSE(r.leave("b", 3));
}

TEST(RoomRegistry, CapacityAndDuplicateAddress) {
  RoomRegistry<int> r;
  EXPECT_TRUE(r.join("a", {1, 1, "0x1"}, 2));
  EXPECT_TRUE(r.join("a", {2, 2, "0x2"}, 2));
  EXPECT_FALSE(r.join("a", {3, 3, "0x3"}, 2));
  EXPECT_FALSE(r.join("b", {4, 4, "0x1"}, 2));  // already a member elsewhere
  EXPECT_EQ(r.room_count(), 1u);                // the failed join left no empty room
  EXPECT_FALSE(r.join("c", {5, 5, "0x5"}, 0));
  EXPECT_EQ(r.room_count(), 1u);
}

TEST(RoomRegistry, LeaveIsByIdentityNotAddress) {
  RoomRegistry<int> r;
  EXPECT_TRUE(r.join("a", {1, 1, "0x1"}, 10));
  EXPECT_FALSE(r.leave("a", 99));  // a replaced session must not remove its successor
  EXPECT_EQ(r.size("a"), 1u);
}

// Oracle: random joins/leaves against a simple model (seeded; seed printed).
TEST(RoomRegistry, MatchesModelUnderRandomOperations) {
  const uint32_t seed = 20261122;
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937 rng(seed);
  RoomRegistry<int> r;
  std::map<int, std::pair<std::string, std::string>> model;  // handle -> (room, address)
  for (int step = 0; step < 5000; ++step) {
    int h = static_cast<int>(rng() % 64);
    std::string room = "r" + std::to_string(rng() % 5);
    std::string addr = "0x" + std::to_string(h % 40);
    if (rng() % 2) {
      bool addr_used = false;
      size_t in_room = 0;
      for (auto& [k, v] : model) {
        addr_used |= v.second == addr;
        in_room += v.first == room;
      }
      bool expect = !model.count(h) && !addr_used && in_room < 6;
      if (model.count(h)) continue;  // handles are unique sessions
      EXPECT_EQ(r.join(room, {h, static_cast<uint32_t>(h), addr}, 6), expect);
      if (expect) model[h] = {room, addr};
    } else {
      auto it = model.find(h);
      bool expect = it != model.end() && it->second.first == room;
      EXPECT_EQ(r.leave(room, h), expect);
      if (expect) model.erase(it);
    }
    EXPECT_EQ(r.user_count(), model.size());
    std::set<std::string> rooms;
    for (auto& [k, v] : model) rooms.insert(v.first);
    EXPECT_EQ(r.room_count(), rooms.size());
  }
}
