// The connector relay (server.hpp, RelayItem): the core's island messages
// handed to this connector's sessions on their I/O thread, with the per-session
// bookkeeping of archipelago.md 1.5 (which island each session was sent, who
// is on which island here, who entered an island this tick).

#include <vector>

#include "hub.hpp"

namespace dclcomms::ws {

void Hub::relay(RelayItem& item) {
  if (auto* changes = std::get_if<IslandChangesItem>(&item)) {
    relay_changes(*changes);
  } else if (const auto* moves = std::get_if<IslandMovesItem>(&item)) {
    relay_moves(*moves);
  } else {
    fresh_.clear();  // TickEndItem
  }
}

void Hub::forget_island(Session& s) {
  if (s.island.empty()) return;
  auto it = island_members_.find(s.island);
  if (it != island_members_.end()) {
    it->second.erase(s.address);
    if (it->second.empty()) island_members_.erase(it);
  }
  s.island.clear();
}

std::string Hub::connector_island_of(const std::string& address) const {
  auto it = connector_reg_.find(address);
  return it == connector_reg_.end() ? std::string() : it->second->island;
}

void Hub::relay_changes(IslandChangesItem& item) {
  // The member map, shared by the frames built from a head (frame_heads).
  std::shared_ptr<const std::string> tail;
  for (auto& r : item.recipients) {
    auto it = connector_reg_.find(r.address);
    if (it == connector_reg_.end()) {
      ++cc_.relayed_not_connected;  // not connected here (the reference drops it too)
      continue;
    }
    SessionPtr s = it->second;  // a copy: a 4008 close erases the registry entry
    // A session without an island yet never was on the one the core names.
    const bool drop_from = s->island.empty() && r.from_island_id;
    FramePtr frame;
    if (!drop_from && !r.frame.empty() && item.frame_heads) {
      if (!tail) tail = std::make_shared<const std::string>(std::move(item.peers_entries));
      frame = env_.split_frame(std::move(r.frame), tail, FrameType::Binary);
    } else if (!drop_from && !r.frame.empty()) {
      frame = binary(std::move(r.frame));
    } else {
      static const std::optional<std::string> kNone;
      frame = binary(codec::encode_server_island_changed(item.island_id, r.conn_str,
                                                         drop_from ? kNone : r.from_island_id,
                                                         tail ? *tail : item.peers_entries));
    }
    forget_island(*s);
    s->island = item.island_id;
    island_members_[item.island_id].insert(r.address);
    fresh_[r.address] = item.island_id;
    ++cc_.relayed_island_changed;
    if (deliver(s, frame)) ++cc_.messages_sent;
  }
}

void Hub::relay_moves(const IslandMovesItem& item) {
  auto members = island_members_.find(item.island_id);
  if (members == island_members_.end()) return;
  // Who hears of this island's moves: its sessions here, except those that
  // entered it this tick (looked up once per message, not once per peer).
  std::vector<SessionPtr> to;
  to.reserve(members->second.size());
  for (const auto& addr : members->second) {
    auto f = fresh_.find(addr);
    if (f != fresh_.end() && f->second == item.island_id) continue;
    auto it = connector_reg_.find(addr);
    if (it != connector_reg_.end()) to.push_back(it->second);
  }
  if (to.empty()) return;
  for (const auto& peer : item.left) relay_move(to, item.island_id, peer, false);
  for (const auto& peer : item.joined) relay_move(to, item.island_id, peer, true);
}

void Hub::relay_move(const std::vector<SessionPtr>& to, const std::string& island,
                     const std::string& peer, bool joined) {
  FramePtr frame;  // one frame for every recipient, built if anyone gets it
  for (const auto& s : to) {
    // Not the peer itself; not a session closed meanwhile (4008 on an earlier send).
    if (!s->registered || s->address == peer) continue;
    if (!frame) {
      frame = binary(joined ? codec::encode_server_join_island(island, peer)
                            : codec::encode_server_left_island(island, peer));
    }
    if (joined) {
      ++cc_.relayed_join_island;
    } else {
      ++cc_.relayed_left_island;
    }
    if (deliver(s, frame)) ++cc_.messages_sent;
  }
}

}  // namespace dclcomms::ws
