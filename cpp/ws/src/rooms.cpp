// RFC-5 rooms (/rooms/<roomId>; transports.md 1.1-1.3): the optional access
// token at upgrade, the challenge handshake, admission (capacity, duplicates),
// relay with per-receiver backpressure and the optional sender token bucket.

#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/error.hpp"
#include "hub.hpp"

namespace dclcomms::ws {

namespace {
constexpr const char* kReplacedRoom =
    "Already connected: a new session for this address replaced this one";
constexpr const char* kRoomFull = "This world is full. Try again later.";
constexpr const char* kBarred = "banned from this room";
}  // namespace

void Hub::open_room(const SessionPtr& s, const std::string& path, const std::string& query) {
  s->alias = next_alias();  // taken at upgrade, also by sessions that fail later
  s->scene = path.rfind("/scene-rooms/", 0) == 0;
  s->room =
      path.substr(s->scene ? std::string("/scene-rooms/").size() : std::string("/rooms/").size());
  if (!is_valid_room_id(s->room)) {
    ++rc_.invalid_room_id;
    close_session(s, 4011, "invalid room id");
    return;
  }
  bool found = false;
  std::string token = query_param(query, "access_token", &found);
  if (found || cfg_.ws_room_require_token || s->scene) {  // scene rooms: always a token
    std::string why = check_token(token, found, s->room, &s->token_sub);
    if (!why.empty()) {
      ++rc_.token_rejected;
      close_session(s, 4010, "invalid access token: " + why);
      return;
    }
  }
  restart_timer(s);
}

// Returns "" when the token is acceptable, else the reason code.
std::string Hub::check_token(const std::string& token, bool found, const std::string& room,
                             std::optional<std::string>* sub) const {
  if (!found || token.empty()) return "missing";
  if (!cfg_.ws_room_secret) return "no_secret_configured";
  nlohmann::ordered_json claims;
  try {
    auth::JwtCheck check;
    check.now_s = env_.unix_ms() / 1000;
    check.leeway_s = 30;
    check.require_exp = true;
    claims = auth::jwt_decode(token, *cfg_.ws_room_secret, check);
  } catch (const Error& e) {
    return e.code();
  } catch (const std::exception&) {
    return "malformed";
  }
  auto r = claims.find("room");
  if (r == claims.end() || !r->is_string() || r->get<std::string>() != room) return "wrong_room";
  auto sb = claims.find("sub");
  if (sb == claims.end() || !sb->is_string() || !is_valid_address(sb->get<std::string>())) {
    return "bad_sub";
  }
  *sub = to_lower_ascii(sb->get<std::string>());
  return "";
}

void Hub::kick_full(const SessionPtr& s) {
  ++rc_.kicked_full;
  s->link->send(binary(codec::encode_ws_peer_kicked(kRoomFull)));
  close_session(s, 4007, std::string("room full: ") + kRoomFull);
}

void Hub::handle_room(const SessionPtr& s, const std::string& data) {
  codec::WsPacket p;
  try {
    p = codec::decode_ws_packet(data);
  } catch (const std::exception&) {
    undecodable(s, "Cannot decode WsPacket");
    return;
  }
  using K = codec::WsPacket::Kind;
  switch (s->stage) {
    case Stage::Start:
      if (!identify(s, p.kind == K::PeerIdentification, "peer_identification", p.address)) return;
      if (rooms_of(*s).size(s->room) >= cfg_.rooms_max_users) {
        kick_full(s);
        return;
      }
      send_challenge(s, rooms_of(*s).find_address(s->address) != nullptr ||
                            (!s->scene && env_.room_member_elsewhere(s->address)));
      return;
    case Stage::ChallengeSent:
      expect_signed(s, p.kind == K::SignedChallenge, "signed_challenge_for_server",
                    std::move(p.auth_chain_json));
      return;
    case Stage::Completed:
      if (p.kind == K::PeerUpdate) {
        relay(s, p);
      } else {
        ++rc_.messages_ignored;
      }
      return;
    case Stage::Verifying:
    case Stage::Closed:
      return;
  }
}

void Hub::relay(const SessionPtr& s, const codec::WsPacket& p) {
  ++rc_.updates_received;
  if ((cfg_.rooms_sender_max_msgs_per_s > 0 || cfg_.rooms_sender_max_bytes_per_s > 0) &&
      !s->sent.take(env_.unix_ms(), cfg_.rooms_sender_max_msgs_per_s,
                    static_cast<double>(cfg_.rooms_sender_max_bytes_per_s), p.body.size())) {
    if (p.unreliable) {
      ++rc_.rate_dropped;
    } else {
      ++rc_.closed_rate;
      close_session(s, 4009, "rate limit: sender over its token bucket");
    }
    return;
  }
  tap(s->scene, s->room, s->address, p.body, p.unreliable);
  // One encoding per update, shared by every receiver.
  broadcast(rooms_of(*s), s->room, s.get(),
            binary(codec::encode_ws_peer_update(s->alias, p.body, p.unreliable)), p.unreliable);
}

void Hub::admit_room(const SessionPtr& s, const std::string& owner) {
  auto& rooms = rooms_of(*s);
  if (barred(s->scene, s->room, owner)) {
    ++rc_.refused_barred;
    s->link->send(binary(codec::encode_ws_peer_kicked(kBarred)));
    close_session(s, 4005, kBarred);
    return;
  }
  std::string old_room;
  const auto* old = rooms.find_address(owner, &old_room);
  size_t occupancy = rooms.size(s->room) - (old && old_room == s->room ? 1 : 0);
  if (occupancy >= cfg_.rooms_max_users) {
    kick_full(s);
    return;
  }
  if (old) replace_member(old->handle);
  std::vector<std::pair<uint32_t, std::string>> identities;
  for (const auto& m : rooms.members(s->room)) identities.emplace_back(m.alias, m.address);
  const auto& injectors = injectors_of(s->scene);
  if (auto inj = injectors.find(s->room); inj != injectors.end()) {
    for (const auto& i : inj->second) identities.emplace_back(i.alias, i.identity);
  }
  rooms.join(s->room, {s, s->alias, owner}, cfg_.rooms_max_users);
  s->in_room = true;
  if (!s->scene) env_.room_joined(owner, s->alias);  // the island-room directory
  complete(s);
  s->link->send(binary(codec::encode_ws_welcome(s->alias, identities)));
  broadcast(rooms, s->room, s.get(), binary(codec::encode_ws_peer_join(s->alias, owner)), false);
}

namespace {
std::string bar_key(bool scene, const std::string& room) {
  return (scene ? "s:" : "i:") + room;
}
}  // namespace

bool Hub::barred(bool scene, const std::string& room, const std::string& address) {
  int64_t now = env_.unix_ms();
  for (const std::string& key : {bar_key(scene, room), bar_key(scene, "")}) {
    auto it = barred_.find(key);
    if (it == barred_.end()) continue;
    auto a = it->second.find(address);
    if (a == it->second.end()) continue;
    if (a->second > now) return true;
    it->second.erase(a);
    if (it->second.empty()) barred_.erase(it);
  }
  return false;
}

void Hub::kick_room_member(bool scene, const std::string& room, const std::string& address,
                           const std::string& reason, int64_t bar_ms) {
  if (bar_ms > 0) barred_[bar_key(scene, room)][address] = env_.unix_ms() + bar_ms;
  auto& rooms = scene ? scene_rooms_ : rooms_;
  std::string where;
  const auto* m = rooms.find_address(address, &where);
  if (!m || (!room.empty() && where != room)) return;
  SessionPtr s = m->handle;
  ++rc_.kicked_by_server;
  s->link->send(binary(codec::encode_ws_peer_kicked(reason)));
  close_session(s, 4005, reason);  // leaves its room, broadcasts peer_leave
}

void Hub::unbar_room_member(bool scene, const std::string& room, const std::string& address) {
  auto it = barred_.find(bar_key(scene, room));
  if (it == barred_.end()) return;
  it->second.erase(address);
  if (it->second.empty()) barred_.erase(it);
}

std::string Hub::scene_room_of(const std::string& address) const {
  std::string room;
  return scene_rooms_.find_address(address, &room) != nullptr ? room : std::string();
}

std::vector<std::string> Hub::room_members(bool scene, const std::string& room) const {
  std::vector<std::string> out;
  for (const auto& m : (scene ? scene_rooms_ : rooms_).members(room)) out.push_back(m.address);
  return out;
}

void Hub::replace_member(SessionPtr prev) {
  ++rc_.kicked_duplicate;
  prev->link->send(binary(codec::encode_ws_peer_kicked(kReplacedRoom)));
  close_session(prev, 4006, kReplacedRoom);  // leaves its room, broadcasts peer_leave
}

void Hub::kick_room_member(const std::string& address, uint32_t alias) {
  const auto* m = rooms_.find_address(address);
  if (m && m->alias == alias) replace_member(m->handle);
}

// Sends one shared frame to every member of room except `except`. Receivers
// over the hard limit are closed after the loop (closing one broadcasts its
// peer_leave, which must not mutate the member list being iterated).
void Hub::broadcast(RoomRegistry<SessionPtr>& rooms, const std::string& room, const Session* except,
                    const FramePtr& frame, bool unreliable) {
  std::vector<SessionPtr> slow;
  size_t n = frame->size();
  for (const auto& m : rooms.members(room)) {
    const SessionPtr& r = m.handle;
    if (r.get() == except || r->stage == Stage::Closed) continue;
    switch (send_decision(r->link->buffered_amount(), n, unreliable, cfg_.rooms_soft_limit_bytes,
                          cfg_.rooms_hard_limit_bytes)) {
      case SendDecision::Send:
        r->link->send(frame);
        ++rc_.updates_delivered;
        break;
      case SendDecision::Drop:
        ++rc_.unreliable_dropped;
        break;
      case SendDecision::CloseSlow:
        slow.push_back(r);
        break;
    }
  }
  for (auto& r : slow) {
    ++rc_.closed_slow;
    close_session(r, 4008,
                  "receiver too slow: send queue over " +
                      std::to_string(cfg_.rooms_hard_limit_bytes) + " bytes");
  }
}

}  // namespace dclcomms::ws
