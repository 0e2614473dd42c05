// The server core: configuration check, start/stop, the event queue drained
// by poll(), the idle sweep, stats() and the public Server API. The session
// state machines live in session.cpp, connector.cpp, rooms.cpp and bus.cpp,
// HTTP in http.cpp (see server_impl.hpp).

#include <sys/eventfd.h>
#include <unistd.h>

#include "dclcomms/error.hpp"
#include "server_impl.hpp"

namespace dclcomms::ws {

namespace detail {

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

MessagePtr make_frame(std::string payload, Opcode opcode) {
  auto msg = std::make_shared<Message>(Message::con_msg_man_ptr{}, opcode, 0);
  msg->set_header(frame_header(static_cast<uint8_t>(opcode), payload.size()));
  msg->get_raw_payload() = std::move(payload);
  msg->set_prepared(true);
  return msg;
}

}  // namespace detail

using detail::unix_ms;

Server::Impl::Impl(Config cfg) : cfg_(std::move(cfg)) {
  if (cfg_.io_threads < 1 || cfg_.auth_threads < 1 || cfg_.max_frame_bytes < 1 ||
      cfg_.heartbeat_max_per_s < 1 || cfg_.max_pending_frames < 1 ||
      cfg_.rooms_soft_limit_bytes > cfg_.rooms_hard_limit_bytes ||
      cfg_.connector_handshake_timeout_ms < 1 || cfg_.rooms_handshake_timeout_ms < 1 ||
      cfg_.http_timeout_ms < 1 || cfg_.idle_timeout_ms < 0 || cfg_.bus_max_frames_per_s < 1 ||
      cfg_.bus_max_frame_bytes < 1 || cfg_.rooms_sender_max_msgs_per_s < 0) {
    throw Error(ErrorKind::Config, "invalid_parameter", "invalid WebSocket server configuration");
  }
  efd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd_ < 0) throw Error(ErrorKind::Config, "eventfd_failed", "eventfd() failed");
}

Server::Impl::~Impl() {
  stop();
  if (efd_ >= 0) ::close(efd_);
}

uint16_t Server::Impl::start() {
  if (started_.exchange(true)) {
    throw Error(ErrorKind::Config, "already_started", "the server was already started");
  }
  ep_.clear_access_channels(websocketpp::log::alevel::all);
  ep_.clear_error_channels(websocketpp::log::elevel::all);
  ep_.init_asio();
  ep_.set_reuse_addr(true);
  ep_.set_listen_backlog(4096);
  // The endpoint value is only the default of new connections: on_validate
  // sets each one's own limit before any frame of it is read.
  ep_.set_max_message_size(cfg_.bus ? std::max(cfg_.max_frame_bytes, cfg_.bus_max_frame_bytes)
                                    : cfg_.max_frame_bytes);
  ep_.set_close_handshake_timeout(2000);
  // Small frames must not wait for Nagle + delayed ACK (~40 ms per hop).
  ep_.set_tcp_post_init_handler([this](Hdl h) {
    asio::error_code ignored;  // best effort: latency, not correctness
    ep_.get_con_from_hdl(h)->get_socket().set_option(asio::ip::tcp::no_delay(true), ignored);
  });
  ep_.set_validate_handler([this](Hdl h) { return on_validate(h); });
  ep_.set_open_handler([this](Hdl h) { on_open(h); });
  ep_.set_message_handler([this](Hdl h, MessagePtr m) { on_message(h, m); });
  ep_.set_close_handler([this](Hdl h) { on_closed(h); });
  ep_.set_fail_handler([this](Hdl h) { on_closed(h); });
  ep_.set_http_handler([this](Hdl h) { on_http(h); });
  ep_.set_pong_handler([this](Hdl h, std::string) {
    std::lock_guard<std::mutex> lock(mu_);
    if (SessionPtr s = find(h)) s->last_rx_ms = unix_ms();
  });

  asio::error_code aec;
  auto addr = asio::ip::make_address(cfg_.host, aec);
  if (aec) throw Error(ErrorKind::Config, "invalid_host", "invalid host: " + cfg_.host);
  websocketpp::lib::error_code ec;
  ep_.listen(asio::ip::tcp::endpoint(addr, cfg_.port), ec);
  if (!ec) ep_.start_accept(ec);
  if (ec) {
    throw Error(
        ErrorKind::Config, "bind_failed",
        "cannot listen on " + cfg_.host + ":" + std::to_string(cfg_.port) + ": " + ec.message());
  }
  port_ = ep_.get_local_endpoint(aec).port();
  pool_ = std::make_unique<WorkerPool>(cfg_.auth_threads);
  if (cfg_.idle_timeout_ms > 0) {
    idle_timer_ = std::make_unique<asio::steady_timer>(ep_.get_io_service());
    schedule_idle_sweep();
  }
  for (int i = 0; i < cfg_.io_threads; ++i) {
    io_.emplace_back([this] { run_io(); });
  }
  return port_;
}

void Server::Impl::stop() {
  if (!started_.load() || stopped_.exchange(true)) return;
  asio::post(ep_.get_io_service(), [this] {
    std::lock_guard<std::mutex> lock(mu_);
    websocketpp::lib::error_code ec;
    ep_.stop_listening(ec);
    std::vector<SessionPtr> all;
    all.reserve(sessions_.size());
    for (auto& [_, s] : sessions_) all.push_back(s);
    for (auto& s : all) close_session(s, 1001, "server shutting down");
    for (auto& [_, p] : http_) answer(p, 503, {}, R"({"error":"Service Unavailable"})");
    http_.clear();
    if (idle_timer_) idle_timer_->cancel();
    shutdown_posted_ = true;
  });
  if (pool_) pool_->stop();
  // Give clients a moment to complete the close handshake.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(2000);
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shutdown_posted_ && sessions_.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ep_.stop();
  for (auto& t : io_) {
    if (t.joinable()) t.join();
  }
  io_.clear();
}

std::vector<Event> Server::Impl::poll(size_t max_events) {
  std::vector<Event> out;
  std::lock_guard<std::mutex> lock(ev_mu_);
  while (!events_.empty() && out.size() < max_events) {
    if (auto* hb = std::get_if<Heartbeats>(&events_.front())) {
      pending_heartbeats_ -= hb->addresses.size();
    }
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
  if (events_.empty()) {
    uint64_t v;
    [[maybe_unused]] auto n = ::read(efd_, &v, sizeof v);
  }
  return out;
}

void Server::Impl::set_deny_list(const std::vector<std::string>& addresses) {
  std::unordered_set<std::string> next;
  for (const auto& a : addresses) next.insert(to_lower_ascii(a));
  std::lock_guard<std::mutex> lock(mu_);
  deny_ = std::move(next);
}

Stats Server::Impl::stats() const {
#define DCLCOMMS_LIST(name) out.emplace_back(#name, c.name);
  std::lock_guard<std::mutex> lock(mu_);
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
    DCLCOMMS_ROOM_COUNTERS(DCLCOMMS_LIST)
  }
  st.room_details = rooms_.details();
  {
    auto& out = st.bus;
    const auto& c = bc_;
    out.emplace_back("sessions", bus_reg_.size());
    DCLCOMMS_BUS_COUNTERS(DCLCOMMS_LIST)
  }
  return st;
#undef DCLCOMMS_LIST
}

void Server::Impl::run_io() {
  for (;;) {
    try {
      ep_.run();
      return;
    } catch (const std::exception&) {
      // A handler threw (a bug, or allocation failure): keep serving the
      // other sockets rather than losing the I/O thread.
      if (ep_.stopped()) return;
    }
  }
}

void Server::Impl::push_event(Event ev) {
  std::lock_guard<std::mutex> lock(ev_mu_);
  bool was_empty = events_.empty();
  events_.push_back(std::move(ev));
  if (was_empty) signal();
}

void Server::Impl::signal() {
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(efd_, &one, sizeof one);
}

// Every sixth of the idle timeout: ping sessions silent for a third of it,
// close those silent for all of it (dead TCP peers otherwise hold their
// registry entry forever).
void Server::Impl::schedule_idle_sweep() {
  idle_timer_->expires_after(
      std::chrono::milliseconds(std::max<int64_t>(cfg_.idle_timeout_ms / 6, 10)));
  idle_timer_->async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_posted_) return;
    int64_t now = unix_ms();
    std::vector<SessionPtr> idle;
    for (auto& [_, s] : sessions_) {
      if (s->stage == Stage::Closed) continue;
      int64_t silent = now - s->last_rx_ms;
      if (silent >= cfg_.idle_timeout_ms) {
        idle.push_back(s);
      } else if (silent >= cfg_.idle_timeout_ms / 3) {
        websocketpp::lib::error_code ignored;
        s->con->ping("", ignored);
      }
    }
    for (auto& s : idle) {
      count(s, [](auto& c) { ++c.closed_idle; });
      close_session(s, 1001, "idle timeout");
    }
    schedule_idle_sweep();
  });
}

// ---- the public API ---------------------------------------------------------

Server::Server(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Server::~Server() = default;
uint16_t Server::start() {
  return impl_->start();
}
void Server::stop() {
  impl_->stop();
}
uint16_t Server::port() const noexcept {
  return impl_->port();
}
int Server::event_fd() const noexcept {
  return impl_->event_fd();
}
std::vector<Event> Server::poll(size_t max_events) {
  return impl_->poll(max_events);
}
void Server::respond(uint64_t request_id, int status,
                     std::vector<std::pair<std::string, std::string>> headers, std::string body) {
  impl_->respond(request_id, status, std::move(headers), std::move(body));
}
void Server::send_island_changed(const std::string& address, const codec::IslandChanged& msg) {
  impl_->send_connector(address, codec::encode_server_island_changed(msg));
}
void Server::send_island_changed_message(const std::string& address, std::string message) {
  impl_->send_connector(address, codec::wrap_server_island_changed(message));
}
void Server::send_join_island(const std::string& address, const std::string& island_id,
                              const std::string& peer_id) {
  impl_->send_connector(address, codec::encode_server_join_island(island_id, peer_id));
}
void Server::send_left_island(const std::string& address, const std::string& island_id,
                              const std::string& peer_id) {
  impl_->send_connector(address, codec::encode_server_left_island(island_id, peer_id));
}
namespace {
// Codes a server may send (RFC 6455 7.4): ours are 4000-4999; reserved ones
// (1005, 1006, 1015, ...) would leave the socket open.
void check_close_code(const char* method, int code) {
  bool ok = (code >= 4000 && code <= 4999) || code == 1000 || code == 1001 || code == 1008 ||
            code == 1011 || code == 1013;
  if (!ok) {
    throw Error(
        ErrorKind::Config, "invalid_parameter",
        std::string(method) + ": close code must be 4000-4999, 1000, 1001, 1008, 1011 or 1013");
  }
}
}  // namespace

void Server::kick(const std::string& address, int code, const std::string& reason) {
  check_close_code("kick", code);
  impl_->kick(address, code, reason);
}
void Server::send_bus(const std::string& address, std::string text) {
  impl_->send_bus(address, std::move(text));
}
void Server::close_bus(const std::string& address, int code, const std::string& reason) {
  check_close_code("close_bus", code);
  impl_->close_bus(address, code, reason);
}
void Server::set_deny_list(const std::vector<std::string>& addresses) {
  impl_->set_deny_list(addresses);
}
Stats Server::stats() const {
  return impl_->stats();
}

}  // namespace dclcomms::ws
