#pragma once
// An in-memory endpoint for the session state machines (the Hub, cpp/ws/src/
// hub.hpp): connections without sockets, clocks that move only when told,
// auth-chain checks that run when told, so tests and fuzz targets can drive
// every transition deterministically. No GoogleTest here.
//
// It behaves as the websocketpp endpoint does where the hub can tell:
//  * a close started by the hub is reported back (Hub::closed) once the
//    hub entry that started it has returned;
//  * frames above the kind's frame limit close the connection 1009 without
//    reaching the hub; sends after a close are not delivered;
//  * a connection that is not reading accumulates the bytes sent to it in
//    its buffered amount (the backpressure measure);
//  * the idle sweep runs every idle_timeout_ms / 6 (at least 10 ms).
// Single-threaded: use it from one thread.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "hub.hpp"
#include "link.hpp"

namespace dclcomms::ws::testing {

struct SentFrame {
  FrameType type = FrameType::Binary;
  std::string payload;
};

// What the client side of one connection saw; owned by the endpoint (and
// shared with the test), so it outlives the hub's session.
struct FakeConnection {
  std::string path, query;
  Hub::Kind kind = Hub::Kind::Connector;
  std::vector<SentFrame> sent;    // frames delivered to the client, in order
  std::optional<int> close_code;  // set when the server closed it
  std::string close_reason;       // as sent (truncated to 123 bytes)
  bool client_gone = false;       // the client closed or dropped it
  bool reported_closed = false;   // Hub::closed was called
  int pings = 0;
  int authenticated = 0;   // Link::authenticated() calls (the admission report)
  bool reading = true;     // false: sent bytes stay in `buffered`
  size_t buffered = 0;     // Link::buffered_amount()
  size_t undelivered = 0;  // frames sent after the close (not delivered)
  // The stage timer.
  bool timer_armed = false;
  int64_t timer_due_ms = 0;  // on the endpoint's steady clock
  std::function<void()> timer_fire;

  bool open() const { return !close_code && !client_gone; }
  // The client starts reading again: everything queued is written.
  void drain() { buffered = 0; }
};
using Conn = std::shared_ptr<FakeConnection>;

// The real wall clock, ms since the Unix epoch (FakeEndpoint's default start;
// the expiry of auth chains signed by tests against a real Server).
int64_t real_unix_ms();

class FakeEndpoint final : public Environment {
 public:
  // cfg is validated (validate() throws as Server's constructor does).
  // start_unix_ms: the wall clock at construction (default: the real one, so
  // auth chains signed now verify; expiry checks use this clock).
  explicit FakeEndpoint(const Config& cfg, std::optional<int64_t> start_unix_ms = std::nullopt);
  ~FakeEndpoint() override;
  FakeEndpoint(const FakeEndpoint&) = delete;
  FakeEndpoint& operator=(const FakeEndpoint&) = delete;

  Hub& hub() { return *hub_; }
  const Config& config() const { return cfg_; }

  // A client upgrading to resource (path?query); nullptr when the path is
  // not served (the real endpoint answers 404).
  Conn connect(const std::string& resource);
  // One frame from the client (ignored once the connection is closed).
  void receive(const Conn& c, std::string data, FrameType type = FrameType::Binary);
  void pong(const Conn& c);
  // The client closes or drops the connection.
  void disconnect(const Conn& c);
  // Moves both clocks forward by ms, firing due stage timers and idle sweeps
  // in time order.
  void advance(int64_t ms);
  // Auth-chain checks submitted and not yet run.
  size_t pending_verifications() const { return verifications_.size(); }
  // Runs them (real verify_auth_chain at the fake wall clock), in order.
  void finish_verifications();
  // Drains the event queue.
  std::vector<Event> events();
  // Whether the event queue is flagged non-empty (the eventfd's state).
  bool events_flagged() const { return events_flagged_; }
  // The embedder's calls, run as hub entries.
  void send_connector(const std::string& address, std::string payload);
  void relay(RelayItem item);
  void kick(const std::string& address, int code, const std::string& reason);
  void send_bus(const std::string& address, std::string text);
  void close_bus(const std::string& address, int code, const std::string& reason);
  void kick_room_member(bool scene, const std::string& room, const std::string& address,
                        const std::string& reason, int64_t bar_ms);
  void unbar_room_member(bool scene, const std::string& room, const std::string& address);
  void set_deny_list(const std::vector<std::string>& addresses);
  void accept_bridge(uint64_t id);
  void send_bridge(uint64_t id, std::string text);
  void close_bridge(uint64_t id, int code, const std::string& reason);
  void set_room_tap(const std::string& room, bool on, bool scene = false);
  void inject_room(const std::string& room, const std::string& identity, std::string body,
                   bool unreliable, bool scene = false);
  void release_room_identity(const std::string& room, const std::string& identity,
                             bool scene = false);
  void publish_feed(std::string delta, std::string key);
  void shutdown();
  // What another shard's join makes the server do (Hub::kick_room_member).
  void kick_room_member(const std::string& address, uint32_t alias);
  Stats stats() const { return hub_->stats(); }
  // One counter of stats() (area: "connector", "rooms", "bus", "bridge" or "feed"); throws
  // std::out_of_range for an unknown name.
  uint64_t counter(const std::string& area, const std::string& name) const;
  // Every connection made so far, in order.
  const std::vector<Conn>& connections() const { return conns_; }

  // Environment
  int64_t unix_ms() override { return unix_ms_; }
  int64_t steady_ms() override { return steady_ms_; }
  FramePtr frame(std::string payload, FrameType type) override;
  void verify(std::string chain_json, std::string challenge, VerifyDone done) override;
  void events_pending(bool pending) override { events_flagged_ = pending; }
  // The room directory reports, in order: (joined?, address, alias).
  struct RoomReport {
    bool joined;
    std::string address;
    uint32_t alias;
    bool operator==(const RoomReport& o) const {
      return joined == o.joined && address == o.address && alias == o.alias;
    }
  };
  std::vector<RoomReport> room_reports;
  // Addresses another shard holds (room_member_elsewhere answers from it).
  std::set<std::string> rooms_elsewhere;
  void room_joined(const std::string& address, uint32_t alias) override {
    room_reports.push_back({true, address, alias});
  }
  void room_left(const std::string& address, uint32_t alias) override {
    room_reports.push_back({false, address, alias});
  }
  bool room_member_elsewhere(const std::string& address) override {
    return rooms_elsewhere.count(address) > 0;
  }

 private:
  class Link;
  struct Verification {
    std::string chain, challenge;
    VerifyDone done;
  };
  // After every hub entry: reports the closes it started (websocketpp does
  // so once the close handshake ends).
  void settle();

  Config cfg_;
  std::unique_ptr<Hub> hub_;
  int64_t unix_ms_ = 0;
  int64_t steady_ms_ = 0;
  int64_t next_sweep_ms_ = 0;
  bool events_flagged_ = false;
  std::vector<Conn> conns_;
  std::deque<Verification> verifications_;
  std::deque<Conn> closing_;  // closed by the hub, not reported back yet
};

}  // namespace dclcomms::ws::testing
