// What every session kind shares: the websocketpp connection handlers, the
// stage timer, closing (and leaving registries), sending, and the async auth
// step with the frames queued behind it (archipelago.md 1.3: frames of a
// socket are handled in order).

#include "server_impl.hpp"

namespace dclcomms::ws {

using detail::unix_ms;

Server::Impl::SessionPtr Server::Impl::find(Hdl h) {
  auto it = sessions_.find(h.lock().get());
  return it == sessions_.end() ? nullptr : it->second;
}

void Server::Impl::on_open(Hdl h) {
  ConnPtr con = ep_.get_con_from_hdl(h);
  auto [path, query] = split_resource(con->get_resource());
  std::lock_guard<std::mutex> lock(mu_);
  auto s = std::make_shared<Session>();
  s->con = con;
  s->timer = std::make_unique<asio::steady_timer>(ep_.get_io_service());
  s->kind = is_connector_path(path) ? Kind::Connector : is_bus_path(path) ? Kind::Bus : Kind::Room;
  s->last_rx_ms = unix_ms();
  sessions_.emplace(con.get(), s);
  if (shutdown_posted_) {
    close_session(s, 1001, "server shutting down");
    return;
  }
  count(s, [](auto& c) { ++c.connections; });
  if (s->kind == Kind::Room) {
    open_room(s, path, query);
    return;
  }
  restart_timer(s);
}

void Server::Impl::on_message(Hdl h, MessagePtr msg) {
  std::lock_guard<std::mutex> lock(mu_);
  SessionPtr s = find(h);
  if (!s || s->stage == Stage::Closed) return;
  s->last_rx_ms = unix_ms();
  Frame f{msg->get_opcode(), std::move(msg->get_raw_payload())};
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

void Server::Impl::on_closed(Hdl h) {
  std::lock_guard<std::mutex> lock(mu_);
  ConnPtr con = ep_.get_con_from_hdl(h);
  auto it = sessions_.find(con.get());
  if (it == sessions_.end()) return;
  SessionPtr s = it->second;
  sessions_.erase(it);
  auto local = con->get_local_close_code();
  if (local == websocketpp::close::status::message_too_big) {
    count(s, [](auto& c) { ++c.closed_frame_too_big; });
  } else if (local == websocketpp::close::status::invalid_payload && s->stage != Stage::Closed) {
    // websocketpp's own 1007: a text frame that is not UTF-8 (ours set Closed).
    count(s, [](auto& c) { ++c.closed_decode; });
  }
  if (s->stage != Stage::Closed) {
    s->stage = Stage::Closed;
    detach(s);
  }
  s->timer->cancel();
}

void Server::Impl::restart_timer(const SessionPtr& s) {
  uint64_t gen = ++s->timer_gen;
  int64_t ms =
      s->kind == Kind::Room ? cfg_.rooms_handshake_timeout_ms : cfg_.connector_handshake_timeout_ms;
  s->timer->expires_after(std::chrono::milliseconds(ms));
  std::weak_ptr<Session> weak = s;
  s->timer->async_wait([this, weak, gen](const asio::error_code& ec) {
    if (ec) return;
    std::lock_guard<std::mutex> lock(mu_);
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
void Server::Impl::detach(const SessionPtr& s) {
  if (s->kind == Kind::Room) {
    if (!s->in_room) return;
    s->in_room = false;
    if (rooms_.leave(s->room, s)) {
      broadcast(s->room, nullptr, detail::make_frame(codec::encode_ws_peer_leave(s->alias)), false);
    }
    return;
  }
  if (!s->registered) return;
  s->registered = false;
  auto& reg = registry(*s);
  auto it = reg.find(s->address);
  if (it != reg.end() && it->second == s) {
    reg.erase(it);
    if (s->kind == Kind::Bus) {
      push_event(BusClosed{s->address});
    } else {
      push_event(PeerDisconnected{s->address});
    }
  }
}

void Server::Impl::close_session(const SessionPtr& s, int code, const std::string& reason) {
  if (s->stage == Stage::Closed) return;
  s->stage = Stage::Closed;
  ++s->timer_gen;
  s->timer->cancel();
  s->pending.clear();
  detach(s);
  websocketpp::lib::error_code ec;
  s->con->close(static_cast<websocketpp::close::status::value>(code), close_reason(reason), ec);
}

void Server::Impl::send_raw(const SessionPtr& s, const MessagePtr& frame) {
  websocketpp::lib::error_code ec = s->con->send(frame);
  (void)ec;  // invalid_state: the socket is already closing
}

// Queues frame to a connector or bus session, or closes it 4008 when that
// would take its outbound queue past connector_max_queued_bytes. Returns
// whether the frame was queued.
bool Server::Impl::deliver(const SessionPtr& s, const MessagePtr& frame) {
  size_t queued = s->con->get_buffered_amount();
  if (queued + frame->get_payload().size() > cfg_.connector_max_queued_bytes) {
    count_connector_or_bus(s, [](auto& c) { ++c.closed_slow; });
    close_session(s, 4008,
                  "receiver too slow: outbound queue over " +
                      std::to_string(cfg_.connector_max_queued_bytes) + " bytes");
    return false;
  }
  send_raw(s, frame);
  return true;
}

void Server::Impl::submit_verify(const SessionPtr& s, std::string chain_json) {
  s->stage = Stage::Verifying;
  std::string challenge = std::move(s->challenge);  // single use
  s->challenge.clear();
  std::weak_ptr<Session> weak = s;
  pool_->submit([this, weak, chain = std::move(chain_json), challenge = std::move(challenge)] {
    auto t0 = std::chrono::steady_clock::now();
    auth::AuthResult res = auth::verify_auth_chain(chain, challenge, unix_ms());
    auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    post([this, weak, res = std::move(res), us] {
      SessionPtr s = weak.lock();
      if (!s || s->stage != Stage::Verifying) return;
      if (s->kind != Kind::Room) {
        count_connector_or_bus(
            s, [us](auto& c) { c.auth_verify_us_total += static_cast<uint64_t>(us); });
      }
      on_verified(s, res);
      drain_pending(s);
    });
  });
}

void Server::Impl::drain_pending(const SessionPtr& s) {
  while (!s->pending.empty() && s->stage != Stage::Closed && s->stage != Stage::Verifying) {
    Frame f = std::move(s->pending.front());
    s->pending.pop_front();
    handle_frame(s, std::move(f));
  }
}

void Server::Impl::handle_frame(const SessionPtr& s, Frame f) {
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
  }
}

// ---- the handshake every kind shares: identify, challenge, verify ----------

void Server::Impl::undecodable(const SessionPtr& s, const char* reason) {
  count(s, [](auto& c) { ++c.closed_decode; });
  close_session(s, 1007, reason);
}

bool Server::Impl::identify(const SessionPtr& s, bool expected_kind, const char* expected,
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

void Server::Impl::send_challenge(const SessionPtr& s, bool already_connected) {
  s->challenge = auth::random_challenge();
  send_raw(s, detail::make_frame(
                  s->kind == Kind::Room
                      ? codec::encode_ws_challenge(s->challenge, already_connected)
                      : codec::encode_server_challenge_response(s->challenge, already_connected)));
  s->stage = Stage::ChallengeSent;
  restart_timer(s);
}

void Server::Impl::expect_signed(const SessionPtr& s, bool expected_kind, const char* expected,
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
void Server::Impl::on_verified(const SessionPtr& s, const auth::AuthResult& res) {
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

void Server::Impl::complete(const SessionPtr& s) {
  s->stage = Stage::Completed;
  ++s->timer_gen;
  s->timer->cancel();
  count(s, [](auto& c) { ++c.welcomed; });
}

}  // namespace dclcomms::ws
