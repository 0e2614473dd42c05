#pragma once
// Private to cpp/ws: the session types, the counters and Server::Impl, whose
// methods are defined by area:
//   server.cpp     start/stop, the event queue, stats, the public Server API
//   session.cpp    websocketpp handlers and what every session kind shares
//                  (stage timers, closing, sending, the async auth step)
//   connector.cpp  connector state machine (archipelago.md 1.3); also the
//                  handshake of bus sessions
//   rooms.cpp      RFC-5 rooms (transports.md 1.1-1.3)
//   bus.cpp        /bus text frames (control-plane.md 4)
//   http.cpp       plain HTTP requests and upgrade validation
// Design notes: docs/ws.md.
//
// Locking: every socket handler, timer and posted task takes mu_ (the state
// lock) for its whole body; ev_mu_ (the event queue) is a leaf taken under or
// without mu_; websocketpp's per-connection locks are only taken inside
// con->send()/close(), i.e. after mu_. websocketpp never calls our handlers
// from inside send()/close() (their effects complete asynchronously), so the
// order mu_ -> ev_mu_ / websocketpp locks is the only one.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <websocketpp/config/asio_no_tls.hpp>
#include <websocketpp/server.hpp>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/ws/limits.hpp"
#include "dclcomms/ws/room_registry.hpp"
#include "dclcomms/ws/server.hpp"
#include "worker_pool.hpp"

namespace dclcomms::ws::detail {

using Endpoint = websocketpp::server<websocketpp::config::asio>;
using ConnPtr = Endpoint::connection_ptr;
using Hdl = websocketpp::connection_hdl;
using Message = websocketpp::config::asio::message_type;
using MessagePtr = Endpoint::message_ptr;
using Opcode = websocketpp::frame::opcode::value;

int64_t unix_ms();
int64_t steady_ms();

// A ready-to-write frame: header and payload built once, flagged prepared so
// websocketpp queues this very object (no copy, no re-framing) on every
// connection it is sent to. Server frames are never masked, so one buffer is
// valid for every receiver. Binary unless opcode says text.
MessagePtr make_frame(std::string payload, Opcode opcode = websocketpp::frame::opcode::binary);

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

// Counter names: exported by stats() and as dcl_ws_* metrics (docs/ws.md), in
// this order. Every kind counts the handshake and close reasons the session
// code shares (session.cpp counts them through count()); the rest is its own.
// clang-format off
#define DCLCOMMS_HANDSHAKE_COUNTERS(X) \
  X(connections)                       \
  X(welcomed)                          \
  X(auth_failed)

#define DCLCOMMS_CLOSE_COUNTERS(X)     \
  X(closed_protocol)                   \
  X(closed_decode)                     \
  X(closed_timeout)                    \
  X(closed_invalid_address)            \
  X(closed_slow)                       \
  X(closed_frame_too_big)              \
  X(closed_idle)

#define DCLCOMMS_CONNECTOR_COUNTERS(X) \
  DCLCOMMS_HANDSHAKE_COUNTERS(X)       \
  X(deny_listed)                       \
  X(kicked_duplicate)                  \
  X(kicked_by_server)                  \
  DCLCOMMS_CLOSE_COUNTERS(X)           \
  X(heartbeats_accepted)               \
  X(heartbeats_dropped_no_position)    \
  X(heartbeats_dropped_invalid)        \
  X(heartbeats_dropped_rate)           \
  X(heartbeats_dropped_backlog)        \
  X(messages_ignored)                  \
  X(messages_sent)                     \
  X(auth_verify_us_total)

#define DCLCOMMS_ROOM_COUNTERS(X)      \
  DCLCOMMS_HANDSHAKE_COUNTERS(X)       \
  X(token_rejected)                    \
  X(invalid_room_id)                   \
  X(kicked_full)                       \
  X(kicked_duplicate)                  \
  DCLCOMMS_CLOSE_COUNTERS(X)           \
  X(updates_received)                  \
  X(updates_delivered)                 \
  X(unreliable_dropped)                \
  X(rate_dropped)                      \
  X(closed_rate)                       \
  X(messages_ignored)

#define DCLCOMMS_BUS_COUNTERS(X)       \
  DCLCOMMS_HANDSHAKE_COUNTERS(X)       \
  X(deny_listed)                       \
  X(kicked_duplicate)                  \
  DCLCOMMS_CLOSE_COUNTERS(X)           \
  X(closed_rate)                       \
  X(closed_by_server)                  \
  X(frames_received)                   \
  X(frames_sent)                       \
  X(auth_verify_us_total)
// clang-format on

#define DCLCOMMS_FIELD(name) uint64_t name = 0;

struct ConnectorCounters {
  DCLCOMMS_CONNECTOR_COUNTERS(DCLCOMMS_FIELD)
};
struct RoomCounters {
  DCLCOMMS_ROOM_COUNTERS(DCLCOMMS_FIELD)
};
struct BusCounters {
  DCLCOMMS_BUS_COUNTERS(DCLCOMMS_FIELD)
};

#undef DCLCOMMS_FIELD

}  // namespace dclcomms::ws::detail

namespace dclcomms::ws {

class Server::Impl {
 public:
  using ConnPtr = detail::ConnPtr;
  using Endpoint = detail::Endpoint;
  using Frame = detail::Frame;
  using Hdl = detail::Hdl;
  using Kind = detail::Kind;
  using MessagePtr = detail::MessagePtr;
  using Session = detail::Session;
  using SessionPtr = detail::SessionPtr;
  using Stage = detail::Stage;

  explicit Impl(Config cfg);
  ~Impl();

  // server.cpp
  uint16_t start();
  void stop();
  uint16_t port() const noexcept { return port_; }
  int event_fd() const noexcept { return efd_; }
  std::vector<Event> poll(size_t max_events);
  void set_deny_list(const std::vector<std::string>& addresses);
  Stats stats() const;
  // http.cpp
  void respond(uint64_t id, int status, std::vector<std::pair<std::string, std::string>> headers,
               std::string body);
  // connector.cpp
  void send_connector(const std::string& address, std::string payload);
  void kick(const std::string& address, int code, const std::string& reason);
  // bus.cpp
  void send_bus(const std::string& address, std::string text);
  void close_bus(const std::string& address, int code, const std::string& reason);

 private:
  struct PendingHttp {
    ConnPtr con;
    std::unique_ptr<asio::steady_timer> timer;
  };

  // ---- server.cpp: plumbing ----
  void run_io();
  template <class F>
  void post(F&& f) {
    if (!started_.load() || stopped_.load()) return;
    asio::post(ep_.get_io_service(), [this, f = std::forward<F>(f)]() mutable {
      std::lock_guard<std::mutex> lock(mu_);
      f();
    });
  }
  void push_event(Event ev);
  void signal();
  void schedule_idle_sweep();

  // ---- http.cpp ----
  static std::pair<std::string, std::string> split_resource(const std::string& resource);
  bool is_connector_path(const std::string& path) const {
    return cfg_.connector && (path == "/ws" || path == "/archipelago/ws");
  }
  bool is_room_path(const std::string& path) const {
    return cfg_.rooms && path.rfind("/rooms/", 0) == 0;
  }
  bool is_bus_path(const std::string& path) const { return cfg_.bus && path == "/bus"; }
  bool on_validate(Hdl h);
  void on_http(Hdl h);
  void answer(PendingHttp& p, int status, const std::vector<std::pair<std::string, std::string>>& h,
              const std::string& body);

  // ---- session.cpp: websocketpp handlers and shared session helpers ----
  SessionPtr find(Hdl h);
  void on_open(Hdl h);
  void on_message(Hdl h, MessagePtr msg);
  void on_closed(Hdl h);
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
  void restart_timer(const SessionPtr& s);
  void detach(const SessionPtr& s);
  void close_session(const SessionPtr& s, int code, const std::string& reason);
  void send_raw(const SessionPtr& s, const MessagePtr& frame);
  bool deliver(const SessionPtr& s, const MessagePtr& frame);
  void submit_verify(const SessionPtr& s, std::string chain_json);
  void drain_pending(const SessionPtr& s);
  void handle_frame(const SessionPtr& s, Frame f);
  // The handshake every kind shares (connector and bus: ClientPacket; rooms:
  // WsPacket). Each closes the session (and returns false) on a reject.
  void undecodable(const SessionPtr& s, const char* reason);  // 1007
  // START: the packet must be the `expected` member (else 4000) with a valid
  // address (else 4002); stores it lowercased.
  bool identify(const SessionPtr& s, bool expected_kind, const char* expected,
                const std::string& address);
  // START -> CHALLENGE_SENT: a fresh single-use challenge, the stage timer.
  void send_challenge(const SessionPtr& s, bool already_connected);
  // CHALLENGE_SENT: the signed challenge (else 4000) goes to the auth worker.
  void expect_signed(const SessionPtr& s, bool expected_kind, const char* expected,
                     std::string chain_json);
  // VERIFYING, back on the I/O thread: 4003 unless the chain is valid and
  // signed by the identified address; then the kind's admission.
  void on_verified(const SessionPtr& s, const auth::AuthResult& res);
  // Admitted: -> COMPLETED, stage timer off, counted welcomed.
  void complete(const SessionPtr& s);

  // ---- connector.cpp ----
  // The address registry of a connector or bus session.
  std::unordered_map<std::string, SessionPtr>& registry(const Session& s) {
    return s.kind == Kind::Bus ? bus_reg_ : connector_reg_;
  }
  void handle_connector(const SessionPtr& s, const std::string& data);
  // Deny list, duplicate (newest wins), registry, welcome.
  void admit_registered(const SessionPtr& s, const std::string& owner);
  void on_heartbeat(const SessionPtr& s, const codec::Heartbeat& hb);

  // ---- bus.cpp ----
  void handle_bus(const SessionPtr& s, Frame f);

  // ---- rooms.cpp ----
  void open_room(const SessionPtr& s, const std::string& path, const std::string& query);
  std::string check_token(const std::string& token, bool found, const std::string& room,
                          std::optional<std::string>* sub) const;
  void kick_full(const SessionPtr& s);
  void handle_room(const SessionPtr& s, const std::string& data);
  void relay(const SessionPtr& s, const codec::WsPacket& p);
  // Capacity, duplicate (any room), join, welcome, peer_join.
  void admit_room(const SessionPtr& s, const std::string& owner);
  void broadcast(const std::string& room, const Session* except, const MessagePtr& frame,
                 bool unreliable);

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
  detail::ConnectorCounters cc_;
  detail::RoomCounters rc_;
  detail::BusCounters bc_;

  std::mutex ev_mu_;  // leaf lock: the event queue
  std::deque<Event> events_;
  size_t pending_heartbeats_ = 0;
  int efd_ = -1;
};

}  // namespace dclcomms::ws
