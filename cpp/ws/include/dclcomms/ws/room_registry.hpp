#pragma once
// Room membership for RFC-5 rooms (transports.md section 1), independent of
// sockets so it can be tested on its own.
//
// Contract: a room exists while it has members (created on first join, erased
// on last leave). Members keep join order (welcome lists earlier joiners in
// that order). An address is a member of at most one room per registry: the
// caller enforces the duplicate policy (kick the old session) before joining.
// Not thread-safe: the server guards it with its state mutex.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dclcomms::ws {

template <class Handle>
class RoomRegistry {
 public:
  struct Member {
    Handle handle;
    uint32_t alias = 0;
    std::string address;  // lowercase 0x address
  };
  using Members = std::vector<Member>;

  // Members of a room in join order; empty when the room does not exist.
  const Members& members(const std::string& room) const {
    auto it = rooms_.find(room);
    return it == rooms_.end() ? empty_ : it->second;
  }
  size_t size(const std::string& room) const { return members(room).size(); }
  size_t room_count() const noexcept { return rooms_.size(); }
  size_t user_count() const noexcept { return by_address_.size(); }

  // Where an address is currently a member, if anywhere.
  const Member* find_address(const std::string& address, std::string* room = nullptr) const {
    auto it = by_address_.find(address);
    if (it == by_address_.end()) return nullptr;
    if (room) *room = it->second;
    for (const auto& m : members(it->second)) {
      if (m.address == address) return &m;
    }
    return nullptr;
  }

  // Adds a member; false (and no change) when the address is already a member
  // somewhere or the room already holds max_users members.
  bool join(const std::string& room, Member member, size_t max_users) {
    if (by_address_.count(member.address)) return false;
    auto& list = rooms_[room];
    if (list.size() >= max_users) {
      if (list.empty()) rooms_.erase(room);
      return false;
    }
    by_address_.emplace(member.address, room);
    list.push_back(std::move(member));
    return true;
  }

  // Removes the member with this handle (identity, not address): a replaced
  // session never removes its successor. Returns false if it was not there.
  bool leave(const std::string& room, const Handle& handle) {
    auto it = rooms_.find(room);
    if (it == rooms_.end()) return false;
    auto& list = it->second;
    auto m =
        std::find_if(list.begin(), list.end(), [&](const Member& x) { return x.handle == handle; });
    if (m == list.end()) return false;
    by_address_.erase(m->address);
    list.erase(m);
    if (list.empty()) rooms_.erase(it);
    return true;
  }

  // (room name, member count) of every room, unordered.
  std::vector<std::pair<std::string, size_t>> details() const {
    std::vector<std::pair<std::string, size_t>> out;
    out.reserve(rooms_.size());
    for (const auto& [name, list] : rooms_) out.emplace_back(name, list.size());
    return out;
  }

 private:
  std::unordered_map<std::string, Members> rooms_;
  std::unordered_map<std::string, std::string> by_address_;  // address -> room
  Members empty_;
};

}  // namespace dclcomms::ws
