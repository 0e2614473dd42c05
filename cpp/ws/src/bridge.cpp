// /bridge sessions and room taps (control-plane.md 5). A bridge session has
// no handshake here: its text frames go to the embedder as BridgeFrame events
// from the start, the embedder authenticates the credential they carry and
// accepts the session (accept_bridge) or closes it; one not accepted within
// bridge_auth_timeout_ms is closed 4001. Room taps copy a room's updates as
// RoomMessage events while on; injected updates reach a room's members from
// an identity of their own (an alias announced like a member's), never from a
// player's alias.

#include "hub.hpp"

namespace dclcomms::ws {

void Hub::open_bridge(const SessionPtr& s) {
  s->bridge_id = next_bridge_id_++;
  bridge_reg_.emplace(s->bridge_id, s);
  s->registered = true;
  s->stage = Stage::ChallengeSent;  // waiting for the embedder's accept
  std::weak_ptr<Session> weak = s;
  uint64_t gen = ++s->timer_gen;
  s->link->arm_timer(cfg_.bridge_auth_timeout_ms, [this, weak, gen] {
    SessionPtr s = weak.lock();
    if (!s || s->timer_gen != gen || s->stage != Stage::ChallengeSent) return;
    ++brc_.closed_timeout;
    close_session(s, 4001, "authentication timeout");
  });
}

void Hub::accept_bridge(uint64_t id) {
  auto it = bridge_reg_.find(id);
  if (it == bridge_reg_.end()) return;
  SessionPtr s = it->second;
  if (s->stage != Stage::ChallengeSent) return;
  complete(s);
}

void Hub::send_bridge(uint64_t id, std::string text) {
  auto it = bridge_reg_.find(id);
  if (it == bridge_reg_.end()) return;
  SessionPtr s = it->second;  // a copy: closing it erases the registry entry
  size_t queued = s->link->buffered_amount();
  if (queued + text.size() > cfg_.connector_max_queued_bytes) {
    ++brc_.closed_slow;
    close_session(s, 4008,
                  "receiver too slow: outbound queue over " +
                      std::to_string(cfg_.connector_max_queued_bytes) + " bytes");
    return;
  }
  s->link->send(env_.frame(std::move(text), FrameType::Text));
  ++brc_.frames_sent;
}

void Hub::close_bridge(uint64_t id, int code, const std::string& reason) {
  auto it = bridge_reg_.find(id);
  if (it == bridge_reg_.end()) return;
  SessionPtr s = it->second;
  ++brc_.closed_by_server;
  close_session(s, code, reason);
}

void Hub::handle_bridge(const SessionPtr& s, detail::Frame f) {
  if (f.type != FrameType::Text) {
    ++brc_.closed_protocol;
    close_session(s, 1003, "bridge frames must be text (JSON)");
    return;
  }
  if (!s->bus_frames.accept(env_.steady_ms(), cfg_.bridge_max_frames_per_s)) {
    ++brc_.closed_rate;
    close_session(
        s, 4009,
        "rate limit: more than " + std::to_string(cfg_.bridge_max_frames_per_s) + " frames/s");
    return;
  }
  ++brc_.frames_received;
  push_event(BridgeFrame{s->bridge_id, std::move(f.data)});
}

// ---- room taps and injection ---------------------------------------------------
// Each registry (islands /rooms/, scene rooms /scene-rooms/) has its own taps
// and injected identities: a room id of one never reaches the other.

void Hub::set_room_tap(const std::string& room, bool on, bool scene) {
  auto& tapped = scene ? scene_tapped_ : tapped_;
  if (on) {
    tapped.insert(room);
  } else {
    tapped.erase(room);
  }
}

void Hub::tap_copy(bool scene, const std::string& room, const std::string& from,
                   std::string_view body, bool unreliable) {
  ++rc_.tapped_messages;
  push_event(RoomMessage{room, from, std::string(body), unreliable, env_.unix_ms(), scene});
}

void Hub::inject_room(const std::string& room, const std::string& identity, std::string body,
                      bool unreliable, bool scene) {
  auto& rooms = scene ? scene_rooms_ : rooms_;
  if (rooms.size(room) == 0) {
    ++rc_.injected_no_room;
    return;
  }
  if (body.size() > cfg_.max_frame_bytes) {
    ++rc_.injected_too_big;
    return;
  }
  auto& list = injectors_of(scene)[room];
  uint32_t alias = 0;
  for (const auto& i : list) {
    if (i.identity == identity) alias = i.alias;
  }
  if (alias == 0) {
    alias = next_alias();
    list.push_back({alias, identity});
    broadcast(rooms, room, nullptr, binary(codec::encode_ws_peer_join(alias, identity)), false);
    if (rooms.size(room) == 0) return;  // the join closed every (slow) member
  }
  ++rc_.injected;
  tap(scene, room, identity, body, unreliable);
  broadcast(rooms, room, nullptr, binary(codec::encode_ws_peer_update(alias, body, unreliable)),
            unreliable);
}

void Hub::release_room_identity(const std::string& room, const std::string& identity, bool scene) {
  auto& injectors = injectors_of(scene);
  auto it = injectors.find(room);
  if (it == injectors.end()) return;
  auto& list = it->second;
  for (auto i = list.begin(); i != list.end(); ++i) {
    if (i->identity != identity) continue;
    uint32_t alias = i->alias;
    list.erase(i);
    if (list.empty()) injectors.erase(it);
    broadcast(scene ? scene_rooms_ : rooms_, room, nullptr,
              binary(codec::encode_ws_peer_leave(alias)), false);
    return;
  }
}

}  // namespace dclcomms::ws
