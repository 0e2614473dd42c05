// The shared WebSocket/HTTP core and the session state machines: connector,
// RFC-5 rooms, and bus (the connector's handshake code path with Kind::Bus,
// then text frames). Design notes live in docs/ws.md; the rules are
// archipelago.md section 1, transports.md section 1 and control-plane.md
// section 4.
//
// Locking: every socket handler, timer and posted task takes mu_ (the state
// lock) for its whole body; ev_mu_ (the event queue) is a leaf taken under or
// without mu_; websocketpp's per-connection locks are only taken inside
// con->send()/close(), i.e. after mu_. websocketpp never calls our handlers
// from inside send()/close() (their effects complete asynchronously), so the
// order mu_ -> ev_mu_ / websocketpp locks is the only one.

#include "dclcomms/ws/server.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <websocketpp/config/asio_no_tls.hpp>
#include <websocketpp/server.hpp>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/error.hpp"
#include "dclcomms/ws/limits.hpp"
#include "dclcomms/ws/room_registry.hpp"
#include "worker_pool.hpp"

namespace dclcomms::ws {

namespace {

using Endpoint = websocketpp::server<websocketpp::config::asio>;
using ConnPtr = Endpoint::connection_ptr;
using Hdl = websocketpp::connection_hdl;
using Message = websocketpp::config::asio::message_type;
using MessagePtr = Endpoint::message_ptr;
using Opcode = websocketpp::frame::opcode::value;

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

// A ready-to-write frame: header and payload built once, flagged prepared so
// websocketpp queues this very object (no copy, no re-framing) on every
// connection it is sent to. Server frames are never masked, so one buffer is
// valid for every receiver. Binary unless opcode says text.
MessagePtr make_frame(std::string payload, Opcode opcode = websocketpp::frame::opcode::binary) {
  auto msg = std::make_shared<Message>(Message::con_msg_man_ptr{}, opcode, 0);
  msg->set_header(frame_header(static_cast<uint8_t>(opcode), payload.size()));
  msg->get_raw_payload() = std::move(payload);
  msg->set_prepared(true);
  return msg;
}

// Bus sessions share the connector's handshake (Start .. Verifying); they
// differ once Completed.
enum class Kind { Connector, Room, Bus };
enum class Stage { Start, ChallengeSent, Verifying, Completed, Closed };

// An inbound frame queued while its session's auth chain is verified.
struct Frame {
  Opcode opcode = websocketpp::frame::opcode::binary;
  std::string data;
};

struct Session {
  Kind kind = Kind::Connector;
  ConnPtr con;
  Stage stage = Stage::Start;
  std::unique_ptr<asio::steady_timer> timer;
  uint64_t timer_gen = 0;
  int64_t last_rx_ms = 0;  // last frame or pong (idle sweep)
  std::string address;     // claimed, lowercase
  std::string challenge;   // single use: cleared when submitted
  std::deque<Frame> pending;
  // rooms
  std::string room;
  uint32_t alias = 0;
  std::optional<std::string> token_sub;
  bool in_room = false;
  TokenBucket sent;  // sender token bucket (rooms_sender_max_*)
  // connector and bus
  bool registered = false;  // the entry of its kind's registry
  RateWindow heartbeats;    // connector
  SlidingRateWindow bus_frames;
};
using SessionPtr = std::shared_ptr<Session>;

// Counter names: exported by stats() and as dcl_ws_* metrics (docs/ws.md).
// clang-format off
#define DCLCOMMS_CONNECTOR_COUNTERS(X) \
  X(connections)                       \
  X(welcomed)                          \
  X(auth_failed)                       \
  X(deny_listed)                       \
  X(kicked_duplicate)                  \
  X(kicked_by_server)                  \
  X(closed_protocol)                   \
  X(closed_decode)                     \
  X(closed_timeout)                    \
  X(closed_invalid_address)            \
  X(closed_slow)                       \
  X(closed_frame_too_big)              \
  X(closed_idle)                       \
  X(heartbeats_accepted)               \
  X(heartbeats_dropped_no_position)    \
  X(heartbeats_dropped_invalid)        \
  X(heartbeats_dropped_rate)           \
  X(heartbeats_dropped_backlog)        \
  X(messages_ignored)                  \
  X(messages_sent)                     \
  X(auth_verify_us_total)

#define DCLCOMMS_ROOM_COUNTERS(X) \
  X(connections)                  \
  X(welcomed)                     \
  X(auth_failed)                  \
  X(token_rejected)               \
  X(invalid_room_id)              \
  X(kicked_full)                  \
  X(kicked_duplicate)             \
  X(closed_protocol)              \
  X(closed_decode)                \
  X(closed_timeout)               \
  X(closed_invalid_address)       \
  X(closed_slow)                  \
  X(closed_frame_too_big)         \
  X(closed_idle)                  \
  X(updates_received)             \
  X(updates_delivered)            \
  X(unreliable_dropped)           \
  X(rate_dropped)                 \
  X(closed_rate)                  \
  X(messages_ignored)

#define DCLCOMMS_BUS_COUNTERS(X) \
  X(connections)                 \
  X(welcomed)                    \
  X(auth_failed)                 \
  X(deny_listed)                 \
  X(kicked_duplicate)            \
  X(closed_protocol)             \
  X(closed_decode)               \
  X(closed_timeout)              \
  X(closed_invalid_address)      \
  X(closed_slow)                 \
  X(closed_frame_too_big)        \
  X(closed_idle)                 \
  X(closed_rate)                 \
  X(closed_by_server)            \
  X(frames_received)             \
  X(frames_sent)                 \
  X(auth_verify_us_total)
// clang-format on

#define DCLCOMMS_FIELD(name) uint64_t name = 0;
#define DCLCOMMS_LIST(name) out.emplace_back(#name, c.name);

struct ConnectorCounters {
  DCLCOMMS_CONNECTOR_COUNTERS(DCLCOMMS_FIELD)
};
struct RoomCounters {
  DCLCOMMS_ROOM_COUNTERS(DCLCOMMS_FIELD)
};
struct BusCounters {
  DCLCOMMS_BUS_COUNTERS(DCLCOMMS_FIELD)
};

constexpr const char* kReplacedRoom =
    "Already connected: a new session for this address replaced this one";
constexpr const char* kReplacedConnector =
    "session replaced: a new session for this address connected";
constexpr const char* kReplacedBus =
    "session replaced: a new bus session for this address connected";
constexpr const char* kRoomFull = "This world is full. Try again later.";

}  // namespace

class Server::Impl {
 public:
  explicit Impl(Config cfg) : cfg_(std::move(cfg)) {
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

  ~Impl() {
    stop();
    if (efd_ >= 0) ::close(efd_);
  }

  uint16_t start() {
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

  void stop() {
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

  uint16_t port() const noexcept { return port_; }
  int event_fd() const noexcept { return efd_; }

  std::vector<Event> poll(size_t max_events) {
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

  void respond(uint64_t id, int status, std::vector<std::pair<std::string, std::string>> headers,
               std::string body) {
    post([this, id, status, headers = std::move(headers), body = std::move(body)]() mutable {
      auto it = http_.find(id);
      if (it == http_.end()) return;
      answer(it->second, status, headers, body);
      http_.erase(it);
    });
  }

  void send_connector(const std::string& address, std::string payload) {
    post([this, address, payload = std::move(payload)]() mutable {
      auto it = connector_reg_.find(address);
      if (it == connector_reg_.end()) return;
      SessionPtr s = it->second;  // a copy: closing it erases the registry entry
      if (deliver(s, make_frame(std::move(payload)))) ++cc_.messages_sent;
    });
  }

  void send_bus(const std::string& address, std::string text) {
    post([this, address, text = std::move(text)]() mutable {
      auto it = bus_reg_.find(address);
      if (it == bus_reg_.end()) return;
      SessionPtr s = it->second;  // a copy: closing it erases the registry entry
      if (deliver(s, make_frame(std::move(text), websocketpp::frame::opcode::text))) {
        ++bc_.frames_sent;
      }
    });
  }

  void close_bus(const std::string& address, int code, const std::string& reason) {
    post([this, address, code, reason] {
      auto it = bus_reg_.find(address);
      if (it == bus_reg_.end()) return;
      SessionPtr s = it->second;  // a copy: closing it erases the registry entry
      ++bc_.closed_by_server;
      close_session(s, code, reason);
    });
  }

  void kick(const std::string& address, int code, const std::string& reason) {
    post([this, address, code, reason] {
      auto it = connector_reg_.find(address);
      if (it == connector_reg_.end()) return;
      SessionPtr s = it->second;
      ++cc_.kicked_by_server;
      if (code == 4005 || code == 4006) send_raw(s, make_frame(codec::encode_server_kicked()));
      close_session(s, code, reason);
    });
  }

  void set_deny_list(const std::vector<std::string>& addresses) {
    std::unordered_set<std::string> next;
    for (const auto& a : addresses) next.insert(to_lower_ascii(a));
    std::lock_guard<std::mutex> lock(mu_);
    deny_ = std::move(next);
  }

  Stats stats() const {
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
  }

 private:
  struct PendingHttp {
    ConnPtr con;
    std::unique_ptr<asio::steady_timer> timer;
  };

  // ---- plumbing --------------------------------------------------------------

  void run_io() {
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

  template <class F>
  void post(F&& f) {
    if (!started_.load() || stopped_.load()) return;
    asio::post(ep_.get_io_service(), [this, f = std::forward<F>(f)]() mutable {
      std::lock_guard<std::mutex> lock(mu_);
      f();
    });
  }

  void push_event(Event ev) {
    std::lock_guard<std::mutex> lock(ev_mu_);
    bool was_empty = events_.empty();
    events_.push_back(std::move(ev));
    if (was_empty) signal();
  }

  void signal() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(efd_, &one, sizeof one);
  }

  SessionPtr find(Hdl h) {
    auto it = sessions_.find(h.lock().get());
    return it == sessions_.end() ? nullptr : it->second;
  }

  static std::pair<std::string, std::string> split_resource(const std::string& resource) {
    auto q = resource.find('?');
    if (q == std::string::npos) return {resource, ""};
    return {resource.substr(0, q), resource.substr(q + 1)};
  }

  bool is_connector_path(const std::string& path) const {
    return cfg_.connector && (path == "/ws" || path == "/archipelago/ws");
  }
  bool is_room_path(const std::string& path) const {
    return cfg_.rooms && path.rfind("/rooms/", 0) == 0;
  }
  bool is_bus_path(const std::string& path) const { return cfg_.bus && path == "/bus"; }

  // Runs f on the counters of s's kind (f touches a field every kind has).
  template <class F>
  void count(const SessionPtr& s, F f) {
    switch (s->kind) {
      case Kind::Connector:
        f(cc_);
        return;
      case Kind::Room:
        f(rc_);
        return;
      case Kind::Bus:
        f(bc_);
        return;
    }
  }
  // The same for the connector handshake code path: connector or bus.
  template <class F>
  void count_connector_or_bus(const SessionPtr& s, F f) {
    if (s->kind == Kind::Bus) {
      f(bc_);
    } else {
      f(cc_);
    }
  }
  // The address registry of a connector or bus session.
  std::unordered_map<std::string, SessionPtr>& registry(const Session& s) {
    return s.kind == Kind::Bus ? bus_reg_ : connector_reg_;
  }

  void answer(PendingHttp& p, int status, const std::vector<std::pair<std::string, std::string>>& h,
              const std::string& body) {
    if (p.timer) p.timer->cancel();
    p.con->set_status(static_cast<websocketpp::http::status_code::value>(status));
    for (const auto& [k, v] : h) p.con->replace_header(k, v);
    p.con->set_body(body);
    websocketpp::lib::error_code ec;
    p.con->send_http_response(ec);
  }

  // Every sixth of the idle timeout: ping sessions silent for a third of it,
  // close those silent for all of it (dead TCP peers otherwise hold their
  // registry entry forever).
  void schedule_idle_sweep() {
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

  // ---- websocketpp handlers ---------------------------------------------------

  bool on_validate(Hdl h) {
    ConnPtr con = ep_.get_con_from_hdl(h);
    auto [path, query] = split_resource(con->get_resource());
    // The processor exists here and reads no frame before the upgrade
    // completes, so each session gets its kind's frame limit from the start.
    if (is_connector_path(path) || is_room_path(path)) {
      con->set_max_message_size(cfg_.max_frame_bytes);
      return true;
    }
    if (is_bus_path(path)) {
      con->set_max_message_size(cfg_.bus_max_frame_bytes);
      return true;
    }
    con->set_status(websocketpp::http::status_code::not_found);
    con->replace_header("Access-Control-Allow-Origin", "*");
    con->replace_header("Content-Type", "application/json");
    con->set_body(R"({"error":"Not Found"})");
    return false;
  }

  void on_http(Hdl h) {
    ConnPtr con = ep_.get_con_from_hdl(h);
    auto [path, query] = split_resource(con->get_resource());
    con->replace_header("Access-Control-Allow-Origin", "*");
    // websocketpp closes the socket after every HTTP response (no keep-alive):
    // say so, or clients reuse a dead connection.
    con->replace_header("Connection", "close");
    if (path == "/health/live") {
      con->set_status(websocketpp::http::status_code::ok);
      con->replace_header("Content-Type", "text/plain");
      con->set_body("alive");
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_posted_) {
      con->set_status(websocketpp::http::status_code::service_unavailable);
      con->set_body(R"({"error":"Service Unavailable"})");
      return;
    }
    con->defer_http_response();
    uint64_t id = next_http_id_++;
    HttpRequest req;
    req.request_id = id;
    req.method = con->get_request().get_method();
    req.path = path;
    req.query = query;
    for (const auto& [k, v] : con->get_request().get_headers()) req.headers.emplace_back(k, v);
    req.body = con->get_request_body();
    PendingHttp p{con, std::make_unique<asio::steady_timer>(ep_.get_io_service())};
    p.timer->expires_after(std::chrono::milliseconds(cfg_.http_timeout_ms));
    p.timer->async_wait([this, id](const asio::error_code& ec) {
      if (ec) return;
      std::lock_guard<std::mutex> lock(mu_);
      auto it = http_.find(id);
      if (it == http_.end()) return;
      answer(it->second, 503, {}, R"({"error":"Service Unavailable"})");
      http_.erase(it);
    });
    http_.emplace(id, std::move(p));
    push_event(std::move(req));
  }

  void on_open(Hdl h) {
    ConnPtr con = ep_.get_con_from_hdl(h);
    auto [path, query] = split_resource(con->get_resource());
    std::lock_guard<std::mutex> lock(mu_);
    auto s = std::make_shared<Session>();
    s->con = con;
    s->timer = std::make_unique<asio::steady_timer>(ep_.get_io_service());
    s->kind = is_connector_path(path) ? Kind::Connector
              : is_bus_path(path)     ? Kind::Bus
                                      : Kind::Room;
    s->last_rx_ms = unix_ms();
    sessions_.emplace(con.get(), s);
    if (shutdown_posted_) {
      close_session(s, 1001, "server shutting down");
      return;
    }
    count(s, [](auto& c) { ++c.connections; });
    if (s->kind != Kind::Room) {
      restart_timer(s);
      return;
    }
    s->alias = next_alias();  // taken at upgrade, also by sessions that fail later
    s->room = path.substr(std::string("/rooms/").size());
    if (!is_valid_room_id(s->room)) {
      ++rc_.invalid_room_id;
      close_session(s, 4011, "invalid room id");
      return;
    }
    bool found = false;
    std::string token = query_param(query, "access_token", &found);
    if (found || cfg_.ws_room_require_token) {
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
  std::string check_token(const std::string& token, bool found, const std::string& room,
                          std::optional<std::string>* sub) const {
    if (!found || token.empty()) return "missing";
    if (!cfg_.ws_room_secret) return "no_secret_configured";
    nlohmann::ordered_json claims;
    try {
      auth::JwtCheck check;
      check.now_s = unix_ms() / 1000;
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

  void on_message(Hdl h, MessagePtr msg) {
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

  void on_closed(Hdl h) {
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

  // ---- shared session helpers ----------------------------------------------------

  void restart_timer(const SessionPtr& s) {
    uint64_t gen = ++s->timer_gen;
    int64_t ms = s->kind == Kind::Room ? cfg_.rooms_handshake_timeout_ms
                                       : cfg_.connector_handshake_timeout_ms;
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
  void detach(const SessionPtr& s) {
    if (s->kind == Kind::Room) {
      if (!s->in_room) return;
      s->in_room = false;
      if (rooms_.leave(s->room, s)) {
        broadcast(s->room, nullptr, make_frame(codec::encode_ws_peer_leave(s->alias)), false);
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

  void close_session(const SessionPtr& s, int code, const std::string& reason) {
    if (s->stage == Stage::Closed) return;
    s->stage = Stage::Closed;
    ++s->timer_gen;
    s->timer->cancel();
    s->pending.clear();
    detach(s);
    websocketpp::lib::error_code ec;
    s->con->close(static_cast<websocketpp::close::status::value>(code), close_reason(reason), ec);
  }

  void send_raw(const SessionPtr& s, const MessagePtr& frame) {
    websocketpp::lib::error_code ec = s->con->send(frame);
    (void)ec;  // invalid_state: the socket is already closing
  }

  // Queues frame to a connector or bus session, or closes it 4008 when that
  // would take its outbound queue past connector_max_queued_bytes. Returns
  // whether the frame was queued.
  bool deliver(const SessionPtr& s, const MessagePtr& frame) {
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

  // Sends one shared frame to every member of room except `except`. Receivers
  // over the hard limit are closed after the loop (closing one broadcasts its
  // peer_leave, which must not mutate the member list being iterated).
  void broadcast(const std::string& room, const Session* except, const MessagePtr& frame,
                 bool unreliable) {
    std::vector<SessionPtr> slow;
    size_t n = frame->get_payload().size();
    for (const auto& m : rooms_.members(room)) {
      const SessionPtr& r = m.handle;
      if (r.get() == except || r->stage == Stage::Closed) continue;
      switch (send_decision(r->con->get_buffered_amount(), n, unreliable,
                            cfg_.rooms_soft_limit_bytes, cfg_.rooms_hard_limit_bytes)) {
        case SendDecision::Send:
          send_raw(r, frame);
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

  void submit_verify(const SessionPtr& s, std::string chain_json) {
    s->stage = Stage::Verifying;
    std::string challenge = std::move(s->challenge);  // single use
    s->challenge.clear();
    std::weak_ptr<Session> weak = s;
    pool_->submit([this, weak, chain = std::move(chain_json), challenge = std::move(challenge)] {
      auto t0 = std::chrono::steady_clock::now();
      auth::AuthResult res = auth::verify_auth_chain(chain, challenge, unix_ms());
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - t0)
                    .count();
      post([this, weak, res = std::move(res), us] {
        SessionPtr s = weak.lock();
        if (!s || s->stage != Stage::Verifying) return;
        if (s->kind == Kind::Room) {
          on_room_verified(s, res);
        } else {
          count_connector_or_bus(
              s, [us](auto& c) { c.auth_verify_us_total += static_cast<uint64_t>(us); });
          on_connector_verified(s, res);
        }
        drain_pending(s);
      });
    });
  }

  void drain_pending(const SessionPtr& s) {
    while (!s->pending.empty() && s->stage != Stage::Closed && s->stage != Stage::Verifying) {
      Frame f = std::move(s->pending.front());
      s->pending.pop_front();
      handle_frame(s, std::move(f));
    }
  }

  void handle_frame(const SessionPtr& s, Frame f) {
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

  // ---- connector (archipelago.md 1.3); also the handshake of bus sessions ------

  void handle_connector(const SessionPtr& s, const std::string& data) {
    codec::ClientPacket p;
    try {
      p = codec::decode_client_packet(data);
    } catch (const std::exception&) {
      count_connector_or_bus(s, [](auto& c) { ++c.closed_decode; });
      close_session(s, 1007, "Cannot decode ClientPacket");
      return;
    }
    using K = codec::ClientPacket::Kind;
    switch (s->stage) {
      case Stage::Start:
        if (p.kind != K::ChallengeRequest) {
          count_connector_or_bus(s, [](auto& c) { ++c.closed_protocol; });
          close_session(s, 4000, "protocol violation: expected challenge_request");
          return;
        }
        if (!is_valid_address(p.address)) {
          count_connector_or_bus(s, [](auto& c) { ++c.closed_invalid_address; });
          close_session(s, 4002, "invalid address");
          return;
        }
        s->address = to_lower_ascii(p.address);
        if (deny_.count(s->address)) {
          count_connector_or_bus(s, [](auto& c) { ++c.deny_listed; });
          close_session(s, 4004, "deny-listed");
          return;
        }
        s->challenge = auth::random_challenge();
        send_raw(s, make_frame(codec::encode_server_challenge_response(
                        s->challenge, registry(*s).count(s->address) > 0)));
        s->stage = Stage::ChallengeSent;
        restart_timer(s);
        return;
      case Stage::ChallengeSent:
        if (p.kind != K::SignedChallenge) {
          count_connector_or_bus(s, [](auto& c) { ++c.closed_protocol; });
          close_session(s, 4000, "protocol violation: expected signed_challenge");
          return;
        }
        submit_verify(s, std::move(p.auth_chain_json));
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
  void on_connector_verified(const SessionPtr& s, const auth::AuthResult& res) {
    const bool bus = s->kind == Kind::Bus;
    if (!res.ok) {
      count_connector_or_bus(s, [](auto& c) { ++c.auth_failed; });
      close_session(s, 4003, "auth failed: " + res.code);
      return;
    }
    std::string owner = to_lower_ascii(res.signer);
    if (owner != s->address) {
      count_connector_or_bus(s, [](auto& c) { ++c.auth_failed; });
      close_session(s, 4003, "auth failed: address_mismatch");
      return;
    }
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
      count_connector_or_bus(s, [](auto& c) { ++c.kicked_duplicate; });
      // After its handshake a bus session speaks text: no kicked packet.
      if (!bus) send_raw(old, make_frame(codec::encode_server_kicked()));
      close_session(old, 4006, bus ? kReplacedBus : kReplacedConnector);
    }
    reg.emplace(owner, s);
    s->registered = true;
    s->stage = Stage::Completed;
    ++s->timer_gen;
    s->timer->cancel();
    count_connector_or_bus(s, [](auto& c) { ++c.welcomed; });
    if (bus) {
      push_event(BusOpened{owner});
    } else {
      push_event(PeerConnected{owner});
    }
    send_raw(s, make_frame(codec::encode_server_welcome(owner)));
  }

  void on_heartbeat(const SessionPtr& s, const codec::Heartbeat& hb) {
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
    int64_t now = unix_ms();
    if (!s->heartbeats.accept(now, cfg_.heartbeat_max_per_s)) {
      ++cc_.heartbeats_dropped_rate;
      return;
    }
    std::lock_guard<std::mutex> lock(ev_mu_);
    if (pending_heartbeats_ >= cfg_.max_pending_heartbeats) {
      ++cc_.heartbeats_dropped_backlog;
      return;
    }
    ++cc_.heartbeats_accepted;
    ++pending_heartbeats_;
    bool was_empty = events_.empty();
    Heartbeats* batch = events_.empty() ? nullptr : std::get_if<Heartbeats>(&events_.back());
    if (!batch) batch = &std::get<Heartbeats>(events_.emplace_back(Heartbeats{}));
    batch->addresses.push_back(s->address);
    batch->positions.insert(batch->positions.end(), {pos.x, pos.y, pos.z});
    batch->desired_rooms.push_back(hb.desired_room);
    batch->received_ms.push_back(now);
    if (was_empty) signal();
  }

  // ---- bus (control-plane.md 4): text frames after the handshake ----------------

  void handle_bus(const SessionPtr& s, Frame f) {
    if (f.opcode != websocketpp::frame::opcode::text) {
      ++bc_.closed_protocol;
      close_session(s, 1003, "bus frames must be text (JSON)");
      return;
    }
    if (!s->bus_frames.accept(steady_ms(), cfg_.bus_max_frames_per_s)) {
      ++bc_.closed_rate;
      close_session(
          s, 4009,
          "rate limit: more than " + std::to_string(cfg_.bus_max_frames_per_s) + " frames/s");
      return;
    }
    ++bc_.frames_received;
    push_event(BusFrame{s->address, std::move(f.data)});
  }

  // ---- rooms (transports.md 1.1) ---------------------------------------------

  void kick_full(const SessionPtr& s) {
    ++rc_.kicked_full;
    send_raw(s, make_frame(codec::encode_ws_peer_kicked(kRoomFull)));
    close_session(s, 4007, std::string("room full: ") + kRoomFull);
  }

  void handle_room(const SessionPtr& s, const std::string& data) {
    codec::WsPacket p;
    try {
      p = codec::decode_ws_packet(data);
    } catch (const std::exception&) {
      ++rc_.closed_decode;
      close_session(s, 1007, "Cannot decode WsPacket");
      return;
    }
    using K = codec::WsPacket::Kind;
    switch (s->stage) {
      case Stage::Start: {
        if (p.kind != K::PeerIdentification) {
          ++rc_.closed_protocol;
          close_session(s, 4000, "protocol violation: expected peer_identification");
          return;
        }
        if (!is_valid_address(p.address)) {
          ++rc_.closed_invalid_address;
          close_session(s, 4002, "invalid address");
          return;
        }
        s->address = to_lower_ascii(p.address);
        if (rooms_.size(s->room) >= cfg_.rooms_max_users) {
          kick_full(s);
          return;
        }
        s->challenge = auth::random_challenge();
        bool already = rooms_.find_address(s->address) != nullptr;
        send_raw(s, make_frame(codec::encode_ws_challenge(s->challenge, already)));
        s->stage = Stage::ChallengeSent;
        restart_timer(s);
        return;
      }
      case Stage::ChallengeSent:
        if (p.kind != K::SignedChallenge) {
          ++rc_.closed_protocol;
          close_session(s, 4000, "protocol violation: expected signed_challenge_for_server");
          return;
        }
        submit_verify(s, std::move(p.auth_chain_json));
        return;
      case Stage::Completed:
        if (p.kind == K::PeerUpdate) {
          ++rc_.updates_received;
          if ((cfg_.rooms_sender_max_msgs_per_s > 0 || cfg_.rooms_sender_max_bytes_per_s > 0) &&
              !s->sent.take(unix_ms(), cfg_.rooms_sender_max_msgs_per_s,
                            static_cast<double>(cfg_.rooms_sender_max_bytes_per_s),
                            p.body.size())) {
            if (p.unreliable) {
              ++rc_.rate_dropped;
            } else {
              ++rc_.closed_rate;
              close_session(s, 4009, "rate limit: sender over its token bucket");
            }
            return;
          }
          // One encoding per update, shared by every receiver.
          broadcast(s->room, s.get(),
                    make_frame(codec::encode_ws_peer_update(s->alias, p.body, p.unreliable)),
                    p.unreliable);
        } else {
          ++rc_.messages_ignored;
        }
        return;
      case Stage::Verifying:
      case Stage::Closed:
        return;
    }
  }

  void on_room_verified(const SessionPtr& s, const auth::AuthResult& res) {
    if (!res.ok) {
      ++rc_.auth_failed;
      close_session(s, 4003, "auth failed: " + res.code);
      return;
    }
    std::string owner = to_lower_ascii(res.signer);
    if (owner != s->address || (s->token_sub && *s->token_sub != owner)) {
      ++rc_.auth_failed;
      close_session(s, 4003, "auth failed: address_mismatch");
      return;
    }
    std::string old_room;
    const auto* old = rooms_.find_address(owner, &old_room);
    size_t occupancy = rooms_.size(s->room) - (old && old_room == s->room ? 1 : 0);
    if (occupancy >= cfg_.rooms_max_users) {
      kick_full(s);
      return;
    }
    if (old) {
      SessionPtr prev = old->handle;
      ++rc_.kicked_duplicate;
      send_raw(prev, make_frame(codec::encode_ws_peer_kicked(kReplacedRoom)));
      close_session(prev, 4006, kReplacedRoom);  // leaves its room, broadcasts peer_leave
    }
    std::vector<std::pair<uint32_t, std::string>> identities;
    for (const auto& m : rooms_.members(s->room)) identities.emplace_back(m.alias, m.address);
    rooms_.join(s->room, {s, s->alias, owner}, cfg_.rooms_max_users);
    s->in_room = true;
    s->stage = Stage::Completed;
    ++s->timer_gen;
    s->timer->cancel();
    ++rc_.welcomed;
    send_raw(s, make_frame(codec::encode_ws_welcome(s->alias, identities)));
    broadcast(s->room, s.get(), make_frame(codec::encode_ws_peer_join(s->alias, owner)), false);
  }

  Config cfg_;
  Endpoint ep_;
  std::vector<std::thread> io_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<asio::steady_timer> idle_timer_;
  std::atomic<bool> started_{false};
  std::atomic<bool> stopped_{false};
  uint16_t port_ = 0;

  mutable std::mutex mu_;  // state: everything below until ev_mu_
  bool shutdown_posted_ = false;
  std::unordered_map<const void*, SessionPtr> sessions_;  // by connection identity
  std::unordered_map<std::string, SessionPtr> connector_reg_;
  std::unordered_map<std::string, SessionPtr> bus_reg_;
  RoomRegistry<SessionPtr> rooms_;
  std::unordered_set<std::string> deny_;
  std::unordered_map<uint64_t, PendingHttp> http_;
  uint64_t next_http_id_ = 1;
  ConnectorCounters cc_;
  RoomCounters rc_;
  BusCounters bc_;

  std::mutex ev_mu_;  // leaf lock: the event queue
  std::deque<Event> events_;
  size_t pending_heartbeats_ = 0;
  int efd_ = -1;
};

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
