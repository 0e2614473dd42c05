#pragma once
// Private to cpp/ws: the sessions of one server and their state machines,
// with no sockets, threads or websocketpp (the network is link.hpp's
// interface), so GoogleTests and fuzz targets drive them in memory
// (testing/fake_endpoint.hpp). Hub methods are defined by area:
//   hub.cpp        sessions, stage timers, closing, sending, the handshake
//                  every kind shares, the event queue, idle sweep, stats
//   connector.cpp  connector state machine (archipelago.md 1.3); also the
//                  handshake of bus sessions
//   rooms.cpp      RFC-5 rooms (transports.md 1.1-1.3)
//   bus.cpp        /bus text frames (control-plane.md 4)
//   bridge.cpp     /bridge text frames and the room taps (control-plane.md 5)
//   feed.cpp       /map/feed: the live map's frames out (docs/map.md)
// The websocketpp endpoint around it is server_impl.hpp. Design notes:
// docs/ws.md.
//
// Threading: not thread-safe, except push_event() and poll() (the event
// queue has its own leaf lock): the endpoint serializes every other call
// (the server's state lock), including the timer, auth and close reports it
// delivers back.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "dclcomms/codec/fast.hpp"
#include "dclcomms/ws/limits.hpp"
#include "dclcomms/ws/room_registry.hpp"
#include "dclcomms/ws/server.hpp"
#include "link.hpp"

namespace dclcomms::ws {

namespace detail {

// Bus sessions share the connector's handshake (Start .. Verifying); they
// differ once Completed. Bridge sessions have no handshake here: the embedder
// authenticates their first frames and accepts (accept_bridge) or closes them.
// Feed sessions (/map/feed) have no handshake: Completed once open.
enum class Kind { Connector, Room, Bus, Bridge, Feed };
enum class Stage { Start, ChallengeSent, Verifying, Completed, Closed };

// An inbound frame queued while its session's auth chain is verified.
struct Frame {
  FrameType type = FrameType::Binary;
  std::string data;
};

struct Session {
  Kind kind = Kind::Connector;
  std::unique_ptr<Link> link;
  Stage stage = Stage::Start;
  uint64_t timer_gen = 0;  // the current stage timer; older ones are stale
  int64_t last_rx_ms = 0;  // last frame or pong (idle sweep)
  int64_t opened_ms = 0;   // steady clock at the upgrade (unauthenticated_timeout_ms)
  std::string address;     // claimed, lowercase
  std::string challenge;   // single use: cleared when submitted
  std::deque<Frame> pending;
  // rooms
  std::string room;
  uint32_t alias = 0;
  std::optional<std::string> token_sub;
  bool in_room = false;
  bool scene = false;  // a scene room (/scene-rooms/<id>): the scene registry
  TokenBucket sent;    // sender token bucket (rooms_sender_max_*)
  // connector and bus
  bool registered = false;       // the entry of its kind's registry
  uint64_t reg_id = 0;           // connector: its registration (Hub::next_reg_id_)
  RateWindow heartbeats;         // connector
  std::string island;            // connector: the island the relay last sent it ("" none)
  SlidingRateWindow bus_frames;  // bus and bridge
  // bridge
  uint64_t bridge_id = 0;
  // feed
  bool feed_synced = false;  // got the last frame (else waits for a key frame)
  int feed_skipped = 0;      // frames skipped since it last took a delta
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
  X(heartbeats_dropped_out_of_bounds)  \
  X(heartbeats_dropped_rate)           \
  X(heartbeats_dropped_backlog)        \
  X(messages_ignored)                  \
  X(messages_sent)                     \
  X(relayed_island_changed)            \
  X(relayed_join_island)               \
  X(relayed_left_island)               \
  X(relayed_not_connected)             \
  X(auth_verify_us_total)

#define DCLCOMMS_ROOM_COUNTERS(X)      \
  DCLCOMMS_HANDSHAKE_COUNTERS(X)       \
  X(token_rejected)                    \
  X(invalid_room_id)                   \
  X(kicked_full)                       \
  X(kicked_duplicate)                  \
  X(kicked_by_server)                  \
  X(refused_barred)                    \
  DCLCOMMS_CLOSE_COUNTERS(X)           \
  X(updates_received)                  \
  X(updates_delivered)                 \
  X(unreliable_dropped)                \
  X(rate_dropped)                      \
  X(closed_rate)                       \
  X(messages_ignored)                  \
  X(tapped_messages)                   \
  X(injected)                          \
  X(injected_no_room)                  \
  X(injected_too_big)

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

#define DCLCOMMS_BRIDGE_COUNTERS(X)    \
  DCLCOMMS_HANDSHAKE_COUNTERS(X)       \
  DCLCOMMS_CLOSE_COUNTERS(X)           \
  X(closed_rate)                       \
  X(closed_by_server)                  \
  X(frames_received)                   \
  X(frames_sent)

#define DCLCOMMS_FEED_COUNTERS(X)      \
  DCLCOMMS_HANDSHAKE_COUNTERS(X)       \
  X(rejected_full)                     \
  DCLCOMMS_CLOSE_COUNTERS(X)           \
  X(messages_ignored)                  \
  X(frames_sent)                       \
  X(key_frames_sent)                   \
  X(frames_skipped)                    \
  X(bytes_sent)
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
struct BridgeCounters {
  DCLCOMMS_BRIDGE_COUNTERS(DCLCOMMS_FIELD)
};
struct FeedCounters {
  DCLCOMMS_FEED_COUNTERS(DCLCOMMS_FIELD)
};

#undef DCLCOMMS_FIELD

}  // namespace detail

class Hub {
 public:
  using Kind = detail::Kind;
  using Stage = detail::Stage;
  using Session = detail::Session;
  using SessionPtr = detail::SessionPtr;

  // cfg must be valid (validate(cfg)); env outlives the hub.
  Hub(const Config& cfg, Environment& env);
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  // The session kind an upgrade to path gets (nullopt: not served, 404) and
  // its inbound frame limit (larger frames: the endpoint closes 1009). These
  // two read only the configuration: callable from any thread.
  std::optional<Kind> kind_of(const std::string& path) const;
  size_t frame_limit(Kind kind) const noexcept;

  // ---- the endpoint's reports; key identifies the connection ----------------
  // An upgraded connection to path (kind_of(path) is set) with its query.
  void open(const void* key, std::unique_ptr<Link> link, const std::string& path,
            const std::string& query);
  void message(const void* key, FrameType type, std::string data);
  void pong(const void* key);
  // The link of a connection's session (nullptr: none, or already closed).
  Link* link_of(const void* key) const;
  // The connection is gone. local_close_code: the close code the endpoint
  // sent on its own (1009 frame too big, 1007 text not UTF-8), else 0.
  void closed(const void* key, int local_close_code);
  // Every sixth of idle_timeout_ms: pings sessions silent for a third of it,
  // closes those silent for all of it 1001.
  void idle_sweep();
  // Closes every session 1001; sessions opened later are closed at once.
  void shutdown();
  bool is_shut_down() const noexcept { return shut_down_; }
  size_t session_count() const noexcept { return sessions_.size(); }

  // ---- the embedder's calls (Server's methods of the same names) -----------
  void send_connector(const std::string& address, std::string payload);
  void kick(const std::string& address, int code, const std::string& reason);
  void send_bus(const std::string& address, std::string text);
  void close_bus(const std::string& address, int code, const std::string& reason);
  void publish_feed(std::string delta, std::string key);
  bool feed_wants_key() const;
  void set_deny_list(std::unordered_set<std::string> lowercase_addresses);
  // The connector relay (server.hpp, RelayItem; relay.cpp).
  void relay(RelayItem& item);  // may move the item's prebuilt frames
  std::string connector_island_of(const std::string& address) const;
  // Bridge sessions (by the id of their BridgeOpened event).
  void accept_bridge(uint64_t id);
  void send_bridge(uint64_t id, std::string text);
  void close_bridge(uint64_t id, int code, const std::string& reason);
  // Room taps: while on, the room's updates are copied as RoomMessage events.
  // scene: the scene-room registry (/scene-rooms/), else /rooms/.
  void set_room_tap(const std::string& room, bool on, bool scene = false);
  // Broadcasts body to every member of room as a peer_update from identity's
  // alias (a member of its own: announced with peer_join on first use, listed
  // in later welcomes, until released or the room empties).
  void inject_room(const std::string& room, const std::string& identity, std::string body,
                   bool unreliable, bool scene = false);
  void release_room_identity(const std::string& room, const std::string& identity,
                             bool scene = false);
  // Another hub of this server admitted `address` to a room: this hub's
  // member of that address, if it is still session `alias`, is replaced
  // (peer_kicked, 4006), as a duplicate within one hub is.
  void kick_room_member(const std::string& address, uint32_t alias);
  void kick_room_member(bool scene, const std::string& room, const std::string& address,
                        const std::string& reason, int64_t bar_ms);
  // A connector session of address in another hub of this server completed
  // its handshake: this hub's session of that address, if it is still `id`,
  // is replaced (kicked packet, 4006) without a PeerDisconnected, as a
  // duplicate within one hub is.
  void replace_connector(const std::string& address, uint64_t id);
  void unbar_room_member(bool scene, const std::string& room, const std::string& address);
  std::vector<std::string> room_members(bool scene, const std::string& room) const;
  // The scene room (/scene-rooms/) address is a member of, "" when none.
  std::string scene_room_of(const std::string& address) const;
  Stats stats() const;

  // ---- the event queue (thread-safe) ----------------------------------------
  void push_event(Event ev);
  std::vector<Event> poll(size_t max_events);
  // Every event of this hub goes to sink's queue instead (the room shards of
  // a server feed shard 0's, the one the embedder polls). Before any event.
  void forward_events_to(Hub* sink) noexcept { sink_ = sink; }

 private:
  SessionPtr find(const void* key) const;
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
      case Kind::Bridge:
        f(brc_);
        return;
      case Kind::Feed:
        f(fc_);
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
  FramePtr binary(std::string payload) { return env_.frame(std::move(payload), FrameType::Binary); }
  void restart_timer(const SessionPtr& s);
  void detach(const SessionPtr& s);
  void close_session(const SessionPtr& s, int code, const std::string& reason);
  bool deliver(const SessionPtr& s, const FramePtr& frame);
  void submit_verify(const SessionPtr& s, std::string chain_json);
  void drain_pending(const SessionPtr& s);
  void handle_frame(const SessionPtr& s, detail::Frame f);
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
  // VERIFYING, back on the hub's thread: 4003 unless the chain is valid and
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

  // ---- relay.cpp ----
  void relay_changes(IslandChangesItem& item);
  void relay_moves(const IslandMovesItem& item);
  // One join_island/left_island frame to the sessions `to` (the island's, not
  // fresh on it) except peer.
  void relay_move(const std::vector<SessionPtr>& to, const std::string& island,
                  const std::string& peer, bool joined);
  // A connector session leaves the island the relay put it on.
  void forget_island(Session& s);

  // ---- bus.cpp ----
  void handle_bus(const SessionPtr& s, detail::Frame f);

  // ---- bridge.cpp ----
  void open_bridge(const SessionPtr& s);
  void handle_bridge(const SessionPtr& s, detail::Frame f);
  // The room's traffic, when tapped (one hash lookup when anything of that
  // registry is tapped, nothing otherwise).
  void tap(bool scene, const std::string& room, const std::string& from, std::string_view body,
           bool unreliable) {
    const auto& tapped = scene ? scene_tapped_ : tapped_;
    if (!tapped.empty() && tapped.count(room)) tap_copy(scene, room, from, body, unreliable);
  }
  void tap_copy(bool scene, const std::string& room, const std::string& from, std::string_view body,
                bool unreliable);
  // The identities injecting into a room (alias, identity), in arrival order.
  struct Injector {
    uint32_t alias = 0;
    std::string identity;
  };
  using Injectors = std::unordered_map<std::string, std::vector<Injector>>;  // by room
  Injectors& injectors_of(bool scene) { return scene ? scene_injectors_ : injectors_; }

  // ---- feed.cpp ----
  void open_feed(const SessionPtr& s);

  // ---- rooms.cpp ----
  RoomRegistry<SessionPtr>& rooms_of(const Session& s) { return s.scene ? scene_rooms_ : rooms_; }
  // Whether address is barred from room (scene or island kind) now.
  bool barred(bool scene, const std::string& room, const std::string& address);
  void open_room(const SessionPtr& s, const std::string& path, const std::string& query);
  std::string check_token(const std::string& token, bool found, const std::string& room,
                          std::optional<std::string>* sub) const;
  void kick_full(const SessionPtr& s);
  // A newer session of the same address took over: peer_kicked, 4006.
  void replace_member(SessionPtr prev);
  void handle_room(const SessionPtr& s, const std::string& data);
  void relay(const SessionPtr& s, const codec::WsPacket& p);
  // Capacity, duplicate (any room), join, welcome, peer_join.
  void admit_room(const SessionPtr& s, const std::string& owner);
  void broadcast(RoomRegistry<SessionPtr>& rooms, const std::string& room, const Session* except,
                 const FramePtr& frame, bool unreliable);

  const Config cfg_;
  Environment& env_;
  bool shut_down_ = false;
  std::unordered_map<const void*, SessionPtr> sessions_;  // by connection identity
  std::unordered_map<std::string, SessionPtr> connector_reg_;
  std::unordered_map<std::string, SessionPtr> bus_reg_;
  // The connector relay: island -> addresses of its connector sessions here;
  // address -> island it entered since the last tick end.
  std::unordered_map<std::string, std::unordered_set<std::string>> island_members_;
  std::unordered_map<std::string, std::string> fresh_;
  std::unordered_map<uint64_t, SessionPtr> bridge_reg_;
  uint64_t next_bridge_id_ = 1;
  uint64_t next_reg_id_ = 0;  // connector registrations (Environment::connector_registered)
  std::unordered_set<std::string> tapped_;        // rooms of /rooms/
  std::unordered_set<std::string> scene_tapped_;  // rooms of /scene-rooms/
  Injectors injectors_;
  Injectors scene_injectors_;
  RoomRegistry<SessionPtr> rooms_;
  std::vector<SessionPtr> feed_;  // open map pages, in arrival order
  RoomRegistry<SessionPtr> scene_rooms_;
  // (scene, room; "" = every room of that kind) -> address -> barred until (Unix ms)
  std::unordered_map<std::string, std::unordered_map<std::string, int64_t>> barred_;
  std::unordered_set<std::string> deny_;
  detail::ConnectorCounters cc_;
  detail::RoomCounters rc_;
  detail::BusCounters bc_;
  detail::BridgeCounters brc_;
  detail::FeedCounters fc_;

  Hub* sink_ = nullptr;  // forward_events_to
  std::mutex ev_mu_;     // leaf lock: the event queue
  std::deque<Event> events_;
  size_t pending_heartbeats_ = 0;
};

}  // namespace dclcomms::ws
