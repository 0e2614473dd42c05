// What every session kind shares: sessions by connection, the stage timer,
// closing (and leaving registries), sending, the handshake shape and the
// async auth step with the frames queued behind it (archipelago.md 1.3:
// frames of a socket are handled in order); the event queue, the idle sweep
// and stats().

#include "hub.hpp"

#include <algorithm>

namespace dclcomms::ws {

Hub::Hub(const Config& cfg, Environment& env) : cfg_(cfg), env_(env) {}

std::optional<Hub::Kind> Hub::kind_of(const std::string& path) const {
  if (cfg_.connector && (path == "/ws" || path == "/archipelago/ws")) return Kind::Connector;
  if (cfg_.rooms && path.rfind("/rooms/", 0) == 0) return Kind::Room;
  if (cfg_.scene_rooms && path.rfind("/scene-rooms/", 0) == 0) return Kind::Room;
  if (cfg_.bus && path == "/bus") return Kind::Bus;
  if (cfg_.bridge && path == "/bridge") return Kind::Bridge;
  if (cfg_.map_feed && path == "/map/feed") return Kind::Feed;
  return std::nullopt;
}

size_t Hub::frame_limit(Kind kind) const noexcept {
  switch (kind) {
    case Kind::Bus:
      return cfg_.bus_max_frame_bytes;
    case Kind::Bridge:
      return cfg_.bridge_max_frame_bytes;
    case Kind::Feed:
      return 1024;  // pages send nothing the server reads
    default:
      return cfg_.max_frame_bytes;
  }
}

Hub::SessionPtr Hub::find(const void* key) const {
  auto it = sessions_.find(key);
  return it == sessions_.end() ? nullptr : it->second;
}

// ---- the endpoint's reports ----------------------------------------------------

void Hub::open(const void* key, std::unique_ptr<Link> link, const std::string& path,
               const std::string& query) {
  auto kind = kind_of(path);
  if (!kind) {  // the endpoint answers such upgrades 404: not reached
    link->close(1011, "path not served");
    return;
  }
  auto s = std::make_shared<Session>();
  s->link = std::move(link);
  s->kind = *kind;
  s->last_rx_ms = env_.unix_ms();
  s->opened_ms = env_.steady_ms();
  sessions_.emplace(key, s);
  if (shut_down_) {
    close_session(s, 1001, "server shutting down");
    return;
  }
  count(s, [](auto& c) { ++c.connections; });
  if (s->kind == Kind::Room) {
    open_room(s, path, query);
    return;
  }
  if (s->kind == Kind::Bridge) {
    open_bridge(s);
    push_event(BridgeOpened{s->bridge_id, query});
    return;
  }
  if (s->kind == Kind::Feed) {
    open_feed(s);
    s->link->authenticated();  // a public page, no handshake: not pending (max pages bound it)
    return;
  }
  restart_timer(s);
}

void Hub::message(const void* key, FrameType type, std::string data) {
  SessionPtr s = find(key);
  if (!s || s->stage == Stage::Closed) return;
  s->last_rx_ms = env_.unix_ms();
  detail::Frame f{type, std::move(data)};
  if (s->stage == Stage::Verifying) {
    if (s->pending.size() >= cfg_.max_pending_frames) {
      count(s, [](auto& c) { ++c.closed_protocol; });
      close_session(s, 4000, "protocol violation: too many frames during authentication");
      return;
    }
    s->pending.push_back(std::move(f));
    return;
  }
  handle_frame(s, std::move(f));
}

void Hub::pong(const void* key) {
  if (SessionPtr s = find(key)) s->last_rx_ms = env_.unix_ms();
}

Link* Hub::link_of(const void* key) const {
  auto it = sessions_.find(key);
  return it == sessions_.end() || it->second->stage == Stage::Closed ? nullptr
                                                                     : it->second->link.get();
}

void Hub::closed(const void* key, int local_close_code) {
  auto it = sessions_.find(key);
  if (it == sessions_.end()) return;
  SessionPtr s = it->second;
  sessions_.erase(it);
  if (local_close_code == 1009) {
    count(s, [](auto& c) { ++c.closed_frame_too_big; });
  } else if (local_close_code == 1007 && s->stage != Stage::Closed) {
    // The endpoint's own 1007: a text frame that is not UTF-8 (ours set Closed).
    count(s, [](auto& c) { ++c.closed_decode; });
  }
  if (s->stage != Stage::Closed) {
    s->stage = Stage::Closed;
    detach(s);
  }
  s->link->cancel_timer();
}

// Dead TCP peers otherwise hold their registry entry forever.
void Hub::idle_sweep() {
  if (shut_down_ || cfg_.idle_timeout_ms <= 0) return;
  int64_t now = env_.unix_ms();
  std::vector<SessionPtr> idle;
  for (auto& [_, s] : sessions_) {
    if (s->stage == Stage::Closed) continue;
    int64_t silent = now - s->last_rx_ms;
    if (silent >= cfg_.idle_timeout_ms) {
      idle.push_back(s);
    } else if (silent >= cfg_.idle_timeout_ms / 3) {
      s->link->ping();
    }
  }
  for (auto& s : idle) {
    count(s, [](auto& c) { ++c.closed_idle; });
    close_session(s, 1001, "idle timeout");
  }
}

void Hub::shutdown() {
  shut_down_ = true;
  std::vector<SessionPtr> all;
  all.reserve(sessions_.size());
  for (auto& [_, s] : sessions_) all.push_back(s);
  for (auto& s : all) close_session(s, 1001, "server shutting down");
}

void Hub::set_deny_list(std::unordered_set<std::string> lowercase_addresses) {
  deny_ = std::move(lowercase_addresses);
}

Stats Hub::stats() const {
#define DCLCOMMS_LIST(name) out.emplace_back(#name, c.name);
  Stats st;
  {
    auto& out = st.connector;
    const auto& c = cc_;
    out.emplace_back("sessions", connector_reg_.size());
    DCLCOMMS_CONNECTOR_COUNTERS(DCLCOMMS_LIST)
  }
  {
    auto& out = st.rooms;
    const auto& c = rc_;
    out.emplace_back("users", rooms_.user_count());
    out.emplace_back("rooms", rooms_.room_count());
    out.emplace_back("scene_users", scene_rooms_.user_count());
    out.emplace_back("scene_rooms", scene_rooms_.room_count());
    DCLCOMMS_ROOM_COUNTERS(DCLCOMMS_LIST)
  }
  st.room_details = rooms_.details();
  {
    auto& out = st.bus;
    const auto& c = bc_;
    out.emplace_back("sessions", bus_reg_.size());
    DCLCOMMS_BUS_COUNTERS(DCLCOMMS_LIST)
  }
  {
    auto& out = st.bridge;
    const auto& c = brc_;
    out.emplace_back("sessions", bridge_reg_.size());
    out.emplace_back("taps", tapped_.size() + scene_tapped_.size());
    DCLCOMMS_BRIDGE_COUNTERS(DCLCOMMS_LIST)
  }
  {
    auto& out = st.feed;
    const auto& c = fc_;
    out.emplace_back("pages", feed_.size());
    DCLCOMMS_FEED_COUNTERS(DCLCOMMS_LIST)
  }
  return st;
#undef DCLCOMMS_LIST
}

// ---- the event queue -------------------------------------------------------------

void Hub::push_event(Event ev) {
  if (sink_ != nullptr) {
    sink_->push_event(std::move(ev));
    return;
  }
  std::lock_guard<std::mutex> lock(ev_mu_);
  bool was_empty = events_.empty();
  events_.push_back(std::move(ev));
  if (was_empty) env_.events_pending(true);
}

std::vector<Event> Hub::poll(size_t max_events) {
  std::vector<Event> out;
  std::lock_guard<std::mutex> lock(ev_mu_);
  while (!events_.empty() && out.size() < max_events) {
    if (auto* hb = std::get_if<Heartbeats>(&events_.front())) {
      pending_heartbeats_ -= hb->addresses.size();
    }
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
  if (events_.empty()) env_.events_pending(false);
  return out;
}

// ---- shared session helpers ------------------------------------------------------

void Hub::restart_timer(const SessionPtr& s) {
  uint64_t gen = ++s->timer_gen;
  int64_t ms =
      s->kind == Kind::Room ? cfg_.rooms_handshake_timeout_ms : cfg_.connector_handshake_timeout_ms;
  // Every stage ends by the unauthenticated deadline too (a slow-walking
  // client cannot hold a socket for the sum of the stage timeouts).
  int64_t left = s->opened_ms + cfg_.unauthenticated_timeout_ms - env_.steady_ms();
  ms = std::max<int64_t>(1, std::min(ms, left));
  std::weak_ptr<Session> weak = s;
  s->link->arm_timer(ms, [this, weak, gen] {
    SessionPtr s = weak.lock();
    if (!s || s->timer_gen != gen) return;
    if (s->stage == Stage::Completed || s->stage == Stage::Closed) return;
    count(s, [](auto& c) { ++c.closed_timeout; });
    close_session(s, 4001, "handshake timeout");
  });
}

// Leaves every registry the session is in (rooms: broadcast peer_leave;
// connector: PeerDisconnected, bus: BusClosed when it is the registered
// session).
void Hub::detach(const SessionPtr& s) {
  if (s->kind == Kind::Feed) {
    auto it = std::find(feed_.begin(), feed_.end(), s);
    if (it != feed_.end()) feed_.erase(it);
    return;
  }
  if (s->kind == Kind::Room) {
    if (!s->in_room) return;
    s->in_room = false;
    auto& rooms = rooms_of(*s);
    if (rooms.leave(s->room, s)) {
      if (!s->scene) env_.room_left(s->address, s->alias);  // the island-room directory
      if (rooms.size(s->room) == 0) {
        injectors_of(s->scene).erase(s->room);  // the room is gone with its injected identities
      } else {
        broadcast(rooms, s->room, nullptr, binary(codec::encode_ws_peer_leave(s->alias)), false);
      }
    }
    return;
  }
  if (s->kind == Kind::Bridge) {
    if (!s->registered) return;
    s->registered = false;
    bridge_reg_.erase(s->bridge_id);
    push_event(BridgeClosed{s->bridge_id});
    return;
  }
  if (!s->registered) return;
  s->registered = false;
  auto& reg = registry(*s);
  auto it = reg.find(s->address);
  if (it != reg.end() && it->second == s) {
    reg.erase(it);
    forget_island(*s);
    if (s->kind == Kind::Bus) {
      push_event(BusClosed{s->address});
    } else {
      // Not announced once another hub's session of the address replaced it.
      env_.connector_left(s->address, s->reg_id, [&] { push_event(PeerDisconnected{s->address}); });
    }
  }
}

void Hub::close_session(const SessionPtr& s, int code, const std::string& reason) {
  if (s->stage == Stage::Closed) return;
  s->stage = Stage::Closed;
  ++s->timer_gen;
  s->link->cancel_timer();
  s->pending.clear();
  detach(s);
  s->link->close(code, close_reason(reason));
}

// Queues frame to a connector or bus session, or closes it 4008 when that
// would take its outbound queue past connector_max_queued_bytes. Returns
// whether the frame was queued.
bool Hub::deliver(const SessionPtr& s, const FramePtr& frame) {
  size_t queued = s->link->buffered_amount();
  if (queued + frame->size() > cfg_.connector_max_queued_bytes) {
    count_connector_or_bus(s, [](auto& c) { ++c.closed_slow; });
    close_session(s, 4008,
                  "receiver too slow: outbound queue over " +
                      std::to_string(cfg_.connector_max_queued_bytes) + " bytes");
    return false;
  }
  s->link->send(frame);
  return true;
}

void Hub::submit_verify(const SessionPtr& s, std::string chain_json) {
  s->stage = Stage::Verifying;
  std::string challenge = std::move(s->challenge);  // single use
  s->challenge.clear();
  std::weak_ptr<Session> weak = s;
  env_.verify(std::move(chain_json), std::move(challenge),
              [this, weak](auth::AuthResult res, int64_t us) {
                SessionPtr s = weak.lock();
                if (!s || s->stage != Stage::Verifying) return;
                if (s->kind != Kind::Room) {
                  count_connector_or_bus(
                      s, [us](auto& c) { c.auth_verify_us_total += static_cast<uint64_t>(us); });
                }
                on_verified(s, res);
                drain_pending(s);
              });
}

void Hub::drain_pending(const SessionPtr& s) {
  while (!s->pending.empty() && s->stage != Stage::Closed && s->stage != Stage::Verifying) {
    detail::Frame f = std::move(s->pending.front());
    s->pending.pop_front();
    handle_frame(s, std::move(f));
  }
}

void Hub::handle_frame(const SessionPtr& s, detail::Frame f) {
  switch (s->kind) {
    case Kind::Room:
      handle_room(s, f.data);
      return;
    case Kind::Bus:
      if (s->stage == Stage::Completed) {
        handle_bus(s, std::move(f));
        return;
      }
      handle_connector(s, f.data);  // the connector's handshake
      return;
    case Kind::Connector:
      handle_connector(s, f.data);
      return;
    case Kind::Bridge:
      handle_bridge(s, std::move(f));
      return;
    case Kind::Feed:
      ++fc_.messages_ignored;  // a page only listens
      return;
  }
}

// ---- the handshake every kind shares: identify, challenge, verify ----------

void Hub::undecodable(const SessionPtr& s, const char* reason) {
  count(s, [](auto& c) { ++c.closed_decode; });
  close_session(s, 1007, reason);
}

bool Hub::identify(const SessionPtr& s, bool expected_kind, const char* expected,
                   const std::string& address) {
  if (!expected_kind) {
    count(s, [](auto& c) { ++c.closed_protocol; });
    close_session(s, 4000, std::string("protocol violation: expected ") + expected);
    return false;
  }
  if (!is_valid_address(address)) {
    count(s, [](auto& c) { ++c.closed_invalid_address; });
    close_session(s, 4002, "invalid address");
    return false;
  }
  s->address = to_lower_ascii(address);
  return true;
}

void Hub::send_challenge(const SessionPtr& s, bool already_connected) {
  s->challenge = auth::random_challenge();
  s->link->send(
      binary(s->kind == Kind::Room
                 ? codec::encode_ws_challenge(s->challenge, already_connected)
                 : codec::encode_server_challenge_response(s->challenge, already_connected)));
  s->stage = Stage::ChallengeSent;
  restart_timer(s);
}

void Hub::expect_signed(const SessionPtr& s, bool expected_kind, const char* expected,
                        std::string chain_json) {
  if (!expected_kind) {
    count(s, [](auto& c) { ++c.closed_protocol; });
    close_session(s, 4000, std::string("protocol violation: expected ") + expected);
    return;
  }
  submit_verify(s, std::move(chain_json));
}

// The signer must be the identified address (and a room token's sub): the
// challenge is bound to the address. Admission is each kind's own.
void Hub::on_verified(const SessionPtr& s, const auth::AuthResult& res) {
  if (!res.ok) {
    count(s, [](auto& c) { ++c.auth_failed; });
    close_session(s, 4003, "auth failed: " + res.code);
    return;
  }
  std::string owner = to_lower_ascii(res.signer);
  if (owner != s->address || (s->token_sub && *s->token_sub != owner)) {
    count(s, [](auto& c) { ++c.auth_failed; });
    close_session(s, 4003, "auth failed: address_mismatch");
    return;
  }
  if (s->kind == Kind::Room) {
    admit_room(s, owner);
  } else {
    admit_registered(s, owner);
  }
}

void Hub::complete(const SessionPtr& s) {
  s->stage = Stage::Completed;
  ++s->timer_gen;
  s->link->cancel_timer();
  s->link->authenticated();
  count(s, [](auto& c) { ++c.welcomed; });
}

}  // namespace dclcomms::ws
