// The Archipelago connector (/ws, /archipelago/ws; archipelago.md 1.3): the
// challenge handshake (shared with bus sessions), the address registries,
// heartbeats into the event queue, and the sends/kicks of the embedder.

#include <cmath>

#include "hub.hpp"

namespace dclcomms::ws {

namespace {
constexpr const char* kReplacedConnector =
    "session replaced: a new session for this address connected";
constexpr const char* kReplacedBus =
    "session replaced: a new bus session for this address connected";
}  // namespace

void Hub::send_connector(const std::string& address, std::string payload) {
  auto it = connector_reg_.find(address);
  if (it == connector_reg_.end()) return;
  SessionPtr s = it->second;  // a copy: closing it erases the registry entry
  if (deliver(s, binary(std::move(payload)))) ++cc_.messages_sent;
}

void Hub::kick(const std::string& address, int code, const std::string& reason) {
  auto it = connector_reg_.find(address);
  if (it == connector_reg_.end()) return;
  SessionPtr s = it->second;
  ++cc_.kicked_by_server;
  if (code == 4005 || code == 4006) s->link->send(binary(codec::encode_server_kicked()));
  close_session(s, code, reason);
}

void Hub::handle_connector(const SessionPtr& s, const std::string& data) {
  codec::ClientPacket p;
  try {
    p = codec::decode_client_packet(data);
  } catch (const std::exception&) {
    undecodable(s, "Cannot decode ClientPacket");
    return;
  }
  using K = codec::ClientPacket::Kind;
  switch (s->stage) {
    case Stage::Start:
      if (!identify(s, p.kind == K::ChallengeRequest, "challenge_request", p.address)) return;
      if (deny_.count(s->address)) {
        count_connector_or_bus(s, [](auto& c) { ++c.deny_listed; });
        close_session(s, 4004, "deny-listed");
        return;
      }
      send_challenge(s, registry(*s).count(s->address) > 0 ||
                            (s->kind == Kind::Connector && env_.connector_elsewhere(s->address)));
      return;
    case Stage::ChallengeSent:
      expect_signed(s, p.kind == K::SignedChallenge, "signed_challenge",
                    std::move(p.auth_chain_json));
      return;
    case Stage::Completed:  // connector only: completed bus sessions never get here
      if (p.kind == K::Heartbeat) {
        on_heartbeat(s, p.heartbeat);
      } else {
        ++cc_.messages_ignored;
      }
      return;
    case Stage::Verifying:
    case Stage::Closed:
      return;
  }
}

// Connector and bus sessions: each kind has its own registry, so a
// connector and a bus session of one address never replace each other.
void Hub::admit_registered(const SessionPtr& s, const std::string& owner) {
  const bool bus = s->kind == Kind::Bus;
  if (deny_.count(owner)) {
    count_connector_or_bus(s, [](auto& c) { ++c.deny_listed; });
    close_session(s, 4004, "deny-listed");
    return;
  }
  auto& reg = registry(*s);
  auto it = reg.find(owner);
  if (it != reg.end()) {
    // Newest wins: the old socket leaves the registry (by identity) before
    // the new one is inserted, so its close never reports a disconnect.
    SessionPtr old = it->second;
    reg.erase(it);
    old->registered = false;
    forget_island(*old);
    count_connector_or_bus(s, [](auto& c) { ++c.kicked_duplicate; });
    // After its handshake a bus session speaks text: no kicked packet.
    if (!bus) old->link->send(binary(codec::encode_server_kicked()));
    close_session(old, 4006, bus ? kReplacedBus : kReplacedConnector);
  }
  reg.emplace(owner, s);
  s->registered = true;
  complete(s);
  if (bus) {
    push_event(BusOpened{owner});
  } else {
    // With connector sessions in several hubs, an older session of owner in
    // another one is replaced there (Environment::connector_registered).
    s->reg_id = ++next_reg_id_;
    env_.connector_registered(owner, s->reg_id, [&] { push_event(PeerConnected{owner}); });
  }
  s->link->send(binary(codec::encode_server_welcome(owner)));
}

void Hub::replace_connector(const std::string& address, uint64_t id) {
  auto it = connector_reg_.find(address);
  if (it == connector_reg_.end() || it->second->reg_id != id) return;  // gone meanwhile
  SessionPtr old = it->second;
  connector_reg_.erase(it);
  old->registered = false;  // its close reports no disconnect
  forget_island(*old);
  ++cc_.kicked_duplicate;
  old->link->send(binary(codec::encode_server_kicked()));
  close_session(old, 4006, kReplacedConnector);
}

void Hub::on_heartbeat(const SessionPtr& s, const codec::Heartbeat& hb) {
  if (!hb.position) {
    ++cc_.heartbeats_dropped_no_position;
    return;
  }
  const auto& pos = *hb.position;
  if (!std::isfinite(pos.x) || !std::isfinite(pos.y) || !std::isfinite(pos.z) ||
      (hb.desired_room && utf8_length(*hb.desired_room) > 64)) {
    ++cc_.heartbeats_dropped_invalid;
    return;
  }
  // Finite but outside the world (e.g. +-3.4e38): rejected like NaN, never clustered.
  const double bound = cfg_.world_bound_m;
  if (bound > 0 &&
      (std::fabs(pos.x) > bound || std::fabs(pos.y) > bound || std::fabs(pos.z) > bound)) {
    ++cc_.heartbeats_dropped_out_of_bounds;
    return;
  }
  int64_t now = env_.unix_ms();
  if (!s->heartbeats.accept(now, cfg_.heartbeat_max_per_s)) {
    ++cc_.heartbeats_dropped_rate;
    return;
  }
  // The queue the embedder polls: this hub's, or the one it forwards to (a
  // connector session in another shard than 0).
  Hub& q = sink_ != nullptr ? *sink_ : *this;
  std::lock_guard<std::mutex> lock(q.ev_mu_);
  if (q.pending_heartbeats_ >= cfg_.max_pending_heartbeats) {
    ++cc_.heartbeats_dropped_backlog;
    return;
  }
  ++cc_.heartbeats_accepted;
  ++q.pending_heartbeats_;
  bool was_empty = q.events_.empty();
  Heartbeats* batch = q.events_.empty() ? nullptr : std::get_if<Heartbeats>(&q.events_.back());
  if (!batch) batch = &std::get<Heartbeats>(q.events_.emplace_back(Heartbeats{}));
  batch->addresses.push_back(s->address);
  batch->positions.insert(batch->positions.end(), {pos.x, pos.y, pos.z});
  batch->desired_rooms.push_back(hb.desired_room);
  if (was_empty) q.env_.events_pending(true);
}

}  // namespace dclcomms::ws
